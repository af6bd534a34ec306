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
``delta`` is calibrated by default (:func:`extractgym.agents.detection.stateful.calibrate`) instead of PRADA's
per-model hand-tuned value.

Cost per query (``tests/test_detectors.py`` checks both parts against a plain brute-force PRADA; the victim's
forward for the query's class comes on top):

* ``d_min``: one BLAS scan of ``G_c`` only (the sets are stored per class, contiguous), then an exact recheck
  of the near-ties (:func:`~extractgym.agents.detection.distances.min_dists`), equal to brute force bit for bit. This
  part is linear in ``|G_c|``, bounded by ``max_history``. Measured alternatives: faiss' flat index was no
  faster than numpy's BLAS (its graph and IVF indexes are approximate); an exact k-d tree (scipy's cKDTree,
  static) answered single queries 7x faster on 4,500 distinct mnist8x8 rows and 40x faster on 10,000
  near-duplicate digits, but at batch 64 it was 5x slower on the distinct rows; it would need a dynamic forest
  per class for the FIFO sets, and at the default cap (5,000 rows in all, ~500 a class) the scan costs tens of
  µs, so it was not adopted.
* ``W``: :class:`NormalityWindow` keeps ``D`` sorted by binary-search insertion and caches the Shapiro-Wilk
  coefficients per length (fixed once ``D`` is full), so each test is one ``O(|D|)`` memory move and dot
  product instead of scipy's sort and coefficient computation (~50 µs at 10^5 values vs ~15 ms); ``W`` equals
  ``scipy.stats.shapiro`` to ~1e-12 (same algorithm, AS R94, same coefficients; only summation order differs).
  While ``D`` is still growing, each test's length is new and its coefficients cost O(|D|) (~1 ms at 10^5).

Memory per account: ``G`` holds up to ``max_history`` rows of ``dim + 2`` float64 (buffers within 4x that, see
:class:`~extractgym.agents.detection.history.GroupedHistory`) and ``D`` two floats a value: 3 to 5 MiB at the default
5,000 on 8x8 digits.

``benchmarks/bench_detector_latency.py`` reports the figures (per-query µs at 10^2..10^5 history entries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from extractgym.agents.detection.distances import blas_threads, flat, min_dists, pair_dists
from extractgym.agents.detection.history import GroupedHistory
from extractgym.agents.detection.stateful import StatefulDetector
from extractgym.agents.refs import ImageDefenderData
from extractgym.agents.registry import register_defender

LEVELS = (0.9, 0.95, 1.0, 1.02, 1.05)


# -- Shapiro-Wilk W, incrementally ----------------------------------------------------------------
# Royston, "Remark AS R94", Applied Statistics 44 (1995): the algorithm of scipy.stats.shapiro (scipy's
# _ansari_swilk_statistics.swilk), whose polynomial coefficients and normal quantile (AS 111) are kept here
# so that W matches scipy's to rounding.
_C1 = (0.0, 0.221157, -0.147981, -0.207119e1, 0.4434685e1, -0.2706056e1)
_C2 = (0.0, 0.42981e-1, -0.293762, -0.1752461e1, 0.5682633e1, -0.3582633e1)


def _poly(c: tuple[float, ...], x: float) -> float:
    """AS R94's ``poly``: coefficients given as ``[c0, cn, ..., c1]``."""
    if len(c) == 1:
        return c[0]
    p = x * c[-1]
    for ci in reversed(c[1:-1]):
        p = (p + ci) * x
    return c[0] + p


def _ppnd(p: np.ndarray) -> np.ndarray:
    """AS 111's normal quantile (the one AS R94 uses), vectorised: each branch on its own values only."""
    q = p - 0.5
    out = np.empty_like(q)
    mid = np.abs(q) <= 0.42
    qm = q[mid]
    r = qm * qm
    out[mid] = (qm * (((-25.44106049637 * r + 41.39119773534) * r + -18.61500062529) * r + 2.50662823884)
                / ((((3.13082909833 * r + -21.06224101826) * r + 23.08336743743) * r + -8.47351093090) * r + 1.0))
    tails = ~mid
    if tails.any():
        pt, qt = p[tails], q[tails]
        t = np.where(qt > 0, 1.0 - pt, pt)
        with np.errstate(divide="ignore"):
            t = np.sqrt(-np.log(t))
        v = (((2.32121276858 * t + 4.85014127135) * t + -2.29796479134) * t + -2.78718931138)
        v = v / ((1.63706781897 * t + 3.54388924762) * t + 1.0)
        out[tails] = np.where(qt < 0, -v, v)
    return out


@lru_cache(maxsize=16)
def swilk_coefficients(n: int) -> tuple[np.ndarray, float]:
    """The centred Shapiro-Wilk coefficients for ``n`` sorted values (length ``n``) and their sum of squares.

    Cached per ``n`` (a full window always has the same ``n``; accounts growing side by side share them).
    """
    if n < 3:
        raise ValueError(f"Shapiro-Wilk needs at least 3 values, got {n}")
    n2 = n // 2
    if n == 3:
        half = np.array([math.sqrt(2) / 2])
    else:
        m = _ppnd((np.arange(1, n2 + 1) - 0.375) / (n + 0.25))
        summ2 = 2.0 * float(m @ m)
        ssumm2, rsn = math.sqrt(summ2), 1.0 / math.sqrt(n)
        a1 = _poly(_C1, rsn) - m[0] / ssumm2
        if n > 5:
            a2 = -m[1] / ssumm2 + _poly(_C2, rsn)
            fac = math.sqrt((summ2 - 2 * m[0] ** 2 - 2 * m[1] ** 2) / (1 - 2 * a1 ** 2 - 2 * a2 ** 2))
            half = m * (-1.0 / fac)
            half[1] = a2
        else:
            fac = math.sqrt((summ2 - 2 * m[0] ** 2) / (1 - 2 * a1 ** 2))
            half = m * (-1.0 / fac)
        half[0] = a1
    a = np.zeros(n)
    a[:n2] = -half  # lower half negative, upper half positive, the middle (odd n) zero
    a[n - n2:] = half[::-1]
    a -= a.mean()
    a.setflags(write=False)
    return a, float(a @ a)


class NormalityWindow:
    """PRADA's distance list ``D``: the newest ``cap`` values (FIFO) and their Shapiro-Wilk ``W``.

    The values are kept twice: in arrival order (a ring, for eviction) and sorted (insertion by binary search,
    one ``memmove``); ``W`` is two O(n) passes over the sorted values (centring, then the dot products with the
    cached coefficients). Memory: ``2 * cap`` floats.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._ring = np.empty(min(cap, 64))  # arrival order; slot _head is the oldest once full
        self._sorted = np.empty(min(cap, 64))
        self._n = self._head = 0

    def __len__(self) -> int:
        return self._n

    @property
    def values(self) -> np.ndarray:
        """The window's values, sorted."""
        return self._sorted[:self._n]

    @property
    def nbytes(self) -> int:
        return self._ring.nbytes + self._sorted.nbytes

    def push(self, v: float) -> None:
        """Append one value (evicting the oldest when full)."""
        v = float(v)
        n, buf = self._n, self._sorted
        if n < self.cap:
            if n == len(buf):  # grow by doubling, up to cap
                size = min(self.cap, 2 * n)
                self._sorted, self._ring = _grown(buf, n, size), _grown(self._ring, n, size)
                buf = self._sorted
            q = int(np.searchsorted(buf[:n], v))
            buf[q + 1:n + 1] = buf[q:n]
            buf[q] = v
            self._ring[n] = v
            self._n = n + 1
        else:  # full: the oldest leaves, v enters; only the values between the two positions move
            old = self._ring[self._head]
            self._ring[self._head] = v
            self._head = (self._head + 1) % self.cap
            p = int(np.searchsorted(buf[:n], old))
            q = int(np.searchsorted(buf[:n], v))
            if q > p:
                buf[p:q - 1] = buf[p + 1:q]
                buf[q - 1] = v
            else:
                buf[q + 1:p + 1] = buf[q:p]
                buf[q] = v

    def extend(self, values: np.ndarray) -> None:
        """Append many values at once (no ``W`` in between): one sort instead of one insertion each."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if len(values) < 64:
            for v in values:
                self.push(v)
            return
        keep = np.concatenate([self._ring[(self._head + np.arange(self._n)) % len(self._ring)], values])[-self.cap:]
        size = min(self.cap, max(64, 2 * len(keep)))  # the slack that growth by doubling leaves
        self._ring, self._sorted = np.empty(size), np.empty(size)
        self._ring[:len(keep)] = keep
        self._sorted[:len(keep)] = np.sort(keep)
        self._n, self._head = len(keep), 0

    def w(self) -> float:
        """Shapiro-Wilk ``W`` of the window (as ``scipy.stats.shapiro(values).statistic``; needs 3 values)."""
        n = self._n
        y = self._sorted[:n]
        if y[-1] - y[0] < 1e-19:  # zero range: scipy returns W = 1 (and warns)
            return 1.0
        a, ssa = swilk_coefficients(n)
        # centred on the median first, then on the mean (two passes: no cancellation for values bunched far
        # from zero or a few ulps apart); O(n), the order of the insertion's memmove. Running sums would be
        # O(1) here but keep the rounding error of values long evicted (a review found W = 0.04 vs scipy's 0.99).
        c = y - y[n // 2]
        c -= c.mean()
        ssx = float(c @ c)
        if ssx <= 0.0:
            return 1.0
        sax = float(a @ c)
        return min(1.0, sax * sax / (ssa * ssx))


def _grown(buf: np.ndarray, n: int, size: int) -> np.ndarray:
    new = np.empty(size)
    new[:n] = buf[:n]
    return new


@dataclass
class PradaState:
    growing: GroupedHistory  # the growing sets G_c, one group per class, at most max_history rows in all
    sums: np.ndarray  # per class: count, sum and sum of squares of the growing set's distances
    dists: NormalityWindow  # the distance list D, FIFO-capped, with its Shapiro-Wilk W


@register_defender("prada")
class PradaDetector(StatefulDetector):
    """PRADA (Shapiro-Wilk on per-account minimum query distances).

    Args:
        data: the owner's training dataset (its ``train`` split tunes the threshold).
        threshold: ``delta``; ``None`` calibrates it at ``bind`` to ``target_fpr`` on benign tuning streams.
        target_fpr: false-positive rate the calibrated threshold certifies (seed 003: 0.01%; ``None``: the lowest
            the tuning streams support, see :func:`~extractgym.agents.detection.stateful.calibrate`).
        min_samples: distances needed before the first normality test (PRADA: 100).
        max_history: cap on the growing set and the distance list per account (memory bound).
        tune_accounts, tune_queries: tuning streams (accounts, queries each) drawn from ``data``'s train split.
        seed: the tuning streams' sampling seed.
    Knob ``level``: multiplies ``delta`` (higher flags more).
    """

    flag_above = True
    default_threshold = 0.95
    victim_dependent = True

    def __init__(self, data: ImageDefenderData = "digits", threshold: float | None = None, target_fpr: float | None = None,
                 min_samples: int = 100, max_history: int = 5000, tune_accounts: int = 200,
                 tune_queries: int = 150, seed: int = 0) -> None:
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold (PRADA's delta on the Shapiro-Wilk W) must be in (0, 1], got {threshold}")
        if min_samples < 3:
            raise ValueError(f"min_samples must be >= 3 (Shapiro-Wilk needs 3 values), got {min_samples}")
        if max_history < min_samples:
            raise ValueError(f"max_history ({max_history}) must be >= min_samples ({min_samples}): the distance "
                             f"list could never reach the size PRADA tests at")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed, LEVELS)
        self.min_samples = min_samples

    def params(self) -> tuple:
        return (*super().params(), self.min_samples)

    def new_state(self, service: str) -> PradaState:
        return PradaState(GroupedHistory(self.max_history, int(np.prod(self.x_train.shape[1:]))),
                          np.zeros((self.view.n_classes(service), 3)), NormalityWindow(self.max_history))

    def update(self, state: PradaState, x: np.ndarray, service: str, threshold: float) -> np.ndarray:
        xs = flat(x)
        cls = self.view.victim_proba(service, x).argmax(axis=1)
        b = len(xs)
        # vectorised part: every query's distance to the growing set of its class, and to the batch
        to_hist = np.full(b, np.inf)
        with blas_threads():
            for c in np.unique(cls):
                mine = cls == c
                to_hist[mine] = min_dists(xs[mine], state.growing.rows(c), state.growing.sq_norms(c))
        intra = pair_dists(xs, xs)
        # sequential part: which queries join the growing sets, and the test after each query
        joined = np.zeros(b, dtype=bool)
        new_d = np.full(b, np.nan)
        w = np.full(b, np.nan)
        dists = state.dists
        last = np.nan  # W of D as it stands (D only changes when a query adds a distance)
        for i in range(b):
            c = cls[i]
            earlier = joined[:i] & (cls[:i] == c)
            d = min(to_hist[i], intra[i, :i][earlier].min()) if earlier.any() else to_hist[i]
            if not np.isfinite(d):  # first query of its class: it founds G_c
                joined[i] = True
            else:
                n, s1, s2 = state.sums[c]
                bar = s1 / n - np.sqrt(max(s2 / n - (s1 / n) ** 2, 0.0)) if n else -np.inf
                dists.push(d)
                last = np.nan
                if d > bar:
                    joined[i], new_d[i] = True, d
                    state.sums[c] += (1.0, d, d * d)
            if len(dists) >= self.min_samples:
                if np.isnan(last):
                    last = dists.w()
                w[i] = last
        state.growing.append(xs[joined], cls[joined], new_d[joined])
        return w

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return np.nan_to_num(stats, nan=np.inf) < threshold

    def pressure(self, stat: float, threshold: float) -> float:
        """``(1 - W) / (1 - delta)``: 1 when ``W`` reaches ``delta`` (NaN before ``min_samples``)."""
        return float("nan") if np.isnan(stat) else (1.0 - float(stat)) / max(1.0 - threshold, 1e-12)

    def reduce(self, stats: list[np.ndarray], state: PradaState) -> float:
        w = np.concatenate(stats)
        w = w[~np.isnan(w)]
        return float(w.min()) if len(w) else np.inf
