"""Bounded per-account histories the stateful detectors (and the attacker's query filter) keep.

:class:`History` is a FIFO ring of at most ``cap`` rows; :class:`GroupedHistory` keeps rows grouped by an int
label (PRADA's per-class growing sets), evicted oldest-first across all groups. Both grow by doubling, so a
short-lived account costs little, and never exceed their cap however long an account lives.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class History:
    """A FIFO ring buffer of at most ``cap`` float64 rows (plus optional int labels and float values).

    Memory is at most ``cap * (dim + 2)`` numbers however long the account lives (storage grows by doubling up
    to ``cap``, so a short-lived account costs little); once full, the oldest rows are overwritten.
    Appending is O(batch) amortised. ``rows``, ``labels`` and ``values`` are views of the filled part (in slot
    order, not arrival order: nothing here depends on order).
    """

    def __init__(self, cap: int, dim: int) -> None:
        self.cap, self.dim = cap, dim
        self._rows = np.empty((min(cap, 64), dim))
        self._labels = np.empty(min(cap, 64), dtype=np.int64)
        self._values = np.empty(min(cap, 64))
        self._sq = np.empty(min(cap, 64))  # squared row norms, kept for the distance expansion
        self._n = 0  # filled slots
        self._next = 0  # slot the next row overwrites once full

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> np.ndarray:
        return self._rows[:self._n]

    @property
    def labels(self) -> np.ndarray:
        return self._labels[:self._n]

    @property
    def values(self) -> np.ndarray:
        return self._values[:self._n]

    @property
    def sq_norms(self) -> np.ndarray:
        return self._sq[:self._n]

    def append(self, rows: np.ndarray, labels: np.ndarray | None = None, values: np.ndarray | None = None) -> None:
        n = len(rows)
        labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        values = np.zeros(n) if values is None else np.asarray(values, dtype=np.float64)
        if n > self.cap:  # only the newest cap rows can survive
            rows, labels, values, n = rows[-self.cap:], labels[-self.cap:], values[-self.cap:], self.cap
        sq = (np.asarray(rows, dtype=np.float64) ** 2).sum(1)
        if self._n < self.cap and self._n + n > len(self._rows):  # grow by doubling, up to cap
            size = min(self.cap, max(2 * len(self._rows), 2 * (self._n + n)))
            for attr in ("_rows", "_labels", "_values", "_sq"):
                old = getattr(self, attr)
                new = np.empty((size, *old.shape[1:]), dtype=old.dtype)
                new[:self._n] = old[:self._n]
                setattr(self, attr, new)
        free = min(self.cap - self._n, n)
        if free > 0:
            sl = slice(self._n, self._n + free)
            self._rows[sl], self._labels[sl] = rows[:free], labels[:free]
            self._values[sl], self._sq[sl] = values[:free], sq[:free]
            self._n += free
            rows, labels, values, sq = rows[free:], labels[free:], values[free:], sq[free:]
        if len(rows):
            slots = (self._next + np.arange(len(rows))) % self.cap
            self._rows[slots], self._labels[slots], self._values[slots], self._sq[slots] = rows, labels, values, sq
            self._next = int((slots[-1] + 1) % self.cap)

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes + self._labels.nbytes + self._values.nbytes + self._sq.nbytes


class GroupedHistory:
    """At most ``cap`` float64 rows in total, grouped by an int label, evicted oldest-first across all groups.

    Each group's rows (with their squared norms and a float value each) lie contiguous in arrival order, so a
    scan of one group is one BLAS call on a view, never a gather over the whole history. Appending and eviction
    are O(batch) amortised. A group's buffer grows by doubling and is compacted or halved when it runs empty, so
    memory stays within ``4 * cap`` rows plus 16 per group however the labels shift over an account's life.
    """

    def __init__(self, cap: int, dim: int) -> None:
        self.cap, self.dim = cap, dim
        self._groups: dict[int, _Group] = {}
        self._order = np.empty(min(cap, 64), dtype=np.int64)  # labels in arrival order (a ring)
        self._head = 0  # ring slot of the oldest label
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def rows(self, label: int) -> np.ndarray:
        g = self._groups.get(int(label))
        return g.rows[g.start:g.end] if g else np.empty((0, self.dim))

    def sq_norms(self, label: int) -> np.ndarray:
        g = self._groups.get(int(label))
        return g.sq[g.start:g.end] if g else np.empty(0)

    def values(self, label: int) -> np.ndarray:
        g = self._groups.get(int(label))
        return g.values[g.start:g.end] if g else np.empty(0)

    def append(self, rows: np.ndarray, labels: np.ndarray, values: np.ndarray | None = None) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.dim)
        labels = np.asarray(labels, dtype=np.int64)
        values = np.zeros(len(rows)) if values is None else np.asarray(values, dtype=np.float64)
        if len(rows) > self.cap:  # only the newest cap rows can survive
            rows, labels, values = rows[-self.cap:], labels[-self.cap:], values[-self.cap:]
        m = len(rows)
        if m == 0:
            return
        self._evict(max(0, self._n + m - self.cap))
        if self._n + m > len(self._order):  # grow the label ring by doubling, up to cap (unrolled to slot 0)
            size = min(self.cap, max(2 * len(self._order), self._n + m))
            order = np.empty(size, dtype=np.int64)
            order[:self._n] = self._order[(self._head + np.arange(self._n)) % len(self._order)]
            self._order, self._head = order, 0
        slots = (self._head + self._n + np.arange(m)) % len(self._order)
        self._order[slots] = labels
        self._n += m
        sq = (rows * rows).sum(1)
        for c in np.unique(labels):
            mine = labels == c
            g = self._groups.get(int(c))
            if g is None:
                g = self._groups[int(c)] = _Group(self.dim)
            g.push(rows[mine], sq[mine], values[mine])

    def _evict(self, k: int) -> None:
        if k <= 0:
            return
        gone = self._order[(self._head + np.arange(k)) % len(self._order)]
        self._head = (self._head + k) % len(self._order)
        self._n -= k
        for c, count in zip(*np.unique(gone, return_counts=True), strict=True):
            self._groups[int(c)].pop_oldest(int(count))

    @property
    def nbytes(self) -> int:
        return self._order.nbytes + sum(g.nbytes for g in self._groups.values())


class _Group:
    """One label's rows, oldest first, in ``rows[start:end]`` (a deque on a numpy buffer)."""

    def __init__(self, dim: int) -> None:
        self.rows, self.sq, self.values = np.empty((16, dim)), np.empty(16), np.empty(16)
        self.start = self.end = 0

    def push(self, rows: np.ndarray, sq: np.ndarray, values: np.ndarray) -> None:
        m, live = len(rows), self.end - self.start
        if self.end + m > len(self.rows):
            size = len(self.rows) if live + m <= len(self.rows) // 2 else max(2 * len(self.rows), live + m)
            self._move(size)
        sl = slice(self.end, self.end + m)
        self.rows[sl], self.sq[sl], self.values[sl] = rows, sq, values
        self.end += m

    def pop_oldest(self, k: int) -> None:
        self.start += k
        live = self.end - self.start
        if len(self.rows) > 16 and live < len(self.rows) // 4:  # shrink: memory follows the live rows
            self._move(max(16, 2 * live))

    def _move(self, size: int) -> None:
        """Copy the live rows to the front of fresh buffers of ``size`` rows (compaction, growth or shrink)."""
        live = slice(self.start, self.end)
        n = self.end - self.start
        for attr in ("rows", "sq", "values"):
            old = getattr(self, attr)
            new = np.empty((size, *old.shape[1:]))
            new[:n] = old[live]
            setattr(self, attr, new)
        self.start, self.end = 0, n

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.sq.nbytes + self.values.nbytes


def state_nbytes(state: Any) -> int:
    """Bytes of the numpy buffers held by a detector's per-account state (a dataclass of histories and arrays)."""
    if isinstance(state, np.ndarray):
        return state.nbytes
    if hasattr(state, "nbytes"):
        return int(state.nbytes)
    if hasattr(state, "__dataclass_fields__"):
        return sum(state_nbytes(getattr(state, f)) for f in state.__dataclass_fields__)
    return 8 if isinstance(state, (int, float)) else 0  # a counter (its value, not Python's object overhead)


def tuning_streams(x: np.ndarray, accounts: int, queries: int, seed: int) -> list[np.ndarray]:
    """``accounts`` streams of ``queries`` natural samples each (without replacement within a stream) from ``x``."""
    rng = np.random.default_rng(seed)
    return [x[rng.choice(len(x), size=min(queries, len(x)), replace=False)] for _ in range(accounts)]
