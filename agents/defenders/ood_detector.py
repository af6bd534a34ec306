"""OOD detector: ban an account whose share of out-of-distribution queries exceeds a threshold.

A query is out of distribution when its distance to its ``k``-th nearest neighbour among the owner's training
images exceeds ``tau``: the deep-nearest-neighbour score of Sun, Ming, Zhu & Li, "Out-of-Distribution Detection
with Deep Nearest Neighbors", ICML 2022 (https://arxiv.org/abs/2204.06507), here on L2-normalised pixels since
our images are 8x8 or 28x28 digits. ``tau`` is the ``1 - ood_quantile`` quantile of the score on the held-out
third of the owner's data, so that share of natural queries counts as OOD. (The victim's max-softmax baseline
of Hendrycks & Gimpel, https://arxiv.org/abs/1610.02136, was our first choice, but the victim is fitted on all
of the owner's data, so its confidence there is inflated and no unbiased ``tau`` can be set.) Seed 003 §V-C/§VIII-B
discusses the threat model in which all OOD traffic is considered malicious (e.g. Kariyappa et al.'s
adaptive misinformation gates on the same score); here an account is flagged at the first query, after a
warm-up, where its running share of OOD queries exceeds ``threshold``, calibrated to a target FPR.
Per-account state is two counters: memory and per-query cost do not grow with history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from extractgym.agents.detection import StatefulDetector, fast_dists, flat
from extractgym.agents.registry import register_defender

LEVELS = (0.5, 0.75, 1.0, 1.25, 1.5)


@dataclass
class OodState:
    n: int = 0
    ood: int = 0


@register_defender("ood")
class OodDetector(StatefulDetector):
    """kNN-distance OOD share per account.

    Args:
        data: the owner's training dataset (sets ``tau``; its train split tunes ``threshold``).
        threshold: the share of OOD queries above which an account is flagged; ``None`` calibrates.
        ood_quantile: share of held-out natural images that count as OOD (sets ``tau``).
        k: which nearest neighbour's distance is the score (Sun et al.: k = 50 on large sets; ours are small).
        warmup: queries before the first comparison.
        target_fpr, max_history, tune_accounts, tune_queries, seed: see :class:`~extractgym.agents.detection.StatefulDetector`.
    Knob ``level``: multiplies ``threshold`` (lower flags more).
    """

    flag_above = False
    default_threshold = 0.5

    def __init__(self, data: str = "digits", threshold: float | None = None, ood_quantile: float = 0.05, k: int = 5,
                 warmup: int = 20, target_fpr: float = 1e-4, max_history: int = 10_000, tune_accounts: int = 200,
                 tune_queries: int = 150, seed: int = 0) -> None:
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold (share of OOD queries) must be in [0, 1) or None, got {threshold}")
        if not 0.0 < ood_quantile < 1.0:
            raise ValueError(f"ood_quantile must be in (0, 1), got {ood_quantile}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed, LEVELS)
        if k > len(self.x_train):
            raise ValueError(f"k={k} exceeds the {len(self.x_train)} reference images of {data!r}")
        self.ood_quantile, self.k, self.warmup = ood_quantile, k, warmup
        self.reference = _normalised(flat(self.x_train))
        self.tau = float(np.quantile(self.score(self.x_tune), 1.0 - ood_quantile))

    def params(self) -> tuple:
        return (*super().params(), self.ood_quantile, self.k, self.warmup)

    def score(self, x: np.ndarray) -> np.ndarray:
        """Distance of each query to its k-th nearest reference image (normalised pixels)."""
        d = fast_dists(_normalised(flat(x)), self.reference)
        return np.partition(d, self.k - 1, axis=1)[:, self.k - 1]

    def new_state(self, service: str) -> OodState:
        return OodState()

    def update(self, state: OodState, x: np.ndarray, service: str) -> np.ndarray:
        """Running share of OOD queries after each query (``nan`` during the warm-up)."""
        ood = self.score(x) > self.tau
        n = state.n + np.arange(1, len(x) + 1)
        k = state.ood + np.cumsum(ood)
        state.n, state.ood = int(n[-1]), int(k[-1])
        return np.where(n >= self.warmup, k / n, np.nan)

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return np.nan_to_num(stats, nan=-np.inf) > threshold

    def reduce(self, stats: list[np.ndarray], state: OodState) -> float:
        s = np.concatenate(stats)
        s = s[~np.isnan(s)]
        return float(s.max()) if len(s) else -np.inf


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
