"""PRADA: per account, test whether the minimum distances of new queries to earlier ones look normal.

Juuti et al., "PRADA: Protecting against DNN Model Stealing Attacks", EuroS&P 2019
(https://arxiv.org/abs/1805.02628), Algorithm 1; seed 003 §V-A and seed 004 §VI describe it as the baseline
stateful detector. For each account and each class ``c`` predicted by the victim, PRADA keeps a growing set
``G_c``. A new query ``x`` of class ``c`` gets ``d_min = min_{y in G_c} ||x - y||_2`` appended to the
account's distance list ``D``; it joins ``G_c`` if ``d_min > mean(D_Gc) - std(D_Gc)`` (the distances of the
set's own members). Once ``D`` holds ``min_samples`` values, the Shapiro-Wilk statistic ``W`` of ``D`` is
computed after every query and the account is flagged when ``W < delta``: natural queries give roughly
normal distances, synthetic (e.g. Jacobian-augmented) ones do not.

Departures, for bounded memory: ``G`` and ``D`` keep only the newest ``max_history`` entries (FIFO), and
``mean``/``std`` of ``D_Gc`` are running figures over every member ever added (O(1) per query).
``delta`` is calibrated by default (:func:`extractgym.agents.detection.calibrate`) instead of PRADA's
per-model hand-tuned value.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.stats import shapiro

from extractgym.agents.detection import History, StatefulDetector, flat, min_dists, pair_dists
from extractgym.agents.registry import register_defender

LEVELS = (0.9, 0.95, 1.0, 1.02, 1.05)


@dataclass
class PradaState:
    growing: History
    sums: np.ndarray  # per class: count, sum and sum of squares of the growing set's distances
    dists: History  # the distance list D (values only), FIFO-capped


@register_defender("prada")
class PradaDetector(StatefulDetector):
    """PRADA (Shapiro-Wilk on per-account minimum query distances).

    Args:
        data: the owner's training dataset (its ``train`` split tunes the threshold).
        threshold: ``delta``; ``None`` calibrates it at ``bind`` to ``target_fpr`` on benign tuning streams.
        target_fpr: share of benign tuning accounts the calibrated threshold may flag (seed 003: 0.01%).
        min_samples: distances needed before the first normality test (PRADA: 100).
        max_history: cap on the growing set and the distance list per account (memory bound).
        tune_accounts, tune_queries: tuning streams (accounts, queries each) drawn from ``data``'s train split.
        seed: the tuning streams' sampling seed.
    Knob ``level``: multiplies ``delta`` (higher flags more).
    """

    flag_above = True
    default_threshold = 0.95
    victim_dependent = True

    def __init__(self, data: str = "digits", threshold: float | None = None, target_fpr: float = 1e-4,
                 min_samples: int = 100, max_history: int = 5000, tune_accounts: int = 200,
                 tune_queries: int = 150, seed: int = 0) -> None:
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold (PRADA's delta on the Shapiro-Wilk W) must be in (0, 1], got {threshold}")
        if min_samples < 3:
            raise ValueError(f"min_samples must be >= 3 (Shapiro-Wilk needs 3 values), got {min_samples}")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed, LEVELS)
        self.min_samples = min_samples

    def params(self) -> tuple:
        return (*super().params(), self.min_samples)

    def new_state(self, service: str) -> PradaState:
        return PradaState(History(self.max_history, int(np.prod(self.x_train.shape[1:]))),
                          np.zeros((self.view.n_classes(service), 3)), History(self.max_history, 0))

    def update(self, state: PradaState, x: np.ndarray, service: str) -> np.ndarray:
        xs = flat(x)
        cls = self.view.victim_proba(service, x).argmax(axis=1)
        b = len(xs)
        # vectorised part: every query's distance to the growing set of its class, and to the batch
        to_hist = np.full(b, np.inf)
        for c in np.unique(cls):
            mine = cls == c
            members = state.growing.labels == c
            to_hist[mine] = min_dists(xs[mine], state.growing.rows[members], state.growing.sq_norms[members])
        intra = pair_dists(xs, xs)
        # sequential part: which queries join the growing sets, and the test after each query
        joined = np.zeros(b, dtype=bool)
        new_d = np.full(b, np.nan)
        w = np.full(b, np.nan)
        dists = state.dists
        none = np.empty((1, 0))
        for i in range(b):
            c = cls[i]
            earlier = joined[:i] & (cls[:i] == c)
            d = min(to_hist[i], intra[i, :i][earlier].min()) if earlier.any() else to_hist[i]
            if not np.isfinite(d):  # first query of its class: it founds G_c
                joined[i] = True
            else:
                n, s1, s2 = state.sums[c]
                bar = s1 / n - np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)) if n else -np.inf
                dists.append(none, values=np.array([d]))
                if d > bar:
                    joined[i], new_d[i] = True, d
                    state.sums[c] += (1.0, d, d * d)
            if len(dists) >= self.min_samples:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # N > 5000 warns about the p-value; we use W only
                    w[i] = shapiro(dists.values).statistic
        state.growing.append(xs[joined], cls[joined], new_d[joined])
        return w

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return np.nan_to_num(stats, nan=np.inf) < threshold

    def reduce(self, stats: list[np.ndarray], state: PradaState) -> float:
        w = np.concatenate(stats)
        w = w[~np.isnan(w)]
        return float(w.min()) if len(w) else np.inf
