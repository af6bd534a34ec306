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

    def add(self, other: BenignTally) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @property
    def utility(self) -> float:
        return self.agree / self.queries if self.queries else 1.0


class BenignPopulation:
    """All benign customers of an episode; one owner (``"benign"``) with an unlimited budget."""

    def __init__(self, api: PredictionAPI, groups: list[BenignGroup], rng: np.random.Generator) -> None:
        self.api = api
        self.rng = rng
        api.register_owner(OWNER, Budget())
        self.customers: list[tuple[BenignGroup, Account]] = [
            (g, api.open_account(OWNER, g.service)) for g in groups for _ in range(g.customers)]
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
            if acc.banned:
                continue  # a banned customer is lost: that is the false positive's cost
            idx = self.rng.choice(len(group.x), size=min(group.queries_per_round, len(group.x)), replace=False)
            try:
                r = self.api.query(OWNER, acc.id, group.x[idx], audit=True)
            except QueryRefused:
                continue  # e.g. a rate limit below the group's traffic: nothing served
            t = BenignTally(queries=r.n_answered + r.rejected, rejected=r.rejected)
            if r.n_answered == 0:
                tally.add(t)
                self.per_group[group.name].add(t)
                continue
            served = idx[r.rows]  # the answered rows (a defence may reject some without a ban)
            top_def, top_raw = r.outputs.argmax(axis=1), r.raw.argmax(axis=1)
            t.agree = int((top_def == top_raw).sum())
            y = group.y[served]
            known = y >= 0
            t.labelled = int(known.sum())
            t.correct_defended = int((top_def[known] == y[known]).sum())
            t.correct_undefended = int((top_raw[known] == y[known]).sum())
            tally.add(t)
            self.per_group[group.name].add(t)
        self.total.add(tally)
        return tally
