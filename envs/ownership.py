"""Ownership verification of a suspect model from an API's watermarks (DAWN's test), as the referee computes it.

A watermarking defence (``dawn``) answers a keyed-hash-chosen few queries with a wrong label, drawn uniformly from
the classes other than the one it would have served, and keeps them as :class:`Evidence`. The owner's test of a
suspect model: of the watermarked inputs on which the suspect disagrees with the served label, on how many does it
predict the watermark's wrong label? For a model trained without those answers (independently of the secret key)
the wrong label is a uniform draw from the ``C - 1`` classes, so among its ``d`` disagreements the matches are
``Binomial(d, 1 / (C - 1))``: the p-value is that tail. A surrogate trained on the watermarked answers copies them,
and the p-value collapses. (Szyller et al. state a similar binomial bound on an independent model reproducing the
watermarks; conditioning on the disagreements makes the null exact whatever the suspect's accuracy.)

How much evidence the test needs: even a suspect that reproduces every watermark it disagrees on reaches
``p < alpha`` only from ``min_matches = ceil(log(alpha) / log(1 / (C - 1)))`` watermarks on (4 for 10 classes at
``alpha = 1e-3``). At DAWN's rate ``r`` a client's queries carry about ``r`` watermarks each, so attribution is
possible only after about ``min_matches / r`` of its queries (800 at the published 0.5%), more for a surrogate that
forgets some. Each test reports both figures and says which side of them the evidence is on, instead of a bare
"not attributed".
"""

from __future__ import annotations

import hashlib
import math
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
    queries: int | None = None  # the owner's queries the defence saw on the service (None: unknown)
    rate: float | None = None  # the watermarking rate the queries were answered at (None: unknown)

    def __len__(self) -> int:
        return len(self.marked)

    def fingerprint(self) -> str:
        """A digest of the watermarked inputs (the referee caches model inputs by it)."""
        h = hashlib.blake2b(digest_size=16)
        for row in self.x:
            h.update(row.encode() + b"\0" if isinstance(row, str) else np.ascontiguousarray(row).tobytes())
        return h.hexdigest()


def min_matches(n_classes: int, alpha: float) -> int:
    """The fewest reproduced watermarks that can give ``p < alpha`` (every disagreement a match)."""
    chance = 1.0 / max(n_classes - 1, 1)
    if chance >= 1.0:
        return math.inf  # two classes: the wrong label is the only other one, a match proves nothing
    m = max(1, math.ceil(math.log(alpha) / math.log(chance)))
    while chance ** m >= alpha:  # guard the float rounding of the ratio
        m += 1
    return m


def ownership_test(pred: np.ndarray, evidence: Evidence) -> dict[str, Any]:
    """The verification test of a suspect's predicted classes ``pred`` on ``evidence.x`` (module docstring)."""
    pred = np.asarray(pred)
    disagree = int((pred != evidence.source).sum())
    matches = int((pred == evidence.marked).sum())
    chance = 1.0 / max(evidence.n_classes - 1, 1)
    p = float(binom.sf(matches - 1, disagree, chance)) if disagree else 1.0
    need = min_matches(evidence.n_classes, evidence.alpha)
    out = {"watermarks": len(evidence), "matches": matches, "disagreements": disagree, "chance": chance,
           "p_value": p, "attributed": bool(p < evidence.alpha), "min_watermarks": need}
    if evidence.queries is not None:
        out["queries"] = int(evidence.queries)
    if evidence.rate:
        out["queries_needed"] = math.ceil(need / evidence.rate) if math.isfinite(need) else None
    if out["attributed"]:
        out["verdict"] = "attributed"
    elif len(evidence) < need:
        when = f" (about {out['queries_needed']} queries at rate {evidence.rate:g})" if evidence.rate else ""
        out["verdict"] = (f"too little evidence: {len(evidence)} watermarks; the test can attribute only from "
                          f"{need}{when}")
    else:
        out["verdict"] = "not attributed: the model does not reproduce the watermarks beyond chance"
    return out
