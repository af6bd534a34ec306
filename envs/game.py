"""One extraction campaign as a pure simulation (no gym imports): R rounds of the game (docs/game.md).

Each round: defenders take their knob values; each attacker seat plays (queries through its channel, gets
answers immediately, since defenders screen and shape per request, and updates its surrogate); benign customers
send their traffic; defenders close the round; the referee scores everyone. ``Game.step`` only orchestrates:
what each seat spent comes from the ledger (:func:`~extractgym.envs.referee.spend`), accuracy and fidelity from
the referee's evaluation of each seat's surrogate snapshot, reward terms from the referee (:class:`RewardWeights`).

Observations hold what a real agent would know, never anything from the test set:

* an attacker sees its budgets, its accounts, what happened to this round's queries (answered, refused,
  withheld, banned), an honest running estimate of its fidelity -- the agreement of its surrogate *before* this
  round's training with the answers it just bought (inputs it has not trained on) -- and how well it then fits
  them, and signs that its answers are perturbed (their confidence and entropy, the share of one-hot answers, how
  much less confident they are than its own surrogate), plus its previous action;
* a defender sees the round's traffic as its books show it (queries, new accounts and their share of the traffic,
  the busiest account's share, bans), the share of benign value it delivered (its revenue after refunds), how
  close its detectors' accounts are to their thresholds, and its previous action.
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractgym.envs.api import Budget, Client, DefenderView, PredictionAPI
from extractgym.envs.benign import OWNER as BENIGN
from extractgym.envs.benign import BenignPopulation, BenignTally
from extractgym.envs.protocols import ATTACKER, DEFENDER, AttackerSeat, DefenderBody, Knob, SeatInfo, knob_values
from extractgym.envs.referee import Referee, Score, Spend, Traffic, spend, traffic

ATTACKER_OBS = ("round", "queries_left", "money_left", "accounts_left", "live_accounts", "round_queries", "refused",
                "withheld", "banned_this_round", "banned_total", "agreement", "fit", "confidence", "entropy",
                "one_hot", "softened")
DEFENDER_OBS = ("round", "round_queries", "accounts_opened", "live_accounts", "bans_this_round", "banned_fraction",
                "new_account_traffic", "young_traffic", "young_probs_share", "busiest_share", "value_share",
                "pressure_max", "pressure_mean", "near_threshold")


def _squash(v: float, scale: float) -> float:
    """Map a count in [0, inf) into [0, 1)."""
    return v / (v + scale)


def _left(spent: float, cap: float | None) -> float:
    """Share of a budget still unspent (1 for an unlimited budget)."""
    return 1.0 if cap is None else (max(0.0, 1.0 - spent / cap) if cap else 0.0)


def action_features(knobs: tuple[Knob, ...], values: Mapping[str, Any] | None) -> list[float]:
    """A seat's previous action as observation features: each knob's choice index scaled to [0, 1]."""
    out = []
    for k in knobs:
        i = k.choices.index(values[k.name]) if values is not None and values[k.name] in k.choices else k.default
        out.append(i / (len(k.choices) - 1) if len(k.choices) > 1 else 0.0)
    return out


def free_knobs(knobs: tuple[Knob, ...], fixed: Mapping[str, Any] | None) -> tuple[Knob, ...]:
    """The knobs left to a seat's brain when ``fixed`` values are set for the episode."""
    return tuple(k for k in knobs if k.name not in (fixed or {}))


def forfeit_reason(seat: Any) -> str | None:
    """Why an isolated seat forfeited (None: it did not)."""
    reason = getattr(getattr(seat, "body", seat), "forfeited", None)
    return reason if isinstance(reason, str) else None


def _snapshot(name: str, seat: Any) -> Any:
    """A seat's snapshot; a body that hands over something the referee does not score is named (an isolated body
    forfeits instead, inside its seat: :mod:`extractgym.agents.seats.isolation`)."""
    from extractgym.victims.snapshot import SnapshotError, accepted

    try:
        return accepted(seat.snapshot())
    except SnapshotError as e:
        raise ValueError(f"{name}: {e}") from None


def _score(referee: Referee, name: str, snapshot: Any, target: str) -> Score:
    from extractgym.victims.snapshot import SnapshotError

    try:
        return referee.score(snapshot, target)
    except SnapshotError as e:
        raise ValueError(f"{name}: {e}") from None


def observation_size(info: SeatInfo) -> int:
    return (len(ATTACKER_OBS) if info.role == ATTACKER else len(DEFENDER_OBS)) + len(info.knobs)


FITS = "fits"
"""A round's first phase boundary: the attackers and benign customers have played; queued fits are trained now."""


@dataclass(frozen=True)
class Scoring:
    """A round's second phase: the referee's scores of these ``(snapshot, target)`` pairs, in order."""

    referee: Referee
    items: list[tuple[Any, str]]
    names: list[str] | None = None  # the seats, in order (a snapshot that cannot be scored is named by its seat)

    def serve(self) -> list[Score]:
        from extractgym.victims.snapshot import SnapshotError

        try:
            return self.referee.score_many(self.items)
        except SnapshotError:
            names = self.names or [f"attacker {i}" for i in range(len(self.items))]
            return [_score(self.referee, n, snap, target) for n, (snap, target) in zip(names, self.items, strict=True)]


@dataclass(frozen=True)
class Played:
    """What :meth:`Game.play` leaves for :meth:`Game.finish`: the round's knob values, where its ledger slice
    starts, whether it was the last round, and when it started (``time.perf_counter``)."""

    settings: dict[str, dict[str, Any]]
    start: int
    done: bool
    t0: float


Phases = Generator[Any, Any, Any]


def run_phases(phases: Phases) -> Any:
    """Drive a generator of phases (:meth:`Game.steps`, or a wrapper's that delegates to it) to its result, one
    phase after the other: a :class:`Scoring` is served by its referee; :data:`FITS` needs nothing (fits that were
    not deferred ran when they were asked for)."""
    try:
        request = next(phases)
        while True:
            request = phases.send(request.serve() if isinstance(request, Scoring) else None)
    except StopIteration as stop:
        return stop.value


@dataclass
class StepResult:
    observations: dict[str, np.ndarray]
    rewards: dict[str, float]
    infos: dict[str, dict[str, Any]]
    done: bool


@dataclass
class Attacker:
    """An attacker seat as the game keeps it: the seat, its owner's client and budget, the referee's scores, the
    running totals of its spending (from the ledger, never from the seat) and its observation state."""

    seat: AttackerSeat
    client: Client
    budget: Budget
    score: Score
    initial: Score
    snapshot: Any  # the surrogate as of the end of the last round (scored by the referee)
    phi: float  # the potential of the last score (the reference before round 1)
    total: Spend = field(default_factory=Spend)
    pending: float = 0.0  # reward held back under terminal shaping
    agreement: float = 0.0
    fit: float = 0.0
    last: dict[str, Any] | None = None


class Game:
    """The state of one episode. Built by a scenario's factory; stepped by the envs.

    Args:
        api: the prediction API, with its defences.
        attackers: seat name -> (attacker seat, its owner's budget).
        defenders: seat name -> defender body (the same objects as ``api.defences``, in order).
        benign, referee, rounds, rng: the benign customers, the referee, the episode length and its generator.
        fixed: seat -> knob values fixed for the episode: those knobs leave the seat's action space.
    """

    def __init__(self, api: PredictionAPI, attackers: Mapping[str, tuple[AttackerSeat, Budget]],
                 defenders: Mapping[str, DefenderBody], benign: BenignPopulation | None, referee: Referee,
                 rounds: int, rng: np.random.Generator, fixed: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {rounds}")
        self.api, self.referee, self.benign, self.rounds = api, referee, benign, rounds
        self.fixed = {s: dict(v) for s, v in (fixed or {}).items()}
        self.round = 0
        self.defenders = dict(defenders)
        seat_rngs = rng.spawn(len(attackers) + len(defenders))
        self.attackers: dict[str, Attacker] = {}
        for (name, (seat, budget)), seat_rng in zip(attackers.items(), seat_rngs, strict=False):
            api.register_owner(name, budget)
            client = Client(api, name)
            seat.bind(client, seat_rng)
            snapshot = _snapshot(name, seat)
            score = _score(referee, name, snapshot, seat.target)
            self.attackers[name] = Attacker(seat, client, budget, score, score, snapshot,
                                            referee.reference(seat.target, score))
        view = DefenderView(api)
        for body, seat_rng in zip(self.defenders.values(), seat_rngs[len(attackers):], strict=True):
            body.bind(view, seat_rng)
        self.defender_last: dict[str, dict[str, Any] | None] = {s: None for s in self.defenders}
        self.established = frozenset(api.accounts)  # accounts that existed before the campaign (benign customers)
        self.probs_services = frozenset(n for n, svc in api.services.items() if svc.config.output == "probs")
        self.defender_pending = {s: 0.0 for s in self.defenders}
        self.benign_round = BenignTally()
        self.benign_banned = 0
        self.benign_throttled: set[str] = set()  # benign accounts a defence refused queries to (identities only)
        self._audits: dict[Any, float] = {}
        # the referee audits defended outputs at fixed points only (here and once per round), so reading
        # figures between rounds never draws from a random defence's generator
        self._defended = self._audit_defended_accuracy()
        self.wall_seconds = 0.0
        self.last_infos: dict[str, dict[str, Any]] = {}

    def close(self) -> None:
        """Release what the seats hold (isolated bodies' processes)."""
        for a in self.attackers.values():
            close = getattr(a.seat, "close", None)
            if callable(close):
                close()

    @property
    def seats(self) -> dict[str, SeatInfo]:
        return {**{s: SeatInfo(ATTACKER, free_knobs(a.seat.knobs, self.fixed.get(s))) for s, a in self.attackers.items()},
                **{s: SeatInfo(DEFENDER, free_knobs(d.knobs, self.fixed.get(s))) for s, d in self.defenders.items()}}

    # -- the round -----------------------------------------------------------------------------
    def step(self, actions: Mapping[str, Any]) -> StepResult:
        """Play one round (:meth:`steps`, its phases served here one after the other)."""
        return run_phases(self.steps(actions))

    def steps(self, actions: Mapping[str, Any]) -> Phases:
        """One round as a generator of its phases, so that a vector env can serve the phases of K games at once.

        It yields :data:`FITS` once the attackers and the benign customers have played (queued surrogate fits are
        trained then: :func:`~extractgym.victims.ensemble.deferred_fits`), then a :class:`Scoring` (the referee's
        scores of the attackers' snapshots, sent back), and returns the :class:`StepResult`. :meth:`step` serves
        them in order; the vector env serves each phase for all its games in one batch. Either way a game computes
        the same thing: nothing it does depends on what is batched with it.
        """
        played = self.play(actions)
        yield FITS
        snapshots = {name: _snapshot(name, a.seat) for name, a in self.attackers.items()}
        scores = yield Scoring(self.referee, [(snap, self.attackers[n].seat.target) for n, snap in snapshots.items()],
                               list(snapshots))
        return self.finish(played, snapshots, scores)

    def play(self, actions: Mapping[str, Any]) -> Played:
        """The round's traffic: actions checked, the round opened, each attacker plays, the round closed."""
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
                settings[s] = {**self.fixed.get(s, {}), **knob_values(info.knobs, actions[s])}
            except (TypeError, ValueError) as e:
                raise ValueError(f"bad action for {s}: {e}") from None
        t0 = time.perf_counter()
        start = self.begin_round(settings)
        for name, a in self.attackers.items():
            a.seat.play_round(settings[name], self.round)
        self.end_round(settings)
        return Played(settings, start, self.round >= self.rounds, t0)

    def finish(self, played: Played, snapshots: Mapping[str, Any], scores: list[Score]) -> StepResult:
        """Rewards, observations and figures of the round just played, from the referee's ``scores`` of the
        attackers' ``snapshots`` (in seat order)."""
        settings, done = played.settings, played.done
        entries = self.api.ledger.since(played.start)
        rewards: dict[str, float] = {}
        infos: dict[str, dict[str, Any]] = {}
        obs: dict[str, np.ndarray] = {}
        gains = []
        for (name, a), new in zip(self.attackers.items(), scores, strict=True):
            spent = spend(entries, name)
            a.total = a.total + spent
            snapshot = snapshots[name]
            gain = self.referee.potential(new) - a.phi
            gains.append(gain)
            rewards[name] = self._shaped(a, gain - self.referee.attacker_cost(spent, a.budget), done)
            obs[name] = self._attacker_obs(name, a, spent, snapshot, settings[name])
            a.score, a.phi, a.snapshot, a.last = new, self.referee.potential(new), snapshot, settings[name]
            infos[name] = self._attacker_info(name, a)
        benign_banned = spend(entries, BENIGN).bans if self.benign else 0
        self.benign_banned += benign_banned
        if self.benign and self.api.identities is not None:  # false positives per customer, throttling included
            self.benign_throttled.update(e.account for e in entries if e.owner == BENIGN and e.kind == "reject")
        utility, value_share = self.benign_round.utility, self.benign_round.value_share
        round_traffic = traffic(entries, self.young_accounts(), self.probs_services)
        attacker_gain = float(np.mean(gains)) if gains else 0.0
        for name in self.defenders:
            cost = self.referee.defender_cost(utility, benign_banned, self.benign.accounts if self.benign else 0,
                                              value_share)
            r = -self.referee.weights.attacker_gain * attacker_gain - cost
            if self.referee.weights.shaping == "terminal":
                self.defender_pending[name] += r
                r = self.defender_pending[name] if done else 0.0
            rewards[name] = r
            obs[name] = self._defender_obs(name, round_traffic, value_share, settings[name])
            self.defender_last[name] = settings[name]
            infos[name] = self._defender_info()
        self.wall_seconds += time.perf_counter() - played.t0  # in a vector env: the batch's round
        for info in infos.values():
            info["round"] = self.round
        self.last_infos = infos
        return StepResult(obs, rewards, infos, done=done)

    def begin_round(self, settings: Mapping[str, Mapping[str, Any]]) -> int:
        """Open round ``self.round``: delayed bans fall due, and each defender gets its knob values for the round
        (``settings``: seat -> values; attackers' are ignored). Returns the ledger position where the round's own
        traffic starts. The HTTP service opens its rounds with this too."""
        self.api.start_round(self.round)
        start = len(self.api.ledger)
        self.api.set_defence_knobs([settings[s] for s in self.defenders])
        return start

    def end_round(self, settings: Mapping[str, Mapping[str, Any]], benign: bool = True) -> None:
        """Close the round after the attackers played: the benign customers' traffic (``benign=False``: a server
        restoring its books, where that traffic is already in the ledger), each defender's ``end_round`` with its
        knob values, the referee's audit of defended outputs (once per round: random defences draw here), and
        the round counter moves on. The HTTP service closes its rounds with this too."""
        self.benign_round = self.benign.play_round() if self.benign is not None and benign else BenignTally()
        for name, d in self.defenders.items():
            d.end_round(self.round, settings[name])
        self.api.sweep()  # bans that defences decided on whole clusters of accounts (docs/sybil.md)
        self.round += 1
        self._defended = self._audit_defended_accuracy()

    def _shaped(self, a: Attacker, reward: float, done: bool) -> float:
        if self.referee.weights.shaping == "potential":
            return reward
        a.pending += reward
        return a.pending if done else 0.0

    # -- action masks --------------------------------------------------------------------------
    def action_mask(self, seat: str) -> list[np.ndarray]:
        """Per knob, which choices can take effect now. An attacker that can buy nothing more (no query budget, no
        money for a query on any account, no account it may open) has one canonical action: every knob's first
        choice. Defenders' choices always take effect."""
        info = self.seats[seat]
        full = [np.ones(len(k.choices), dtype=bool) for k in info.knobs]
        a = self.attackers.get(seat)
        if a is None or self._can_buy(a):
            return full
        return [np.arange(len(m)) == 0 for m in full]

    def _can_buy(self, a: Attacker) -> bool:
        client = a.client
        if client.left("queries") < 1:
            return False
        if any(client.affordable(acc, 1).n > 0 for acc in client.accounts()):
            return True
        return any(client.can_open(s) for s in client.service_names)

    # -- observations --------------------------------------------------------------------------
    def initial_observations(self) -> dict[str, np.ndarray]:
        obs = {s: self._attacker_obs(s, a, Spend(), a.snapshot, None) for s, a in self.attackers.items()}
        obs.update({s: self._defender_obs(s, traffic(()), 1.0, None) for s in self.defenders})
        return obs

    def _attacker_obs(self, name: str, a: Attacker, spent: Spend, snapshot: Any,
                      action: Mapping[str, Any] | None) -> np.ndarray:
        b, t = a.budget, a.total
        log = a.seat.round_log() if action is not None else None
        conf = ent = one_hot = softened = 0.0
        if log is not None and log.answered:
            x, out = log.queries()
            # the surrogate before this round's training, and after it
            before, after = self.referee.probas([a.snapshot, snapshot], x)
            a.agreement = float((before.argmax(1) == out.argmax(1)).mean())
            a.fit = float((after.argmax(1) == out.argmax(1)).mean())
            top = out.max(axis=1)
            conf = float(top.mean())
            p = np.clip(out, 1e-12, 1.0)
            ent = float((-(p * np.log(p)).sum(axis=1) / math.log(max(out.shape[1], 2))).mean())
            one_hot = float((top >= 1.0 - 1e-9).mean())
            softened = float(np.clip((before.max(axis=1).mean() - conf + 1.0) / 2.0, 0.0, 1.0))
        asked = log.asked if log is not None else 0
        v = [self.round / self.rounds, _left(t.queries, b.queries), _left(t.money, b.money),
             _left(t.accounts, b.accounts), _squash(t.accounts - t.bans, 4.0),
             min(1.0, spent.queries / b.queries) if b.queries else _squash(spent.queries, 100.0),
             log.refused / asked if asked else 0.0, log.withheld / asked if asked else 0.0,
             _squash(spent.bans, 1.0), _squash(t.bans, 4.0), a.agreement, a.fit, conf, ent, one_hot, softened,
             *action_features(self.seats[name].knobs, action)]
        return np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)

    def _defender_obs(self, name: str, tr: Traffic, value_share: float, action: Mapping[str, Any] | None) -> np.ndarray:
        total = len(self.api.accounts)
        banned = self.api.banned_count
        scored = isinstance(getattr(self.defenders[name], "pressures", None), dict)  # per-account detectors only:
        accounts = self.api.accounts.values() if scored else ()  # others cost nothing per account here
        pressure = [p for acc in accounts if not acc.banned and not math.isnan(p := self._pressure(name, acc.id))]
        v = [self.round / self.rounds, _squash(tr.queries, 1000.0), _squash(tr.opened, 10.0),
             _squash(total - banned, 10.0), _squash(tr.bans, 1.0), banned / total if total else 0.0,
             tr.fresh_queries / tr.queries if tr.queries else 0.0, tr.young_queries / tr.queries if tr.queries else 0.0,
             tr.young_probs_queries / tr.young_queries if tr.young_queries else 0.0,
             tr.busiest / tr.queries if tr.queries else 0.0,
             value_share, max(pressure, default=0.0), float(np.mean(pressure)) if pressure else 0.0,
             float(np.mean(np.asarray(pressure) > 0.5)) if pressure else 0.0,
             *action_features(self.seats[name].knobs, action)]
        return np.clip(np.asarray(v, dtype=np.float32), 0.0, 1.0)

    def young_accounts(self) -> set[str]:
        """Accounts opened during the campaign (a provider knows every account's age)."""
        return set(self.api.accounts) - self.established

    def _pressure(self, name: str, account: str) -> float:
        """How close a detector is to flagging ``account`` (1 = at its threshold); NaN where it keeps no score."""
        pressures = getattr(self.defenders[name], "pressures", None)
        return float(pressures.get(account, math.nan)) if isinstance(pressures, dict) else math.nan

    # -- figures -------------------------------------------------------------------------------
    def _attacker_info(self, name: str, a: Attacker, total: Spend | None = None) -> dict[str, Any]:
        t = a.total if total is None else total
        info = {"accuracy": a.score.accuracy, "fidelity": a.score.fidelity, "queries": t.queries,
                "cost": round(t.money, 10), "accounts_created": t.accounts, "accounts_banned": t.bans}
        if a.seat.tactical:  # the seat's own tally of its tactics (queries withheld never reach the API)
            info["tactics"] = a.seat.stats()
        if forfeit_reason(a.seat):  # an isolated body that broke its limits or the protocol (agents/seats/isolation.py)
            info["forfeited"] = forfeit_reason(a.seat)
        return info

    def _defender_info(self) -> dict[str, Any]:
        b = self.benign
        return {"defended_accuracy": self.defended_accuracy(), "utility": self.utility(),
                "value_share": self.benign.total.value_share if b else 1.0,
                "benign_accounts": b.accounts if b else 0, "benign_accounts_banned": self.benign_banned,
                "false_positive_rate": (self.benign_banned / b.accounts) if b and b.accounts else 0.0}

    def defended_accuracy(self) -> float:
        """The referee's audit of defended outputs on the test sets, as of the last round played."""
        return self._defended

    def _audit_defended_accuracy(self) -> float:
        key = self._audit_key()
        if key is not None and key in self._audits:
            return self._audits[key]
        value = float(np.mean([self.referee.defended_accuracy(s) for s in self.referee.test_sets]))
        if key is not None:
            self._audits[key] = value
        return value

    def _audit_key(self) -> Any:
        """The defences' knob values when every defence shapes purely (its ``pure_shape``): the audit is then a
        function of them, computed once per episode and setting. None otherwise."""
        if not all(getattr(d, "pure_shape", False) for d in self.api.defences):
            return None
        try:
            key = tuple(tuple(sorted(k.items())) for k in self.api.defence_knobs)
            hash(key)
        except TypeError:  # unhashable knob values: audit every time
            return None
        return key

    def _benign_accuracy(self) -> dict[str, float | None]:
        """Accuracy of defended and undefended answers on benign traffic with known labels (None if none)."""
        t = self.benign.total if self.benign else BenignTally()
        return {"benign_defended_accuracy": t.correct_defended / t.labelled if t.labelled else None,
                "benign_undefended_accuracy": t.correct_undefended / t.labelled if t.labelled else None}

    def _linking_summary(self) -> dict[str, Any]:
        """False positives per benign customer (banned or throttled, from the ledger) and what each linking
        defender acted on (its own record of clusters; benign and attacker accounts told apart by the referee)."""
        benign = {acc.id for _, acc in self.benign.customers} if self.benign else set()
        hit = self.benign_throttled | {a for a in benign if self.api.accounts[a].banned}
        out: dict[str, Any] = {"benign_accounts_throttled": len(self.benign_throttled),
                               "benign_customers_hit": len(hit),
                               "benign_hit_rate": len(hit) / len(benign) if benign else 0.0}
        linking = {}
        for seat, d in self.defenders.items():
            acted = getattr(d, "acted", None)
            if isinstance(acted, dict):
                linking[seat] = {"clusters": len(set(acted.values())), "accounts": len(acted),
                                 "benign": sum(a in benign for a in acted),
                                 "attacker": sum(self.api.accounts[a].owner in self.attackers for a in acted
                                                 if a in self.api.accounts)}
        if linking:
            out["linking"] = linking
        return out

    def utility(self) -> float:
        return self.benign.total.utility if self.benign else 1.0

    def summary(self) -> dict[str, Any]:
        """The figures of ``summary.json`` (docs/game.md): totals over attackers (from the whole ledger), means of rates."""
        ledger = tuple(self.api.ledger)
        infos = {s: self._attacker_info(s, a, spend(ledger, s)) for s, a in self.attackers.items()}
        d = self._defender_info()
        services = list(self.referee.test_sets)
        seats = list(self.attackers.values())
        per = list(infos.values())
        forfeited = sum(acc.credit for acc in self.api.accounts.values() if acc.banned and acc.owner in infos)
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
            "credit_forfeited": round(float(forfeited), 10),
            "benign_accounts": d["benign_accounts"],
            "benign_accounts_banned": d["benign_accounts_banned"],
            "false_positive_rate": d["false_positive_rate"],
            "utility": d["utility"],
            "benign_value_share": d["value_share"],
            "benign_revenue": round(spend(ledger, BENIGN).money, 10) if self.benign else 0.0,
            **self._benign_accuracy(),
            "initial_attacker_accuracy": float(np.mean([a.initial.accuracy for a in seats])) if seats else math.nan,
            "ledger_entries": len(self.api.ledger),
            "ledger_digest": self.api.ledger.digest(),
            "attackers": infos,
        }
        forfeits = {s: forfeit_reason(a.seat) for s, a in self.attackers.items() if forfeit_reason(a.seat)}
        if forfeits:
            summary["forfeits"] = forfeits
        if self.referee.baselines:  # untrusted contestants: what public data alone scores, and the threat model
            summary["no_query_baseline"] = {s: self.referee.no_query_baseline(s) for s in services}
            summary["threat_model"] = {s: self.referee.threat_model(s) for s in services}
        if self.benign:  # per benign data source (seed 003 Table IX), and queries defences refused to answer
            summary["false_positive_rate_by_source"] = self.benign.false_positive_rates()
            summary["benign_rejected"] = self.benign.total.rejected
        if self.api.identities is not None:  # account linking (docs/sybil.md)
            summary.update(self._linking_summary())
        watermarks = {s: d for s, d in self.defenders.items() if hasattr(d, "ownership_evidence")}
        if watermarks:  # the owner's verification test on each surrogate (DAWN), evaluated by the referee
            summary["ownership"] = {
                seat: {d_seat: self.referee.ownership(a.snapshot, ev) for d_seat, d in watermarks.items()
                       if (ev := d.ownership_evidence(seat, a.seat.target)) is not None}
                for seat, a in self.attackers.items()}
        if self.referee.evaluations:  # the scenario's extra labelled sets (e.g. the attacker's own domain)
            per_attacker = {s: self.referee.evaluate(a.snapshot, a.seat.target) for s, a in self.attackers.items()}
            summary["evaluations"] = {
                name: {"victims": victims,
                       "attackers": {s: {"accuracy": sc[name].accuracy, "fidelity": sc[name].fidelity}
                                     for s, sc in per_attacker.items()}}
                for name, victims in self.referee.evaluate_victims().items()}
        return summary
