"""Benign customers: accounts that query natural data every round and never attack.

They are how the referee measures what a defence costs honest users: utility (do defended answers
keep the undefended top class? a query a defence rejects got no answer at all, so it counts as one that did not)
and false positives (benign accounts banned), per data source as well as in total.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extractgym.envs.api import Account, Budget, PredictionAPI
from extractgym.envs.errors import QueryRefused
from extractgym.envs.identity import BenignMetadata, diurnal_time

OWNER = "benign"


@dataclass(frozen=True, eq=False)
class BenignGroup:
    """``customers`` accounts on ``service`` each sending ``queries_per_round`` samples drawn from ``x``.
    ``y`` holds true labels (``-1`` where unknown)."""

    name: str
    x: np.ndarray
    y: np.ndarray
    customers: int
    queries_per_round: int
    service: str


@dataclass
class BenignTally:
    queries: int = 0  # answered or rejected by a defence (rejected ones never agree)
    agree: int = 0  # defended top class == undefended top class
    rejected: int = 0  # queries a defence refused to answer (without banning the account)
    labelled: int = 0
    correct_defended: int = 0
    correct_undefended: int = 0
    wanted: int = 0  # queries the customers wanted to send (banned or refused customers included)
    value: float = 0.0  # what the answers were worth to them, in queries (see :func:`answer_value`)

    @property
    def value_share(self) -> float:
        """The share of the value the customers wanted that they got (1 when nobody wanted anything)."""
        return self.value / self.wanted if self.wanted else 1.0

    def add(self, other: BenignTally) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def utility(self) -> float:
        return self.agree / self.queries if self.queries else 1.0


class BenignPopulation:
    """All benign customers of an episode; one owner (``"benign"``) with an unlimited budget.

    Where the API keeps identities, ``metadata`` says how the customers' fingerprints look (shared corporate
    networks, family cards, popular clients: :class:`~extractgym.envs.identity.BenignMetadata`) and each customer
    sends its round's request at a time of day drawn from its zone's diurnal pattern; ``meta_rng`` draws both, apart
    from ``rng`` (the queries), so a scenario without identities draws exactly as before.
    """

    def __init__(self, api: PredictionAPI, groups: list[BenignGroup], rng: np.random.Generator,
                 metadata: BenignMetadata | None = None, meta_rng: np.random.Generator | None = None) -> None:
        self.api = api
        self.rng = rng
        api.register_owner(OWNER, Budget())
        n = sum(g.customers for g in groups)
        self.metadata = metadata if api.identities is not None else None
        self.meta_rng = meta_rng if meta_rng is not None else np.random.default_rng(0)
        requests = self.metadata.requests(n, self.meta_rng) if self.metadata is not None else [None] * n
        slots = [g for g in groups for _ in range(g.customers)]
        self.customers: list[tuple[BenignGroup, Account]] = [
            (g, api.open_account(OWNER, g.service, req)) for g, req in zip(slots, requests, strict=True)]
        self.total = BenignTally()
        self.per_group = {g.name: BenignTally() for g in groups}

    @property
    def accounts(self) -> int:
        return len(self.customers)

    @property
    def banned(self) -> int:
        return sum(acc.banned for _, acc in self.customers)

    def banned_per_group(self) -> dict[str, tuple[int, int]]:
        """``{group name: (accounts banned, accounts)}``: false positives per benign data source."""
        out = {name: (0, 0) for name in self.per_group}
        for group, acc in self.customers:
            banned, total = out[group.name]
            out[group.name] = (banned + int(acc.banned), total + 1)
        return out

    def false_positive_rates(self) -> dict[str, float]:
        """``{group name: accounts banned / accounts}`` (seed 003 Table IX: the FPR per benign data source)."""
        return {name: banned / total if total else 0.0 for name, (banned, total) in self.banned_per_group().items()}

    def play_round(self) -> BenignTally:
        tally = BenignTally()
        for group, acc in self.customers:
            t = self._serve(group, acc)
            tally.add(t)
            self.per_group[group.name].add(t)
        self.total.add(tally)
        return tally

    def _serve(self, group: BenignGroup, acc: Account) -> BenignTally:
        """One customer's round: what it wanted, and what it got."""
        t = BenignTally(wanted=min(group.queries_per_round, len(group.x)))
        if acc.banned:
            return t  # a banned customer is lost: that is the false positive's cost
        idx = self.rng.choice(len(group.x), size=t.wanted, replace=False)
        at = None
        if self.metadata is not None:  # the customer's own hours (its network's zone)
            fp = self.api.identities.of[acc.id]
            at = diurnal_time(fp.zone, self.meta_rng, self.metadata.peak, self.metadata.spread)
        try:
            r = self.api.query(OWNER, acc.id, group.x[idx], audit=True, at=at)
        except QueryRefused:
            return t  # e.g. a rate limit below the group's traffic: nothing served
        t.queries, t.rejected = r.n_answered + r.rejected, r.rejected  # a rejected query never agrees
        if r.n_answered == 0:
            return t
        served = idx[r.rows]  # the answered rows (a defence may reject some without a ban)
        top_def, top_raw = r.outputs.argmax(axis=1), r.raw.argmax(axis=1)
        t.agree = int((top_def == top_raw).sum())
        y = group.y[served]
        known = y >= 0
        t.labelled = int(known.sum())
        t.correct_defended = int((top_def[known] == y[known]).sum())
        t.correct_undefended = int((top_raw[known] == y[known]).sum())
        t.value = float(answer_value(r.outputs, r.raw, self.api.services[acc.service].config.output).sum())
        return t


def answer_value(outputs: np.ndarray, raw: np.ndarray, output: str) -> np.ndarray:
    """What each answer is worth to a customer, in [0, 1]: on a probability service, one minus the total variation
    between the defended and the undefended probabilities (a customer who buys probabilities pays for them); on a
    label or top-k service, whether the top class survived."""
    if output == "probs":
        return 1.0 - 0.5 * np.abs(np.asarray(outputs, dtype=np.float64) - raw).sum(axis=1)
    return (np.asarray(outputs).argmax(axis=1) == raw.argmax(axis=1)).astype(np.float64)
