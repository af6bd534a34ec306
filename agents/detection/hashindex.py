"""Bounded inverted index from hash values to the newest stored items that contain them (Blacklight's index), and
a bounded set of exact-input digests.

:class:`HashIndex` stores items that are sets of up to ``k`` 64-bit hashes and answers, for each row of a batch of
such sets, the largest number of hashes it shares with any one stored item (and with the batch's earlier rows):
what a dict of posting lists ``hash -> [item ids]`` with a ``Counter`` over the hit lists answers (Li et al.'s
Blacklight, and the MIT reimplementation in the OARS authors' ``models/statefuldefense.py``), with bounded cost and
memory:

* Layout: open hashing in numpy, ``buckets`` rows of ``slots`` entries, each a 32-bit fingerprint (the hash's high
  half) and a 32-bit item id; a hash lives in bucket ``h mod buckets`` (its low bits), written round-robin, so a
  bucket keeps its ``slots`` newest entries. A *posting list is therefore capped*: a hash shared by very many items
  (a blank background window) is matched only against the newest ones that landed in its bucket. This is the one
  departure from a dict of unbounded lists, and what keeps the cost flat.
* Items older than the ``cap`` newest are dead: their ids fall outside the live window and lookups skip them, so
  eviction costs nothing. The table doubles (rebuilt from a ring of the stored hash sets) whenever it would be more
  than half full, up to what ``cap`` items need: a short-lived account's index stays small.
* Cost per query: ``k * slots`` entries read and one sort of them (the longest run of one id is the best match),
  whatever the history; the batch's rows are compared with each other by one sparse product.
* Memory per stored item, once the table has grown: ``k`` hashes in the ring (8 bytes each) and between ``2k`` and
  ``4k`` table entries (8 bytes each): at most ``40 k`` bytes (measured: 1,019 bytes at ``k = 30``, 10^5 items).
"""

from __future__ import annotations

import hashlib

import numpy as np
from scipy import sparse

_ID_MOD = 2**32


class HashIndex:
    """Items (sets of up to ``k`` hashes) remembered FIFO up to ``cap``; see the module docstring.

    Args:
        cap: items remembered (older ones are ignored at lookup).
        k: most hashes per item.
        slots: entries per bucket (the cap on a posting list within one bucket).
    """

    def __init__(self, cap: int, k: int, slots: int = 8) -> None:
        if cap < 1 or k < 1 or slots < 1:
            raise ValueError(f"cap, k and slots must be >= 1, got {cap}, {k}, {slots}")
        self.cap, self.k, self.slots = cap, k, slots
        self.n = 0  # items stored so far: ids 0..n-1 (mod 2^32); the live ones are the newest min(n, cap)
        self._ring = np.zeros((min(cap, 64), k), dtype=np.uint64)  # stored hash sets (0 = no hash), slot id % size
        self._alloc(_pow2(max(1, 2 * min(cap, 16) * k // slots)))

    def _alloc(self, buckets: int) -> None:
        self.buckets = buckets
        self._keys = np.zeros((buckets, self.slots), dtype=np.uint32)
        # empty slots hold an id 2^31 items away from now: never live (cap < 2^31), so no separate fill mask
        self._ids = np.full((buckets, self.slots), (self.n + 2**31) % _ID_MOD, dtype=np.uint32)
        self._writes = np.zeros(buckets, dtype=np.int64)  # entries ever written per bucket (round-robin position)

    def __len__(self) -> int:
        return min(self.n, self.cap)

    @property
    def nbytes(self) -> int:
        return self._ring.nbytes + self._keys.nbytes + self._ids.nbytes + self._writes.nbytes

    # -- queries ----------------------------------------------------------------------------------------------
    def match(self, hashes: np.ndarray) -> np.ndarray:
        """Per row of ``hashes`` (``(m, k)`` uint64, distinct within a row, 0 = no hash): the most hashes it shares
        with one stored item or with one earlier row of the batch (the batch is not stored; :meth:`add` it after)."""
        hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, self.k)
        m = len(hashes)
        best = np.zeros(m, dtype=np.int64)
        if m == 0:
            return best
        if self.n:
            bucket = (hashes & np.uint64(self.buckets - 1)).astype(np.intp)
            fp = (hashes >> np.uint64(32)).astype(np.uint32)
            keys, ids = self._keys[bucket], self._ids[bucket]  # (m, k, slots)
            age = np.uint32(self.n % _ID_MOD) - ids  # wraps in uint32: 1 = the newest item, 0 and >= 2^31 dead
            hit = (keys == fp[..., None]) & ((age - np.uint32(1)) < np.uint32(len(self)))
            if not hashes.all():
                hit &= (hashes != 0)[..., None]
            # per row, the stored item hit most often: the longest run of equal ids in the row's sorted hits (ages,
            # so misses sort last as 2^32 - 1)
            cand = np.sort(np.where(hit, age, np.uint32(_ID_MOD - 1)).reshape(m, -1), axis=1)
            same = (cand[:, 1:] == cand[:, :-1]) & (cand[:, 1:] != np.uint32(_ID_MOD - 1))
            run = np.cumsum(same, axis=1)
            run -= np.maximum.accumulate(np.where(same, 0, run), axis=1)  # reset at every change of id
            best = np.where(cand[:, 0] != np.uint32(_ID_MOD - 1), 1 + run.max(axis=1, initial=0), 0).astype(np.int64)
        if m > 1:
            np.maximum(best, _within_batch(hashes), out=best)
        return best

    def add(self, hashes: np.ndarray) -> None:
        """Store each row of ``hashes`` as a new item (ids ``n, n+1, ...``)."""
        hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, self.k)
        m = len(hashes)
        if m == 0:
            return
        live_after = min(self.n + m, self.cap)
        if live_after > len(self._ring):  # grow the ring by doubling, up to cap (items moved to slot id % size)
            size = min(self.cap, max(2 * len(self._ring), _pow2(live_after)))
            ring = np.zeros((size, self.k), dtype=np.uint64)
            old = np.arange(max(0, self.n - len(self)), self.n)
            ring[old % size] = self._ring[old % len(self._ring)]
            self._ring = ring
        ids = np.arange(self.n, self.n + m)
        self._ring[ids[-len(self._ring):] % len(self._ring)] = hashes[-len(self._ring):]
        need = _pow2(max(1, 2 * live_after * self.k // self.slots))
        if need > self.buckets:  # more than half full: double (or more) and re-insert the live items
            self.n += m
            self._alloc(need)
            live = np.arange(self.n - len(self), self.n)
            self._insert(self._ring[live % len(self._ring)], live)
        else:
            self._insert(hashes, ids)
            self.n += m

    def _insert(self, hashes: np.ndarray, ids: np.ndarray) -> None:
        rows, cols = np.nonzero(hashes)  # row-major: older items first
        if not len(rows):
            return
        h = hashes[rows, cols]
        bucket = (h & np.uint64(self.buckets - 1)).astype(np.intp)
        order = np.argsort(bucket, kind="stable")
        bucket, h, item = bucket[order], h[order], ids[rows[order]]
        start = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        size = np.diff(np.r_[start, len(bucket)])
        rank = np.arange(len(bucket)) - np.repeat(start, size)
        slot = (self._writes[bucket] + rank) % self.slots
        np.add.at(self._writes, bucket, 1)
        keep = rank >= np.repeat(size, size) - self.slots  # an overfull bucket keeps its newest entries
        bucket, slot = bucket[keep], slot[keep]
        self._keys[bucket, slot] = (h[keep] >> np.uint64(32)).astype(np.uint32)
        self._ids[bucket, slot] = (item[keep] % _ID_MOD).astype(np.uint32)


def _within_batch(hashes: np.ndarray) -> np.ndarray:
    """Per row: the most hashes it shares with one earlier row (one sparse product of the row-hash incidence)."""
    rows, cols = np.nonzero(hashes)
    if not len(rows):
        return np.zeros(len(hashes), dtype=np.int64)
    _, col = np.unique(hashes[rows, cols], return_inverse=True)
    inc = sparse.csr_matrix((np.ones(len(rows), dtype=np.int64), (rows, col)), shape=(len(hashes), col.max() + 1))
    shared = sparse.tril(inc @ inc.T, k=-1).tocsr()
    best = np.zeros(len(hashes), dtype=np.int64)
    if shared.nnz:
        r = np.repeat(np.arange(len(hashes)), np.diff(shared.indptr))
        np.maximum.at(best, r, shared.data)
    return best


def _pow2(n: int) -> int:
    return 1 << max(0, int(n - 1).bit_length())


def input_digests(x: np.ndarray) -> np.ndarray:
    """An 8-byte digest of each query's exact bytes (images) or UTF-8 text, as uint64."""
    out = np.empty(len(x), dtype=np.uint64)
    for i, row in enumerate(x):
        data = row.encode() if isinstance(row, str) else np.ascontiguousarray(row).tobytes()
        out[i] = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return out


class DigestSet:
    """The exact-input digests of the ``cap`` newest stored queries (a FIFO ring and a counter per digest)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._ring = np.zeros(min(cap, 64), dtype=np.uint64)
        self._count: dict[int, int] = {}
        self.n = 0

    def repeats(self, digests: np.ndarray) -> np.ndarray:
        """Which of ``digests`` equal a stored one or an earlier one of the batch (nothing is stored)."""
        seen: set[int] = set()
        out = np.zeros(len(digests), dtype=bool)
        for i, d in enumerate(digests.tolist()):
            out[i] = d in self._count or d in seen
            seen.add(d)
        return out

    def add(self, digests: np.ndarray) -> None:
        for d in digests.tolist():
            pos = self.n % self.cap
            if self.n >= self.cap:  # the oldest stored digest leaves
                old = int(self._ring[pos])
                left = self._count[old] - 1
                if left:
                    self._count[old] = left
                else:
                    del self._count[old]
            elif pos >= len(self._ring):  # grow by doubling, up to cap
                ring = np.zeros(min(self.cap, 2 * len(self._ring)), dtype=np.uint64)
                ring[:len(self._ring)] = self._ring
                self._ring = ring
            self._ring[pos] = d
            self._count[d] = self._count.get(d, 0) + 1
            self.n += 1

    @property
    def nbytes(self) -> int:
        return self._ring.nbytes + 16 * len(self._count)  # the dict's keys and counts, as numbers
