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

Calibration is exact rather than empirical: for natural in-distribution traffic each query is OOD independently
with probability ``p`` (``tau`` is a quantile of natural data), so the chance that an account's running share
ever exceeds a threshold within ``horizon`` queries is computed by dynamic programming over (queries, OOD
count), and the threshold is the smallest one whose chance is at most ``target_fpr``. ``p`` is the 95% upper
confidence bound of the rate at which fresh natural images exceed ``tau`` (``tau`` is an order statistic of the
held-out third, so that rate is Beta-distributed around ``ood_quantile``). The generic empirical calibration
(:func:`~extractgym.agents.detection.stateful.calibrate`, the other detectors' method) certifies rates down to
``1 - 0.05 ** (1 / n)`` only with ``n`` tuning streams (1.5% with 200); this exact model supports seed 003's 0.01%,
which ``target_fpr=None`` asks for here. (The former empirical quantile, before its bound was stated, flagged 0.5%
of benign 100-query digits accounts, 4% of the game's 25 in one episode, vs the 0.01% target.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from extractgym.agents.detection.distances import blas_threads, fast_dists, flat
from extractgym.agents.detection.stateful import StatefulDetector
from extractgym.agents.refs import ImageDefenderData
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
        horizon: account length (queries) over which the calibrated threshold keeps the flag chance of a natural
            account within ``target_fpr`` (beyond a few hundred queries the running share hardly moves).
        target_fpr, max_history, tune_accounts, tune_queries, seed: see :class:`~extractgym.agents.detection.stateful.StatefulDetector`.
    Knob ``level``: multiplies ``threshold`` (lower flags more).
    """

    flag_above = False
    default_threshold = 0.5

    def __init__(self, data: ImageDefenderData = "digits", threshold: float | None = None, ood_quantile: float = 0.05, k: int = 5,
                 warmup: int = 20, target_fpr: float | None = None, horizon: int = 1000, max_history: int = 10_000,
                 tune_accounts: int = 200, tune_queries: int = 150, seed: int = 0) -> None:
        if threshold is not None and not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold (share of OOD queries) must be in [0, 1) or None, got {threshold}")
        if not 0.0 < ood_quantile < 1.0:
            raise ValueError(f"ood_quantile must be in (0, 1), got {ood_quantile}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        if horizon < warmup:
            raise ValueError(f"horizon must be >= warmup ({warmup}), got {horizon}")
        if horizon > MAX_HORIZON:
            raise ValueError(f"horizon must be <= {MAX_HORIZON} (calibration costs O(horizon^2): ~0.1 s at 1,000, "
                             f"~30 s at 20,000), got {horizon}")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed, LEVELS)
        if k > len(self.x_train):
            raise ValueError(f"k={k} exceeds the {len(self.x_train)} reference images of {data!r}")
        self.ood_quantile, self.k, self.warmup, self.horizon = ood_quantile, k, warmup, horizon
        self.reference: np.ndarray | None = None

    def prepare(self, service: str) -> None:
        """The reference set, the OOD score threshold ``tau`` and the per-query OOD probability bound (once)."""
        if self.reference is not None:
            return
        self.reference = _normalised(flat(self.x_train))
        tune_scores = self.score(self.x_tune)
        self.tau = float(np.quantile(tune_scores, 1.0 - self.ood_quantile))
        above, n = int((tune_scores > self.tau).sum()), len(tune_scores)
        from scipy.stats import beta  # scipy.stats costs ~1.5 s to import: only when a detector is prepared

        self.p_ood = float(beta.ppf(0.95, above + 1, max(n - above, 1)))  # P(fresh natural image is OOD), 95% bound

    def params(self) -> tuple:
        return (*super().params(), self.ood_quantile, self.k, self.warmup, self.horizon)

    def tune(self, service: str) -> float:
        """The smallest share whose chance of flagging a natural account (within ``horizon`` queries) is at most
        ``target_fpr`` (``None``: seed 003's 0.01%, which the exact model supports), by :func:`flag_probability`
        with ``p = p_ood`` (bisection on a monotone step function)."""
        target = DEFAULT_TARGET if self.target_fpr is None else self.target_fpr
        lo, hi = 0.0, 1.0  # flag_probability(hi) = 0 <= target: a share never exceeds 1
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if flag_probability(mid, self.p_ood, self.warmup, self.horizon) <= target:
                hi = mid
            else:
                lo = mid
        self.thresholds[service] = self.threshold = hi
        self.fpr_bounds[service] = self.fpr_bound = target
        return hi

    def score(self, x: np.ndarray) -> np.ndarray:
        """Distance of each query to its k-th nearest reference image (normalised pixels)."""
        if self.reference is None:
            self.prepare("")
        with blas_threads():  # see blas_threads: a multithreaded BLAS made batch 64 60x slower per query
            d = fast_dists(_normalised(flat(x)), self.reference)
        return np.partition(d, self.k - 1, axis=1)[:, self.k - 1]

    def new_state(self, service: str) -> OodState:
        return OodState()

    def update(self, state: OodState, x: np.ndarray, service: str, threshold: float) -> np.ndarray:
        """Running share of OOD queries after each query (``nan`` during the warm-up)."""
        ood = self.score(x) > self.tau
        n = state.n + np.arange(1, len(x) + 1)
        k = state.ood + np.cumsum(ood)
        state.n, state.ood = int(n[-1]), int(k[-1])
        return np.where(n >= self.warmup, k / n, np.nan)

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return np.nan_to_num(stats, nan=-np.inf) > threshold

    def pressure(self, stat: float, threshold: float) -> float:
        return float("nan") if np.isnan(stat) else float(stat) / max(threshold, 1e-12)

    def reduce(self, stats: list[np.ndarray], state: OodState) -> float:
        s = np.concatenate(stats)
        s = s[~np.isnan(s)]
        return float(s.max()) if len(s) else -np.inf


MAX_HORIZON = 20_000
DEFAULT_TARGET = 1e-4  # seed 003's 0.01%: the exact model supports it (``target_fpr=None`` asks for this)


def flag_probability(threshold: float, p: float, warmup: int, horizon: int) -> float:
    """Chance that a stream of independent Bernoulli(``p``) OOD indicators has a running share ``k / n`` above
    ``threshold`` at some ``n`` in ``[warmup, horizon]`` (the detector's flag rule): exact, by dynamic
    programming over the OOD count of the accounts not flagged yet."""
    alive = np.zeros(horizon + 1)  # alive[k]: P(k OOD among the first n queries, not flagged so far)
    alive[0] = 1.0
    flagged = 0.0
    for n in range(1, horizon + 1):
        # past the warm-up, counts above threshold * n were zeroed: only the lower part can be non-zero
        hi = n if n <= warmup else max(0, min(n, int(math.floor(threshold * n)) + 2))
        alive[1:hi + 1] = alive[1:hi + 1] * (1.0 - p) + alive[:hi] * p
        alive[0] *= 1.0 - p
        if n >= warmup:
            over = int(math.floor(threshold * n))  # counts k > over might be flagged; check with the rule itself
            ks = np.arange(over, n + 1)
            bad = ks[ks / n > threshold]
            if len(bad):
                flagged += float(alive[bad].sum())
                alive[bad] = 0.0
    return flagged


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
