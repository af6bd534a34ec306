"""A victim's answers (and a detector encoder's encodings) of the rows of known datasets, computed once per process:
what a scenario's ``answer_table`` turns on.

Benign customers and pool-based attackers send rows of fixed datasets (the attacker's pool, the customers' split),
every round of every episode, and the victim's forward pass on them is the largest cost of a round once the
surrogates are cheap. :class:`TabledVictim` answers such rows from an :class:`AnswerTable` (a vectorised lookup of
the row) and computes the others (blinded, synthetic or foreign queries) as the victim always does; a stateful
detector encodes them from a :class:`RowTable` of its encoder the same way (``similarity``).

**A pure function of the row.** The table is computed in blocks of :data:`BLOCK` rows (the last one padded), so
each row's answer does not depend on which batch it first arrived in, nor on the order episodes ask: a serial
episode and the same episode in a vector env read the same bits. Against the live victim, the answers agree to the
last bit for requests of about 20 rows or more (the CPU kernels of smaller batches round differently: measured on
digits-cnn, rows of batches of 1 to 7 differ in the last bits, of 20 and more they match), so a scenario that turns
the table on changes only the rounding of small requests' answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from extractgym.victims.datasets import get_dataset

BLOCK = 32
_TABLES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def weights_key(victim: Any) -> Any:
    """A fingerprint of a victim's weights (its name and object where it has no torch model), memoised on it."""
    key = getattr(victim, "_weights_key", None)
    if key is not None:
        return key
    model = getattr(victim, "model", None)
    if model is None:
        return (getattr(victim, "name", ""), id(victim))  # an unknown kind of victim: never shared
    import hashlib

    h = hashlib.blake2b(digest_size=8)
    for t in model.state_dict().values():
        h.update(t.detach().cpu().numpy().tobytes())
    key = (getattr(victim, "name", ""), h.hexdigest())
    try:
        victim._weights_key = key
    except AttributeError:
        pass
    return key


class RowTable:
    """``fn``'s outputs on the rows of ``sources`` (``(dataset, split)`` pairs), computed once per process for each
    ``key`` (what determines ``fn``: a victim's weights, an encoder's identity) and shared by every episode.

    A lookup has no Python loop per query: each row is hashed (its float32 bit patterns times fixed random odd
    integers, summed modulo 2^64: exact, whatever the batch), found by a binary search among the table's sorted
    hashes, and then compared in full with the table's row (a row that does not equal it is not in the table)."""

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], key: Any, sources: Sequence[tuple[str, str]]) -> None:
        parts = [_table(fn, key, dataset, split) for dataset, split in dict.fromkeys(sources)]
        self.rows = np.concatenate([r for r, _ in parts]) if parts else np.zeros((0, 0), dtype=np.float32)
        self.outputs = np.concatenate([o for _, o in parts]) if parts else None
        self._probe = np.random.default_rng(0x7AB1E).integers(1, 2**63, self.rows.shape[1], dtype=np.uint64) | 1
        hashes = self._hash(self.rows)
        self._order = np.argsort(hashes, kind="stable")
        self._sorted = hashes[self._order]

    def __len__(self) -> int:
        return len(self.rows)

    def lookup(self, x: np.ndarray) -> np.ndarray:
        """Row of the table for each query (-1 where it is not a known row)."""
        flat = np.asarray(x).reshape(len(x), -1)
        if not len(self.rows) or flat.shape[1] != self.rows.shape[1]:
            return np.full(len(flat), -1, dtype=np.int64)
        h = self._hash(flat)
        pos = np.minimum(np.searchsorted(self._sorted, h), len(self._sorted) - 1)
        cand = self._order[pos]
        found = (self._sorted[pos] == h) & (self.rows[cand] == flat).all(axis=1)
        return np.where(found, cand, -1)

    def _hash(self, flat: np.ndarray) -> np.ndarray:
        bits = np.ascontiguousarray(flat, dtype=np.float32).view(np.uint32).astype(np.uint64)
        return (bits * self._probe).sum(axis=1, dtype=np.uint64)

    def apply(self, fn: Callable[[np.ndarray], np.ndarray], x: Any) -> np.ndarray:
        """``fn(x)``, known rows read from the table and the others computed (in one call, in their order)."""
        x = np.asarray(x)
        if self.outputs is None or x.dtype != np.float32 or not len(x):
            return fn(x)
        rows = self.lookup(x)
        hit = rows >= 0
        if hit.all():
            return self.outputs[rows]
        out = np.empty((len(x), *self.outputs.shape[1:]), dtype=self.outputs.dtype)
        out[hit] = self.outputs[rows[hit]]
        out[~hit] = fn(x[~hit])
        return out


class AnswerTable(RowTable):
    """A victim's answers to the rows of ``sources``."""

    def __init__(self, victim: Any, sources: Sequence[tuple[str, str]]) -> None:
        super().__init__(victim.predict_proba, weights_key(victim), sources)


def _table(fn: Callable[[np.ndarray], np.ndarray], key: Any, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(flattened rows, ``fn``'s outputs on them computed in blocks of :data:`BLOCK`), once per process."""
    found = _TABLES.get((key, dataset, split))
    if found is None:
        x, _ = get_dataset(dataset).split(split)
        x = np.ascontiguousarray(x, dtype=np.float32)
        pad = -len(x) % BLOCK
        padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=np.float32)]) if pad else x
        outputs = np.concatenate([fn(padded[i:i + BLOCK]) for i in range(0, len(padded), BLOCK)])[:len(x)]
        rows = x.reshape(len(x), -1)
        for a in (rows, outputs):
            a.setflags(write=False)
        found = _TABLES[key, dataset, split] = (rows, outputs)
    return found


class TabledVictim:
    """A victim that answers known rows from an :class:`AnswerTable` and computes the rest (module docstring).

    It is the same victim to everyone else: name, classes, input spec and model are the wrapped victim's."""

    def __init__(self, victim: Any, table: AnswerTable) -> None:
        self.victim, self.table = victim, table
        self.name, self.n_classes, self.input_spec = victim.name, victim.n_classes, victim.input_spec
        self.model = getattr(victim, "model", None)
        self._weights_key = weights_key(victim)

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.table.apply(self.victim.predict_proba, x)

    def __repr__(self) -> str:
        return f"TabledVictim({self.victim!r}, {len(self.table)} rows)"
