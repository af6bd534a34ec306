"""DAWN: watermark the API's answers, so a stolen surrogate can later be attributed (Szyller et al., ACM MM 2021).

Szyller, Atli, Marchal, Asokan, "DAWN: Dynamic Adversarial Watermarking of Neural Networks", ACM Multimedia 2021
(https://arxiv.org/abs/1906.00830). DAWN does not try to stop extraction. A keyed hash of each query picks a small
share (``rate``, under 0.5% in the paper) to answer with a wrong label; the owner keeps those queries per client. A
surrogate trained on the answers learns the wrong labels, which an independently trained model reproduces only by
chance, so when a suspect model surfaces the owner tests it on a client's watermarked queries and, if it matches
far beyond chance, attributes it to that client. The price is the wrongly answered share, paid by every customer.

Here: the choice is ``HMAC-BLAKE2b(key, query bytes)`` mapped to ``[0, 1)`` and compared with ``rate``, so it is
deterministic per key and input (a repeated query is watermarked again, with the same wrong label: an attacker cannot
spot the watermarks by asking twice) and independent of the account; the wrong class is drawn uniformly from the
others by the same hash, and the served probabilities swap the top class's and the wrong class's values (a confident,
plausible answer, still on the simplex). Shaping applies to every answer, the referee's utility audit included.
The owner's record is per account owner and service: :meth:`Dawn.ownership_evidence` hands the referee the watermark
set of an owner's accounts (:class:`~extractgym.envs.ownership.Evidence`); the referee evaluates the attacker's surrogate
snapshot on it in its own code and reports the test and its p-value (``summary.json``: ``ownership``). No attacker
code runs. The defender's reward does not credit the attribution (yet): it is an after-the-fact figure.

Departures: the paper's per-client mapping function (a keyed hash of the input with the client's identity) is one
key for all clients here, so watermarks do not depend on who asks; verification uses the per-owner record instead.
Knob ``rate`` (0 turns watermarking off).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender
from extractgym.envs.api import Account, DefenderView
from extractgym.envs.ownership import Evidence
from extractgym.envs.protocols import Knob

RATES = (0.0, 0.001, 0.0025, 0.005, 0.01, 0.02)


@register_defender("dawn")
class Dawn(DefenderBase):
    """Answer a keyed-hash-chosen ``rate`` of queries with a wrong label; keep them as ownership evidence.

    Args:
        rate: share of queries watermarked (the paper: under 0.5%).
        key: the owner's secret (an integer turned into the HMAC key).
        alpha: significance level at which the verification claims ownership (``p_value < alpha``).
        max_marks: watermarked queries kept per account owner (the oldest are dropped beyond it).
    Knob ``rate``.
    """

    def __init__(self, rate: float = 0.005, key: int = 0, alpha: float = 1e-3, max_marks: int = 10_000) -> None:
        if not (math.isfinite(rate) and 0.0 <= rate <= 0.5):
            raise ValueError(f"rate must be in [0, 0.5], got {rate}")
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if max_marks < 1:
            raise ValueError(f"max_marks must be >= 1, got {max_marks}")
        self.rate, self.alpha, self.max_marks = float(rate), float(alpha), max_marks
        self._key = hashlib.blake2b(str(key).encode(), digest_size=32).digest()
        self.knobs = (Knob.around("rate", RATES, float(rate)),)
        self.marks: dict[tuple[str, str], list[tuple[Any, int, int]]] = {}  # (owner, service) -> marks
        self.seen: dict[tuple[str, str], int] = {}  # (owner, service) -> queries answered
        self.rates: dict[tuple[str, str], float] = {}  # (owner, service) -> the last rate it was answered at

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.marks, self.seen, self.rates = {}, {}, {}

    def keyed(self, x: Any, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query: a uniform draw in [0, 1) and a class offset in [1, n_classes), both from the keyed hash."""
        u, offset = np.empty(len(x)), np.empty(len(x), dtype=np.int64)
        for i, row in enumerate(x):
            data = row.encode() if isinstance(row, str) else np.ascontiguousarray(row, dtype=np.float32).tobytes()
            h = hashlib.blake2b(data, key=self._key, digest_size=16).digest()
            u[i] = int.from_bytes(h[:8], "little") / 2.0**64
            offset[i] = 1 + int.from_bytes(h[8:], "little") % max(n_classes - 1, 1)
        return u, offset

    def shape(self, probs: np.ndarray, account: Account | None, x: np.ndarray | None,
              knobs: Mapping[str, Any]) -> np.ndarray:
        rate = float(knobs["rate"])
        n, c = probs.shape
        if account is not None and x is not None:  # a real answer: count what the owner asked
            key = (account.owner, account.service)
            self.seen[key] = self.seen.get(key, 0) + n
            self.rates[key] = rate
        if x is None or rate <= 0 or c < 2 or n == 0:
            return probs
        u, offset = self.keyed(x, c)
        rows = np.flatnonzero(u < rate)
        if not len(rows):
            return probs
        out = np.array(probs, dtype=np.float64)
        top = out[rows].argmax(axis=1)
        wrong = (top + offset[rows]) % c
        out[rows, top], out[rows, wrong] = out[rows, wrong], out[rows, top]
        if account is not None:  # a real answer (not the referee's audit): keep the evidence
            kept = self.marks.setdefault((account.owner, account.service), [])
            kept.extend(zip(np.asarray(x)[rows], wrong.tolist(), top.tolist(), strict=True))
            del kept[:-self.max_marks]
        return out

    def ownership_evidence(self, owner: str, service: str) -> Evidence | None:
        """The watermark set of ``owner``'s accounts on ``service``, for the referee's verification test (None if
        the owner never asked; an empty set if none of its queries was watermarked yet)."""
        kept = self.marks.get((owner, service), [])
        if not kept and not self.seen.get((owner, service)):
            return None
        x = (np.array([k[0] for k in kept], dtype=object if isinstance(kept[0][0], str) else np.float32) if kept
             else np.zeros(0, dtype=np.float32))
        return Evidence(x, np.array([k[1] for k in kept]), np.array([k[2] for k in kept]),
                        self.view.n_classes(service), self.alpha, queries=self.seen.get((owner, service)),
                        rate=self.rates.get((owner, service)))
