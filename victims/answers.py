"""A victim's answers to the rows of known datasets, computed once per process: what a scenario's ``answer_table``
turns on.

Benign customers and pool-based attackers send rows of fixed datasets (the attacker's pool, the customers' split),
every round of every episode, and the victim's forward pass on them is the largest cost of a round once the
surrogates are cheap. :class:`TabledVictim` answers such rows from an :class:`AnswerTable` (a lookup by the row's
bytes) and computes the others (blinded, synthetic or foreign queries) as the victim always does.

**A pure function of the row.** The table is computed in blocks of :data:`BLOCK` rows (the last one padded), so
each row's answer does not depend on which batch it first arrived in, nor on the order episodes ask: a serial
episode and the same episode in a vector env read the same bits. Against the live victim, the answers agree to the
last bit for requests of about 20 rows or more (the CPU kernels of smaller batches round differently: measured on
digits-cnn, rows of batches of 1 to 7 differ in the last bits, of 20 and more they match), so a scenario that turns
the table on changes only the rounding of small requests' answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from extractgym.victims.datasets import get_dataset

BLOCK = 32
_TABLES: dict[tuple, tuple[dict[bytes, int], np.ndarray]] = {}


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


class AnswerTable:
    """A victim's outputs on the rows of ``sources`` (``(dataset, split)`` pairs), shared by every episode of the
    process that serves the same weights."""

    def __init__(self, victim: Any, sources: Sequence[tuple[str, str]]) -> None:
        self.index: dict[bytes, int] = {}
        parts = []
        for dataset, split in dict.fromkeys(sources):
            index, outputs = _table(victim, dataset, split)
            offset = sum(len(p) for p in parts)
            for k, i in index.items():
                self.index.setdefault(k, offset + i)
            parts.append(outputs)
        self.outputs = np.concatenate(parts) if parts else np.zeros((0, victim.n_classes))

    def __len__(self) -> int:
        return len(self.index)

    def lookup(self, x: np.ndarray) -> np.ndarray:
        """Row of the table for each query (-1 where it is not a known row)."""
        rows = np.ascontiguousarray(x)
        get = self.index.get
        return np.fromiter((get(r.tobytes(), -1) for r in rows), dtype=np.int64, count=len(rows))


def _table(victim: Any, dataset: str, split: str) -> tuple[dict[bytes, int], np.ndarray]:
    key = (weights_key(victim), dataset, split)
    found = _TABLES.get(key)
    if found is None:
        x, _ = get_dataset(dataset).split(split)
        x = np.ascontiguousarray(x, dtype=np.float32)
        pad = -len(x) % BLOCK
        padded = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=np.float32)]) if pad else x
        outputs = np.concatenate([victim.predict_proba(padded[i:i + BLOCK]) for i in range(0, len(padded), BLOCK)])
        outputs = outputs[:len(x)]
        outputs.setflags(write=False)
        index: dict[bytes, int] = {}
        for i, row in enumerate(x):
            index.setdefault(row.tobytes(), i)
        found = _TABLES[key] = (index, outputs)
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
        x = np.asarray(x)
        rows = self.table.lookup(x) if x.dtype == np.float32 and len(x) else np.full(len(x), -1)
        hit = rows >= 0
        if hit.all():
            return self.table.outputs[rows]
        out = np.empty((len(x), self.n_classes))
        out[hit] = self.table.outputs[rows[hit]]
        out[~hit] = self.victim.predict_proba(x[~hit])
        return out

    def __repr__(self) -> str:
        return f"TabledVictim({self.victim!r}, {len(self.table)} rows)"
