"""One extraction campaign as a pure simulation (no gym imports): R rounds of the game of DESIGN.md.

Each round: defenders take their knob values; each attacker seat plays (queries through its channel, gets
answers immediately, since defenders screen and shape per request, and updates its surrogate); benign customers
send their traffic; defenders close the round; the referee scores everyone. ``Game.step`` only orchestrates:
what each seat spent comes from the ledger (:func:`~extractgym.envs.referee.spend`), accuracy and fidelity from
the referee's evaluation of each seat's surrogate snapshot.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractgym.envs.api import Budget, Client, DefenderView, PredictionAPI
from extractgym.envs.benign import OWNER as BENIGN, BenignPopulation, BenignTally
from extractgym.envs.protocols import ATTACKER, DEFENDER, AttackerSeat, DefenderBody, Knob, SeatInfo, knob_values
from extractgym.envs.referee import Referee, Score, Spend, spend, traffic

ATTACKER_OBS = ("round", "queries_left", "money_left", "accounts_left", "accounts_banned", "round_queries",
                "confidence", "entropy", "banned_this_round", "has_account")
DEFENDER_OBS = ("round", "round_queries", "accounts_opened", "banned_fraction", "utility", "active_accounts",
                "new_account_traffic", "bans_this_round", "busiest_account", "new_account_fraction")


def _squash(v: float, scale: float) -> float:
    """Map a count in [0, inf) into [0, 1)."""
    return v / (v + scale)


def _left(spent: float, cap: float | None) -> float:
    """Share of a budget still unspent (1 for an unlimited budget)."""
    return 1.0 if cap is None else (max(0.0, 1.0 - spent / cap) if cap else 0.0)


@dataclass
class StepResult:
    observations: dict[str, np.ndarray]
    rewards: dict[str, float]
    infos: dict[str, dict[str, Any]]
    done: bool


@dataclass
class Attacker:
    """An attacker seat as the game keeps it: the seat, its owner's client and budget, the referee's scores and the
    running totals of its spending (from the ledger, never from the seat)."""

    seat: AttackerSeat
    client: Client
    budget: Budget
    score: Score = field(default_factory=lambda: Score(0.0, 0.0))
    initial: Score = field(default_factory=lambda: Score(0.0, 0.0))
    total: Spend = field(default_factory=Spend)


class Game:
    """The state of one episode. Built by a scenario's factory; stepped by the envs.

    Args:
        api: the prediction API, with its defences.
        attackers: seat name -> (attacker seat, its owner's budget).
        defenders: seat name -> defender body (the same objects as ``api.defences``, in order).
        benign, referee, rounds, rng: the benign customers, the referee, the episode length and its generator.
    """

    def __init__(self, api: PredictionAPI, attackers: Mapping[str, tuple[AttackerSeat, Budget]],
                 defenders: Mapping[str, DefenderBody], benign: BenignPopulation | None, referee: Referee,
                 rounds: int, rng: np.random.Generator) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.api, self.referee, self.benign, self.rounds = api, referee, benign, rounds
        self.round = 0
        self.defenders = dict(defenders)
        seat_rngs = rng.spawn(len(attackers) + len(defenders))
        self.attackers: dict[str, Attacker] = {}
        for (name, (seat, budget)), seat_rng in zip(attackers.items(), seat_rngs, strict=False):
            api.register_owner(name, budget)
            client = Client(api, name)
            seat.bind(client, seat_rng)
            score = referee.score(seat.snapshot(), seat.target)
            self.attackers[name] = Attacker(seat, client, budget, score, score)
        view = DefenderView(api)
        for body, seat_rng in zip(self.defenders.values(), seat_rngs[len(attackers):], strict=True):
            body.bind(view, seat_rng)
        self.benign_round = BenignTally()
        self.benign_banned = 0
        # the referee audits defended outputs at fixed points only (here and once per round), so reading
        # figures between rounds never draws from a random defence's generator
        self._defended = self._audit_defended_accuracy()
        self.wall_seconds = 0.0
        self.last_infos: dict[str, dict[str, Any]] = {}

    @property
    def seats(self) -> dict[str, SeatInfo]:
        return {**{s: SeatInfo(ATTACKER, a.seat.knobs) for s, a in self.attackers.items()},
                **{s: SeatInfo(DEFENDER, d.knobs) for s, d in self.defenders.items()}}

    # -- the round -----------------------------------------------------------------------------
    def step(self, actions: Mapping[str, Any]) -> StepResult:
        if self.round >= self.rounds:
            raise RuntimeError("the episode is over: reset the env")
        seats = self.seats
        missing = [s for s in seats if s not in actions]
        if missing:
            raise ValueError(f"no action for seat(s) {', '.join(missing)}")
        unknown = [s for s in actions if s not in seats]
        if unknown:
            raise ValueError(f"actions for unknown seat(s) {', '.join(map(str, unknown))}; seats: {', '.join(seats)}")
        settings = {}
        for s, info in seats.items():
            try:
                settings[s] = knob_values(info.knobs, actions[s])
            except (TypeError, ValueError) as e:
                raise ValueError(f"bad action for {s}: {e}") from None
        t0 = time.perf_counter()
        self.api.start_round(self.round)
        start = len(self.api.ledger)
        self.api.set_defence_knobs([settings[s] for s in self.defenders])
        stats_before = {s: (a.client.stats.n, a.client.stats.confidence, a.client.stats.entropy)
                        for s, a in self.attackers.items()}
        for name, a in self.attackers.items():
            a.seat.play_round(settings[name], self.round)
        self.benign_round = self.benign.play_round() if self.benign else BenignTally()
        for name, d in self.defenders.items():
            d.end_round(self.round, settings[name])

        self.round += 1
        self._defended = self._audit_defended_accuracy()  # once per round: random defences draw here
        entries = self.api.ledger.since(start)
        rewards: dict[str, float] = {}
        infos: dict[str, dict[str, Any]] = {}
        obs: dict[str, np.ndarray] = {}
        gains = []
        for name, a in self.attackers.items():
            spent = spend(entries, name)
            a.total = a.total + spent
            new = self.referee.score(a.seat.snapshot(), a.seat.target)
            rewards[name] = self.referee.attacker_reward(a.score, new, spent, a.budget)
            gains.append(new.accuracy - a.score.accuracy)
            a.score = new
            n0, c0, e0 = stats_before[name]
            st = a.client.stats
            obs[name] = self._attacker_obs(a, spent, st.n - n0, st.confidence - c0, st.entropy - e0)
            infos[name] = self._attacker_info(name, a)
        benign_banned = spend(entries, BENIGN).bans if self.benign else 0
        self.benign_banned += benign_banned
        utility = self.benign_round.utility
        round_traffic = traffic(entries)
        for name in self.defenders:
            rewards[name] = self.referee.defender_reward(float(np.mean(gains)) if gains else 0.0, utility,
                                                         benign_banned, self.benign.accounts if self.benign else 0)
            obs[name] = self._defender_obs(round_traffic, utility)
            infos[name] = self._defender_info()
        self.wall_seconds += time.perf_counter() - t0
        for info in infos.values():
            info["round"] = self.round
        self.last_infos = infos
        return StepResult(obs, rewards, infos, done=self.round >= self.rounds)

    # -- observations --------------------------------------------------------------------------
    def initial_observations(self) -> dict[str, np.ndarray]:
        obs = {s: self._attacker_obs(a, Spend(), 0, 0.0, 0.0) for s, a in self.attackers.items()}
        obs.update({s: self._defender_obs(traffic(()), 1.0) for s in self.defenders})
        return obs

    def _attacker_obs(self, a: Attacker, spent: Spend, n: int, conf: float, ent: float) -> np.ndarray:
        b, t = a.budget, a.total
        v = [self.round / self.rounds, _left(t.queries, b.queries), _left(t.money, b.money),
             _left(t.accounts, b.accounts), _squash(t.bans, 1.0),
             min(1.0, spent.queries / b.queries) if b.queries else _squash(spent.queries, 100.0),
             conf / n if n else 0.0, ent / n if n else 0.0, float(spent.bans > 0), float(t.accounts > t.bans)]
        return np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)

    def _defender_obs(self, tr: Any, utility: float) -> np.ndarray:
        accounts = self.api.accounts.values()
        total = len(self.api.accounts)
        banned = sum(acc.banned for acc in accounts)
        v = [self.round / self.rounds, _squash(tr.queries, 1000.0), _squash(tr.opened, 10.0),
             banned / total if total else 0.0, utility, _squash(total - banned, 10.0),
             tr.fresh_queries / tr.queries if tr.queries else 0.0, _squash(tr.bans, 1.0),
             _squash(tr.busiest, 100.0), tr.opened / total if total else 0.0]
        return np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)

    # -- figures -------------------------------------------------------------------------------
    def _attacker_info(self, name: str, a: Attacker, total: Spend | None = None) -> dict[str, Any]:
        t = a.total if total is None else total
        info = {"accuracy": a.score.accuracy, "fidelity": a.score.fidelity, "queries": t.queries,
                "cost": round(t.money, 10), "accounts_created": t.accounts, "accounts_banned": t.bans}
        if a.seat.tactical:  # the seat's own tally of its tactics (queries withheld never reach the API)
            info["tactics"] = a.seat.stats()
        return info

    def _defender_info(self) -> dict[str, Any]:
        b = self.benign
        return {"defended_accuracy": self.defended_accuracy(), "utility": self.utility(),
                "benign_accounts": b.accounts if b else 0, "benign_accounts_banned": self.benign_banned,
                "false_positive_rate": (self.benign_banned / b.accounts) if b and b.accounts else 0.0}

    def defended_accuracy(self) -> float:
        """The referee's audit of defended outputs on the test sets, as of the last round played."""
        return self._defended

    def _audit_defended_accuracy(self) -> float:
        return float(np.mean([self.referee.defended_accuracy(s) for s in self.referee.test_sets]))

    def _benign_accuracy(self) -> dict[str, float | None]:
        """Accuracy of defended and undefended answers on benign traffic with known labels (None if none)."""
        t = self.benign.total if self.benign else BenignTally()
        return {"benign_defended_accuracy": t.correct_defended / t.labelled if t.labelled else None,
                "benign_undefended_accuracy": t.correct_undefended / t.labelled if t.labelled else None}

    def utility(self) -> float:
        return self.benign.total.utility if self.benign else 1.0

    def summary(self) -> dict[str, Any]:
        """The figures of ``summary.json`` (DESIGN.md): totals over attackers (from the whole ledger), means of rates."""
        ledger = tuple(self.api.ledger)
        infos = {s: self._attacker_info(s, a, spend(ledger, s)) for s, a in self.attackers.items()}
        d = self._defender_info()
        services = list(self.referee.test_sets)
        seats = list(self.attackers.values())
        per = list(infos.values())
        summary: dict[str, Any] = {
            "rounds": self.round,
            "victim_accuracy": float(np.mean([self.referee.victim_accuracy(s) for s in services])),
            "defended_accuracy": d["defended_accuracy"],
            "attacker_accuracy": float(np.mean([i["accuracy"] for i in per])) if per else math.nan,
            "fidelity": float(np.mean([i["fidelity"] for i in per])) if per else math.nan,
            "queries": int(sum(i["queries"] for i in per)),
            "cost": round(float(sum(i["cost"] for i in per)), 10),
            "accounts_created": int(sum(i["accounts_created"] for i in per)),
            "accounts_banned": int(sum(i["accounts_banned"] for i in per)),
            "benign_accounts": d["benign_accounts"],
            "benign_accounts_banned": d["benign_accounts_banned"],
            "false_positive_rate": d["false_positive_rate"],
            "utility": d["utility"],
            **self._benign_accuracy(),
            "initial_attacker_accuracy": float(np.mean([a.initial.accuracy for a in seats])) if seats else math.nan,
            "ledger_entries": len(self.api.ledger),
            "ledger_digest": self.api.ledger.digest(),
            "attackers": infos,
        }
        if self.benign:  # per benign data source (seed 003 Table IX), and queries defences refused to answer
            summary["false_positive_rate_by_source"] = self.benign.false_positive_rates()
            summary["benign_rejected"] = self.benign.total.rejected
        watermarks = {s: d for s, d in self.defenders.items() if hasattr(d, "ownership_evidence")}
        if watermarks:  # the owner's verification test on each surrogate (DAWN), evaluated by the referee
            summary["ownership"] = {
                seat: {d_seat: self.referee.ownership(a.seat.snapshot(), ev) for d_seat, d in watermarks.items()
                       if (ev := d.ownership_evidence(seat, a.seat.target)) is not None}
                for seat, a in self.attackers.items()}
        if self.referee.evaluations:  # the scenario's extra labelled sets (e.g. the attacker's own domain)
            per_attacker = {s: self.referee.evaluate(a.seat.snapshot(), a.seat.target) for s, a in self.attackers.items()}
            summary["evaluations"] = {
                name: {"victims": victims,
                       "attackers": {s: {"accuracy": sc[name].accuracy, "fidelity": sc[name].fidelity}
                                     for s, sc in per_attacker.items()}}
                for name, victims in self.referee.evaluate_victims().items()}
        return summary
