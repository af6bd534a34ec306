"""Ownership verification of a suspect model from an API's watermarks (DAWN's test), as the referee computes it.

A watermarking defence (``dawn``) answers a keyed-hash-chosen few queries with a wrong label, drawn uniformly from
the classes other than the one it would have served, and keeps them as :class:`Evidence`. The owner's test of a
suspect model: of the watermarked inputs on which the suspect disagrees with the served label, on how many does it
predict the watermark's wrong label? For a model trained without those answers (independently of the secret key)
the wrong label is a uniform draw from the ``C - 1`` classes, so among its ``d`` disagreements the matches are
``Binomial(d, 1 / (C - 1))``: the p-value is that tail. A surrogate trained on the watermarked answers copies them,
and the p-value collapses. (Szyller et al. state a similar binomial bound on an independent model reproducing the
watermarks; conditioning on the disagreements makes the null exact whatever the suspect's accuracy.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom


@dataclass(frozen=True, eq=False)
class Evidence:
    """A watermark set: the inputs, the wrong labels served for them, the labels that would have been served
    otherwise, the number of classes, and the significance level at which ownership is claimed."""

    x: Any
    marked: np.ndarray
    source: np.ndarray
    n_classes: int
    alpha: float = 1e-3

    def __len__(self) -> int:
        return len(self.marked)

    def fingerprint(self) -> str:
        """A digest of the watermarked inputs (the referee caches model inputs by it)."""
        h = hashlib.blake2b(digest_size=16)
        for row in self.x:
            h.update(row.encode() + b"\0" if isinstance(row, str) else np.ascontiguousarray(row).tobytes())
        return h.hexdigest()


def ownership_test(pred: np.ndarray, evidence: Evidence) -> dict[str, Any]:
    """The verification test of a suspect's predicted classes ``pred`` on ``evidence.x`` (module docstring)."""
    pred = np.asarray(pred)
    disagree = int((pred != evidence.source).sum())
    matches = int((pred == evidence.marked).sum())
    chance = 1.0 / max(evidence.n_classes - 1, 1)
    p = float(binom.sf(matches - 1, disagree, chance)) if disagree else 1.0
    return {"watermarks": len(evidence), "matches": matches, "disagreements": disagree, "chance": chance,
            "p_value": p, "attributed": bool(p < evidence.alpha)}
