"""One extraction campaign as a pure simulation (no gym imports): R rounds of the game of DESIGN.md.

Each round: defenders take their knob values; each attacker plays (queries through its client, gets
answers immediately, since defenders screen and shape per request, and updates its surrogate);
benign customers send their traffic; defenders close the round; the referee scores everyone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractgym.envs.api import Client, DefenderView, PredictionAPI, Wallet
from extractgym.envs.benign import BenignPopulation, BenignTally
from extractgym.envs.protocols import AttackerBody, DefenderBody, Knob, knob_values
from extractgym.envs.referee import Referee, Score

ATTACKER_OBS = ("round", "queries_left", "money_left", "accounts_left", "accounts_banned", "round_queries",
                "confidence", "entropy", "banned_this_round", "has_account")
DEFENDER_OBS = ("round", "round_queries", "accounts_opened", "banned_fraction", "utility", "active_accounts",
                "new_account_traffic", "bans_this_round", "busiest_account", "new_account_fraction")


def _squash(v: float, scale: float) -> float:
    """Map a count in [0, inf) into [0, 1)."""
    return v / (v + scale)


def _left(wallet: Wallet, what: str) -> float:
    """Share of a budget still unspent (1 for an unlimited budget)."""
    cap = getattr(wallet.budget, what)
    return 1.0 if cap is None else (max(0.0, 1.0 - getattr(wallet, what) / cap) if cap else 0.0)


@dataclass
class StepResult:
    observations: dict[str, np.ndarray]
    rewards: dict[str, float]
    infos: dict[str, dict[str, Any]]
    done: bool


@dataclass
class AttackerSeat:
    """An attacker seat as the game sees it: figures come from the API's own records, never from the body."""

    body: AttackerBody
    client: Client
    api: PredictionAPI
    score: Score = field(default_factory=lambda: Score(0.0, 0.0))
    initial: Score = field(default_factory=lambda: Score(0.0, 0.0))

    @property
    def wallet(self) -> Wallet:
        return self.api.wallets[self.client.owner]

    @property
    def banned(self) -> int:
        return sum(acc.banned for acc in self.api.accounts.values() if acc.owner == self.client.owner)


class Game:
    """The state of one episode. Built by a scenario's factory; stepped by the envs."""

    def __init__(self, api: PredictionAPI, attackers: Mapping[str, tuple[AttackerBody, Any]],
                 defenders: Mapping[str, DefenderBody], benign: BenignPopulation | None, referee: Referee,
                 rounds: int, rng: np.random.Generator) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.api, self.referee, self.benign, self.rounds = api, referee, benign, rounds
        self.round = 0
        self.defenders = dict(defenders)
        seat_rngs = rng.spawn(len(attackers) + len(defenders))
        self.attackers: dict[str, AttackerSeat] = {}
        for (seat, (body, budget)), seat_rng in zip(attackers.items(), seat_rngs, strict=False):
            api.register_owner(seat, budget)
            client = Client(api, seat)
            body.bind(client, seat_rng)
            score = referee.score(body)
            self.attackers[seat] = AttackerSeat(body, client, api, score, score)
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
    def seats(self) -> dict[str, tuple[Knob, ...]]:
        return {**{s: a.body.knobs for s, a in self.attackers.items()},
                **{s: d.knobs for s, d in self.defenders.items()}}

    # -- the round -----------------------------------------------------------------------------
    def step(self, actions: Mapping[str, Any]) -> StepResult:
        if self.round >= self.rounds:
            raise RuntimeError("the episode is over: reset the env")
        missing = [s for s in self.seats if s not in actions]
        if missing:
            raise ValueError(f"no action for seat(s) {', '.join(missing)}")
        unknown = [s for s in actions if s not in self.seats]
        if unknown:
            raise ValueError(f"actions for unknown seat(s) {', '.join(map(str, unknown))}; seats: {', '.join(self.seats)}")
        settings = {}
        for s, knobs in self.seats.items():
            try:
                settings[s] = knob_values(knobs, actions[s])
            except (TypeError, ValueError) as e:
                raise ValueError(f"bad action for {s}: {e}") from None
        t0 = time.perf_counter()
        self.api.start_round(self.round)
        ledger_start = len(self.api.ledger)
        for seat, d in self.defenders.items():
            d.set_knobs(settings[seat])
        before = {s: (a.wallet.queries, a.wallet.money, a.banned, a.client.stats.n, a.client.stats.confidence,
                      a.client.stats.entropy) for s, a in self.attackers.items()}
        for seat, a in self.attackers.items():
            a.body.play_round(settings[seat], self.round)
        self.benign_round = self.benign.play_round() if self.benign else BenignTally()
        for d in self.defenders.values():
            d.end_round(self.round)

        self.round += 1
        self._defended = self._audit_defended_accuracy()  # once per round: random defences draw here
        rewards: dict[str, float] = {}
        infos: dict[str, dict[str, Any]] = {}
        obs: dict[str, np.ndarray] = {}
        gains = []
        for seat, a in self.attackers.items():
            q0, m0, b0, n0, c0, e0 = before[seat]
            new = self.referee.score(a.body)
            spent = {"queries": a.wallet.queries - q0, "money": a.wallet.money - m0, "banned": a.banned - b0}
            rewards[seat] = self.referee.attacker_reward(a.score, new, spent, a.wallet)
            gains.append(new.accuracy - a.score.accuracy)
            a.score = new
            n = a.client.stats.n - n0
            obs[seat] = self._attacker_obs(a, spent, n, a.client.stats.confidence - c0, a.client.stats.entropy - e0)
            infos[seat] = self._attacker_info(a)
        banned_now = self.benign.banned if self.benign else 0
        new_fp, self.benign_banned = banned_now - self.benign_banned, banned_now
        utility = self.benign_round.utility
        for seat in self.defenders:
            rewards[seat] = self.referee.defender_reward(float(np.mean(gains)) if gains else 0.0, utility, new_fp,
                                                         self.benign.accounts if self.benign else 0)
            obs[seat] = self._defender_obs(ledger_start, utility)
            infos[seat] = self._defender_info()
        self.wall_seconds += time.perf_counter() - t0
        for info in infos.values():
            info["round"] = self.round
        self.last_infos = infos
        return StepResult(obs, rewards, infos, done=self.round >= self.rounds)

    # -- observations --------------------------------------------------------------------------
    def initial_observations(self) -> dict[str, np.ndarray]:
        zero = {"queries": 0, "money": 0.0, "banned": 0}
        obs = {s: self._attacker_obs(a, zero, 0, 0.0, 0.0) for s, a in self.attackers.items()}
        obs.update({s: self._defender_obs(len(self.api.ledger), 1.0) for s in self.defenders})
        return obs

    def _attacker_obs(self, a: AttackerSeat, spent: Mapping[str, float], n: int, conf: float, ent: float) -> np.ndarray:
        w = a.wallet
        q_cap = w.budget.queries
        v = [self.round / self.rounds, _left(w, "queries"), _left(w, "money"), _left(w, "accounts"),
             _squash(a.banned, 1.0),
             min(1.0, spent["queries"] / q_cap) if q_cap else _squash(spent["queries"], 100.0),
             conf / n if n else 0.0, ent / n if n else 0.0, float(spent["banned"] > 0),
             float(bool(a.client.accounts()))]
        return np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)

    def _defender_obs(self, ledger_start: int, utility: float) -> np.ndarray:
        entries = [self.api.ledger[i] for i in range(ledger_start, len(self.api.ledger))]
        queries = sum(e.n for e in entries if e.kind == "query")
        opened = {e.account for e in entries if e.kind == "open"}
        fresh = sum(e.n for e in entries if e.kind == "query" and e.account in opened)
        accounts = self.api.accounts.values()
        total = len(self.api.accounts)
        banned = sum(acc.banned for acc in accounts)
        per_account: dict[str, int] = {}
        for e in entries:
            if e.kind == "query":
                per_account[e.account] = per_account.get(e.account, 0) + e.n
        v = [self.round / self.rounds, _squash(queries, 1000.0), _squash(len(opened), 10.0),
             banned / total if total else 0.0, utility, _squash(total - banned, 10.0),
             fresh / queries if queries else 0.0, _squash(sum(e.kind == "ban" for e in entries), 1.0),
             _squash(max(per_account.values(), default=0), 100.0), len(opened) / total if total else 0.0]
        return np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)

    # -- figures -------------------------------------------------------------------------------
    def _attacker_info(self, a: AttackerSeat) -> dict[str, Any]:
        w = a.wallet
        info = {"accuracy": a.score.accuracy, "fidelity": a.score.fidelity, "queries": w.queries,
                "cost": round(w.money, 10), "accounts_created": w.accounts, "accounts_banned": a.banned}
        stats = getattr(a.body, "stats", None)
        if callable(stats):  # the attacker's own tally of its tactics (queries withheld never reach the API)
            info["tactics"] = stats()
        return info

    def _defender_info(self) -> dict[str, Any]:
        b = self.benign
        return {"defended_accuracy": self.defended_accuracy(), "utility": self.utility(),
                "benign_accounts": b.accounts if b else 0, "benign_accounts_banned": b.banned if b else 0,
                "false_positive_rate": (b.banned / b.accounts) if b and b.accounts else 0.0}

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
        """The figures of ``summary.json`` (DESIGN.md): totals over attackers, means of rates."""
        seats = list(self.attackers.values())
        infos = [self._attacker_info(a) for a in seats]
        d = self._defender_info()
        services = list(self.referee.test_sets)
        summary: dict[str, Any] = {
            "rounds": self.round,
            "victim_accuracy": float(np.mean([self.referee.victim_accuracy(s) for s in services])),
            "defended_accuracy": d["defended_accuracy"],
            "attacker_accuracy": float(np.mean([i["accuracy"] for i in infos])) if infos else math.nan,
            "fidelity": float(np.mean([i["fidelity"] for i in infos])) if infos else math.nan,
            "queries": int(sum(i["queries"] for i in infos)),
            "cost": round(float(sum(i["cost"] for i in infos)), 10),
            "accounts_created": int(sum(i["accounts_created"] for i in infos)),
            "accounts_banned": int(sum(i["accounts_banned"] for i in infos)),
            "benign_accounts": d["benign_accounts"],
            "benign_accounts_banned": d["benign_accounts_banned"],
            "false_positive_rate": d["false_positive_rate"],
            "utility": d["utility"],
            **self._benign_accuracy(),
            "initial_attacker_accuracy": float(np.mean([a.initial.accuracy for a in seats])) if seats else math.nan,
            "ledger_entries": len(self.api.ledger),
            "ledger_digest": self.api.ledger.digest(),
            "attackers": {s: i for s, i in zip(self.attackers, infos, strict=True)},
        }
        if self.referee.evaluations:  # the scenario's extra labelled sets (e.g. the attacker's own domain)
            per_attacker = {s: self.referee.evaluate(a.body) for s, a in self.attackers.items()}
            summary["evaluations"] = {
                name: {"victims": victims,
                       "attackers": {s: {"accuracy": sc[name].accuracy, "fidelity": sc[name].fidelity}
                                     for s, sc in per_attacker.items()}}
                for name, victims in self.referee.evaluate_victims().items()}
        return summary
