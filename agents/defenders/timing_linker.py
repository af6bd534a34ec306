"""Timing linker: link accounts whose requests are synchronised in time, and act on large clusters (SynchroTrap).

Cao, Yang, Yu & Palow, "Uncovering Large Groups of Active Malicious Accounts in Online Social Networks" (SynchroTrap),
ACM CCS 2014 (https://doi.org/10.1145/2660267.2660269), deployed at Facebook and Instagram: accounts run by one
operator act in loosely synchronised bursts (its scripts run on a schedule), so the pairwise similarity of their
timestamped actions is high where ordinary users' is not. SynchroTrap matches two users' actions when they fall within
``T_sim`` of each other, takes the Jaccard similarity of the matched action sets, links pairs above a threshold and
clusters them by single linkage, keeping large clusters. Here:

* an account's *actions* are the time slots of its requests: ``(round, slot)`` with ``slot_minutes`` slots
  (``T_sim``), from the request time the API stamps (:attr:`~extractgym.envs.api.DefenderView.now`);
* pairs are found by MinHash locality-sensitive hashing of those sets (Broder 1997; ``bands`` x ``rows`` hash
  values per account: accounts that agree on a whole band are candidates), instead of SynchroTrap's time-window
  partitioning of the pairwise join: the cost per round is linear in the active accounts, whatever how many share
  one slot. A candidate is linked to its band's first member if their exact Jaccard similarity is at least
  ``similarity`` and they share at least ``min_shared`` slots (SynchroTrap also drops users with few actions: two
  accounts that each acted once in the same quarter hour say nothing);
* the components of the links (single linkage) with at least ``min_cluster`` accounts are acted on.

Ordinary customers send at the hours of their own zone, around a different time each day: their slot sets barely
overlap. A campaign's batch job (``pacing: burst``) puts every account's requests in the same slots each round;
human pacing or accounts used for a single round (too few slots to link) evade it, at the cost of more accounts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.detection.linking import ClusterLinker, UnionFind
from extractgym.agents.registry import register_defender
from extractgym.envs.api import Account, DefenderView, Verdict

_PRIME = (1 << 31) - 1  # a Mersenne prime: h(e) = (a e + b) mod p is a universal hash family (exact in uint64 for
# slots below 2^32, i.e. for over 40 million rounds of one-minute slots)


@register_defender("timing-linker")
class TimingLinker(ClusterLinker):
    """SynchroTrap-style clusters of accounts whose request times coincide.

    Args:
        slot_minutes: the matching window ``T_sim`` (a request's time is bucketed into slots of this length).
        similarity: the least Jaccard similarity of two accounts' slot sets that links them.
        min_shared: the fewest shared slots that links two accounts.
        bands, rows: MinHash LSH: ``bands`` bands of ``rows`` hash values each (candidates agree on a whole band).
        seed: the hash functions.
        action, min_cluster: see :class:`~extractgym.agents.detection.linking.ClusterLinker`.
    Knobs: ``action`` and ``min_cluster``.
    """

    def __init__(self, slot_minutes: float = 15.0, similarity: float = 0.5, min_shared: int = 2, bands: int = 8,
                 rows: int = 2, seed: int = 0, action: str = "ban", min_cluster: int = 10) -> None:
        super().__init__(action, min_cluster)
        if not 0.0 < slot_minutes <= 1440.0:
            raise ValueError(f"slot_minutes must be in (0, 1440], got {slot_minutes}")
        if not 0.0 < similarity <= 1.0:
            raise ValueError(f"similarity must be in (0, 1], got {similarity}")
        if min_shared < 1 or bands < 1 or rows < 1:
            raise ValueError(f"min_shared, bands and rows must be >= 1, got {min_shared}, {bands}, {rows}")
        self.slots = max(1, int(round(1440.0 / slot_minutes)))
        self.similarity, self.min_shared, self.bands, self.band_rows = similarity, min_shared, bands, rows
        g = np.random.default_rng(seed)
        self.a = g.integers(1, _PRIME, size=bands * rows, dtype=np.uint64)
        self.b = g.integers(0, _PRIME, size=bands * rows, dtype=np.uint64)

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.actions: list[set[int]] = []  # row -> its slots
        self.signatures = np.zeros((0, self.bands * self.band_rows), dtype=np.uint64)
        self.dirty: set[int] = set()  # rows with new slots since their signature was computed
        self.sizes = np.zeros(0, dtype=np.int64)  # row -> how many slots it has

    def _signatures(self, rows: list[int]) -> np.ndarray:
        """MinHash signatures of these rows' slot sets: per hash function, the least ``(a e + b) mod p`` over the
        set (all rows in one pass)."""
        sets = [sorted(self.actions[r]) for r in rows]
        e = np.fromiter((s for slots in sets for s in slots), dtype=np.uint64)
        h = (self.a[None, :] * e[:, None] + self.b[None, :]) % np.uint64(_PRIME)
        starts = np.cumsum([0] + [len(slots) for slots in sets[:-1]])
        return np.minimum.reduceat(h, starts, axis=0)

    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> int | Verdict:
        now = self.view.now
        if now is not None and len(x):
            r = self.row(account.id)
            while len(self.actions) <= r:
                self.actions.append(set())
            slot = self.view.round * self.slots + min(int(now * self.slots), self.slots - 1)
            if slot not in self.actions[r]:
                self.actions[r].add(slot)
                self.dirty.add(r)
                if r >= len(self.sizes):
                    self.sizes = np.concatenate([self.sizes, np.zeros(max(r + 1, 2 * len(self.sizes), 64)
                                                                      - len(self.sizes), dtype=np.int64)])
                self.sizes[r] += 1
        return self.verdict(account, len(x))

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        n = len(self.actions)
        if n > len(self.signatures):
            grown = np.zeros((max(n, 2 * len(self.signatures)), self.signatures.shape[1]), dtype=np.uint64)
            grown[:len(self.signatures)] = self.signatures
            self.signatures = grown
        if self.dirty:
            dirty = sorted(self.dirty)
            self.signatures[dirty] = self._signatures(dirty)
            self.dirty.clear()
        eligible = np.flatnonzero((self.sizes[:n] >= self.min_shared) & self.open_rows(n))
        if len(eligible) < knobs["min_cluster"]:
            return
        links = UnionFind()
        links.add(n)
        sig = self.signatures[eligible]
        for band in range(self.bands):
            cols = sig[:, band * self.band_rows:(band + 1) * self.band_rows]
            _, first, inverse = np.unique(cols, axis=0, return_index=True, return_inverse=True)
            inverse = inverse.reshape(-1)
            shared = np.flatnonzero(first[inverse] != np.arange(len(eligible)))  # not its band bucket's first
            for i in shared.tolist():
                r, rep = int(eligible[i]), int(eligible[first[inverse[i]]])
                if links.find(r) != links.find(rep) and self._similar(self.actions[r], self.actions[rep]):
                    links.union(r, rep)
        for members in links.groups(eligible).values():
            if len(members) >= knobs["min_cluster"]:
                self.act(members, knobs, f"{len(members)} accounts with synchronised requests")

    def _similar(self, a: set[int], b: set[int]) -> bool:
        shared = len(a & b)
        return shared >= self.min_shared and shared >= self.similarity * (len(a) + len(b) - shared)
