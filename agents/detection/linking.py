"""Account linking: what the cluster defenders share (``metadata-linker``, ``content-linker``, ``timing-linker``).

A campaign of thousands of accounts sends each one a handful of queries: per-account detectors see too little.
Providers link accounts instead (shared payment or network fingerprints, jointly similar content, synchronised
timing) and act on the whole cluster (docs/sybil.md). :class:`ClusterLinker` is the part every linker shares: an
index of the accounts it has seen (rows), a union-find over them, and the action on a flagged cluster, chosen by the
``action`` knob when the cluster is flagged:

* ``ban``: every account of the cluster is banned after the round (:meth:`sweep`, which the API calls), and a
  cluster account that sends again before then is banned at once;
* ``throttle``: the cluster's queries are refused without a ban (not answered; charged only where the service
  charges rejections);
* ``poison``: the cluster's answers are served with their classes permuted by a secret permutation (the stolen
  labels are consistently wrong; the account never learns it was caught).

A linker never reads an account's ``owner`` (what the referee knows, not the provider): only fingerprints, content
and times through its :class:`~extractgym.envs.api.DefenderView`. ``acted`` (account -> cluster number) is its record
of what it acted on; the game reports it beside the ledger's false positives.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.envs.api import Account, DefenderView, Verdict
from extractgym.envs.protocols import Knob

ACTIONS = ("ban", "throttle", "poison")
MIN_CLUSTER = (3, 5, 10, 20, 50)


class UnionFind:
    """Disjoint sets over rows 0, 1, ... (grown on demand), with sizes: union by size, path halving."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []

    def add(self, n: int) -> None:
        """Make rows up to ``n - 1`` exist (each a singleton)."""
        start = len(self.parent)
        self.parent.extend(range(start, n))
        self.size.extend([1] * (n - start))

    def find(self, i: int) -> int:
        parent = self.parent
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(self, i: int, j: int) -> int:
        a, b = self.find(i), self.find(j)
        if a == b:
            return a
        if self.size[a] < self.size[b]:
            a, b = b, a
        self.parent[b] = a
        self.size[a] += self.size[b]
        return a

    def groups(self, rows: np.ndarray) -> dict[int, list[int]]:
        """``rows`` grouped by their set (root -> members, in the order of ``rows``)."""
        out: dict[int, list[int]] = {}
        for r in rows.tolist():
            out.setdefault(self.find(r), []).append(r)
        return out


class ClusterLinker(DefenderBase):
    """The shared part of a linking defender (see the module docstring). Subclasses call :meth:`row` for each
    account they learn of, and :meth:`act` with the rows of a cluster they flag.

    Args:
        action: preset of the ``action`` knob (``ban``, ``throttle`` or ``poison``).
        min_cluster: preset of the ``min_cluster`` knob: the fewest linked accounts acted on as a cluster (benign
            customers share networks and cards in small groups; a campaign reuses resources over many accounts).
    """

    def __init__(self, action: str = "ban", min_cluster: int = 10) -> None:
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if min_cluster < 2:
            raise ValueError(f"min_cluster must be >= 2, got {min_cluster}")
        self.knobs: tuple[Knob, ...] = (Knob("action", ACTIONS, ACTIONS.index(action)),
                                        Knob.around("min_cluster", MIN_CLUSTER, min_cluster))

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.rows: dict[str, int] = {}  # account id -> row
        self.ids: list[str] = []  # row -> account id
        self.acted: dict[str, int] = {}  # account id -> number of the cluster it was acted on with
        self.acted_rows: set[int] = set()
        self.action_of: dict[str, str] = {}  # account id -> the action taken on it
        self.clusters: list[dict[str, Any]] = []  # what was flagged: round, size, action, reason
        self._bans: list[tuple[str, str]] = []  # (account, note) for the API's sweep after the round
        self.permutation: np.ndarray | None = None  # the poison's secret class permutation (drawn on first use)

    def row(self, account_id: str) -> int:
        """The account's row (a new one the first time it is seen)."""
        r = self.rows.get(account_id)
        if r is None:
            r = self.rows[account_id] = len(self.ids)
            self.ids.append(account_id)
        return r

    def act(self, rows: list[int] | np.ndarray, knobs: Mapping[str, Any], reason: str,
            cluster: int | None = None) -> int:
        """Flag a cluster: act on its accounts not acted on yet (``cluster``: the number of a cluster flagged before
        that these accounts join; None: a new one). Returns how many accounts that was."""
        fresh_rows = [r for r in rows if r not in self.acted_rows]
        if not fresh_rows:
            return 0
        self.acted_rows.update(fresh_rows)
        fresh = [self.ids[r] for r in fresh_rows]
        action = knobs["action"]
        if cluster is None:
            cluster = len(self.clusters)
            self.clusters.append({"round": self.view.round, "accounts": 0, "action": action, "reason": reason})
        number = cluster
        self.clusters[number]["accounts"] += len(fresh)
        note = f"{type(self).__name__}: cluster {number} ({reason})"
        for a in fresh:
            self.acted[a], self.action_of[a] = number, action
            if action == "ban":
                self._bans.append((a, note))
        return len(fresh)

    def open_rows(self, n: int) -> np.ndarray:
        """A mask over rows ``0..n-1``: True where the account has not been acted on (O(acted), not O(n), in Python)."""
        mask = np.ones(n, dtype=bool)
        mask[[r for r in self.acted_rows if r < n]] = False
        return mask

    def sweep(self, knobs: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
        """The bans decided this round, for the API to flag (called once after the round's traffic)."""
        bans, self._bans = self._bans, []
        return iter(bans)

    def verdict(self, account: Account, n: int) -> int | Verdict:
        """What the action on the account's cluster (if any) makes of a request of ``n`` queries."""
        action = self.action_of.get(account.id)
        if action == "ban":
            return 0
        if action == "throttle":
            return Verdict(np.zeros(n, dtype=bool), ban=False)
        return n

    def shape(self, probs: np.ndarray, account: Account | None, x: np.ndarray | None,
              knobs: Mapping[str, Any]) -> np.ndarray:
        if account is None or self.action_of.get(account.id) != "poison" or not len(probs):
            return probs
        if self.permutation is None or len(self.permutation) != probs.shape[1]:
            k = probs.shape[1]  # a cyclic shift by a secret non-zero offset: every class is answered as another
            self.permutation = np.roll(np.arange(k), int(self.rng.integers(1, k)) if k > 1 else 0)
        return probs[:, self.permutation]
