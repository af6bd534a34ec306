"""Plumbing shared by the stateful detectors (``prada``, ``similarity``, ``vae``, ``ood``).

A detector keeps per-account state, keyed by account id, bounded by ``max_history`` rows, and dropped when
it bans the account. Each detector turns a batch of new queries into one *statistic* per query
(:meth:`StatefulDetector.update`, vectorised over the batch) and flags the first query whose statistic
crosses the threshold; :meth:`StatefulDetector.screen` serves the queries before it and bans the account.

Calibration (seed 003 §VI, §VIII: thresholds tuned so that 0.01% of benign users are flagged):
every detector reduces a whole benign stream to its *critical value* -- the threshold at which that stream
would just be flagged -- and :func:`calibrate` picks the threshold that flags at most ``target_fpr`` of the
tuning streams. The orientation is per detector: ``flag_above`` means "flagged iff threshold > critical"
(PRADA's ``delta`` on the Shapiro-Wilk W, the similarity radius), otherwise "flagged iff threshold <
critical" (the VAE credibility multiplier, the OOD share). By default a detector calibrates itself at
``bind`` on streams of natural queries from its ``data`` train split (the owner's data; benign customers
and the referee use the pool and test splits, so the detector is never evaluated on what it tuned on).
A detector whose statistic has a known null distribution may compute its threshold instead (``ood``:
:meth:`StatefulDetector.tune`).

Cost per query (``benchmarks/bench_detector_latency.py``): ``vae`` and ``ood`` keep O(1) counters, flat.
``prada`` (exact nearest distance to the growing set of the query's class, incremental Shapiro-Wilk) and
``similarity`` (exact range count) are linear in the account's history with small constants, and bounded by
``max_history`` (memory too): their searches (:func:`min_dists`, :func:`count_within`) are one BLAS product
plus an exact recheck of near-ties, equal to brute force. Their BLAS runs on ``EXTRACTGYM_TORCH_THREADS``
threads (:func:`blas_threads`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extractgym.agents.base import DefenderBase
from extractgym.envs.api import Account, DefenderView
from extractgym.envs.protocols import Knob
from extractgym.victims.cache import cache_dir, cache_key
from extractgym.victims.datasets import get_dataset
from extractgym.victims.training import SMALL_MODEL_THREADS

LEVELS = (0.5, 0.8, 1.0, 1.25, 2.0)

_CALIBRATION_MEMO: dict[str, float] = {}


# -- bounded history ------------------------------------------------------------------------------
class History:
    """A FIFO ring buffer of at most ``cap`` float64 rows (plus optional int labels and float values).

    Memory is at most ``cap * (dim + 2)`` numbers however long the account lives (storage grows by doubling up
    to ``cap``, so a short-lived account costs little); once full, the oldest rows are overwritten.
    Appending is O(batch) amortised. ``rows``, ``labels`` and ``values`` are views of the filled part (in slot
    order, not arrival order: nothing here depends on order).
    """

    def __init__(self, cap: int, dim: int) -> None:
        self.cap, self.dim = cap, dim
        self._rows = np.empty((min(cap, 64), dim))
        self._labels = np.empty(min(cap, 64), dtype=np.int64)
        self._values = np.empty(min(cap, 64))
        self._sq = np.empty(min(cap, 64))  # squared row norms, kept for the distance expansion
        self._n = 0  # filled slots
        self._next = 0  # slot the next row overwrites once full

    def __len__(self) -> int:
        return self._n

    @property
    def rows(self) -> np.ndarray:
        return self._rows[:self._n]

    @property
    def labels(self) -> np.ndarray:
        return self._labels[:self._n]

    @property
    def values(self) -> np.ndarray:
        return self._values[:self._n]

    @property
    def sq_norms(self) -> np.ndarray:
        return self._sq[:self._n]

    def append(self, rows: np.ndarray, labels: np.ndarray | None = None, values: np.ndarray | None = None) -> None:
        n = len(rows)
        labels = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        values = np.zeros(n) if values is None else np.asarray(values, dtype=np.float64)
        if n > self.cap:  # only the newest cap rows can survive
            rows, labels, values, n = rows[-self.cap:], labels[-self.cap:], values[-self.cap:], self.cap
        sq = (np.asarray(rows, dtype=np.float64) ** 2).sum(1)
        if self._n < self.cap and self._n + n > len(self._rows):  # grow by doubling, up to cap
            size = min(self.cap, max(2 * len(self._rows), 2 * (self._n + n)))
            for attr in ("_rows", "_labels", "_values", "_sq"):
                old = getattr(self, attr)
                new = np.empty((size, *old.shape[1:]), dtype=old.dtype)
                new[:self._n] = old[:self._n]
                setattr(self, attr, new)
        free = min(self.cap - self._n, n)
        if free > 0:
            sl = slice(self._n, self._n + free)
            self._rows[sl], self._labels[sl] = rows[:free], labels[:free]
            self._values[sl], self._sq[sl] = values[:free], sq[:free]
            self._n += free
            rows, labels, values, sq = rows[free:], labels[free:], values[free:], sq[free:]
        if len(rows):
            slots = (self._next + np.arange(len(rows))) % self.cap
            self._rows[slots], self._labels[slots], self._values[slots], self._sq[slots] = rows, labels, values, sq
            self._next = int((slots[-1] + 1) % self.cap)

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes + self._labels.nbytes + self._values.nbytes + self._sq.nbytes


# -- BLAS threads -------------------------------------------------------------------------------
_BLAS: list[Any] | None = None


@contextmanager
def blas_threads(n: int = SMALL_MODEL_THREADS) -> Iterator[None]:
    """Run a block with numpy's BLAS on ``n`` threads (``EXTRACTGYM_TORCH_THREADS``, default 1), then restore.

    The detectors' distance products are small (a batch against a history): as with the library's torch models
    (:func:`extractgym.victims.training.torch_threads`), a second BLAS thread costs more in synchronisation than
    it gains, dramatically so when other processes keep the cores busy (measured on 2 busy cores: a 64 x 1198
    product took 32 ms with OpenBLAS' 2 threads vs 0.2 ms with 1, which made ``ood`` at batch 64 60x slower
    than at batch 1 per query). torch's setting does not reach numpy's BLAS, hence this (~4 µs a call).
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    if n <= 0:
        yield
        return
    old = [lib.get_num_threads() for lib in _BLAS]
    for lib, k in zip(_BLAS, old, strict=True):
        if k != n:
            lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, k in zip(_BLAS, old, strict=True):
            if k != n:
                lib.set_num_threads(k)


# -- grouped history (PRADA's growing sets) ------------------------------------------------------
class GroupedHistory:
    """At most ``cap`` float64 rows in total, grouped by an int label, evicted oldest-first across all groups.

    Each group's rows (with their squared norms and a float value each) lie contiguous in arrival order, so a
    scan of one group is one BLAS call on a view, never a gather over the whole history. Appending and eviction
    are O(batch) amortised. A group's buffer grows by doubling and is compacted or halved when it runs empty, so
    memory stays within ``4 * cap`` rows plus 16 per group however the labels shift over an account's life.
    """

    def __init__(self, cap: int, dim: int) -> None:
        self.cap, self.dim = cap, dim
        self._groups: dict[int, _Group] = {}
        self._order = np.empty(min(cap, 64), dtype=np.int64)  # labels in arrival order (a ring)
        self._head = 0  # ring slot of the oldest label
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def rows(self, label: int) -> np.ndarray:
        g = self._groups.get(int(label))
        return g.rows[g.start:g.end] if g else np.empty((0, self.dim))

    def sq_norms(self, label: int) -> np.ndarray:
        g = self._groups.get(int(label))
        return g.sq[g.start:g.end] if g else np.empty(0)

    def values(self, label: int) -> np.ndarray:
        g = self._groups.get(int(label))
        return g.values[g.start:g.end] if g else np.empty(0)

    def append(self, rows: np.ndarray, labels: np.ndarray, values: np.ndarray | None = None) -> None:
        rows = np.asarray(rows, dtype=np.float64).reshape(len(rows), self.dim)
        labels = np.asarray(labels, dtype=np.int64)
        values = np.zeros(len(rows)) if values is None else np.asarray(values, dtype=np.float64)
        if len(rows) > self.cap:  # only the newest cap rows can survive
            rows, labels, values = rows[-self.cap:], labels[-self.cap:], values[-self.cap:]
        m = len(rows)
        if m == 0:
            return
        self._evict(max(0, self._n + m - self.cap))
        if self._n + m > len(self._order):  # grow the label ring by doubling, up to cap (unrolled to slot 0)
            size = min(self.cap, max(2 * len(self._order), self._n + m))
            order = np.empty(size, dtype=np.int64)
            order[:self._n] = self._order[(self._head + np.arange(self._n)) % len(self._order)]
            self._order, self._head = order, 0
        slots = (self._head + self._n + np.arange(m)) % len(self._order)
        self._order[slots] = labels
        self._n += m
        sq = (rows * rows).sum(1)
        for c in np.unique(labels):
            mine = labels == c
            g = self._groups.get(int(c))
            if g is None:
                g = self._groups[int(c)] = _Group(self.dim)
            g.push(rows[mine], sq[mine], values[mine])

    def _evict(self, k: int) -> None:
        if k <= 0:
            return
        gone = self._order[(self._head + np.arange(k)) % len(self._order)]
        self._head = (self._head + k) % len(self._order)
        self._n -= k
        for c, count in zip(*np.unique(gone, return_counts=True), strict=True):
            self._groups[int(c)].pop_oldest(int(count))

    @property
    def nbytes(self) -> int:
        return self._order.nbytes + sum(g.nbytes for g in self._groups.values())


class _Group:
    """One label's rows, oldest first, in ``rows[start:end]`` (a deque on a numpy buffer)."""

    def __init__(self, dim: int) -> None:
        self.rows, self.sq, self.values = np.empty((16, dim)), np.empty(16), np.empty(16)
        self.start = self.end = 0

    def push(self, rows: np.ndarray, sq: np.ndarray, values: np.ndarray) -> None:
        m, live = len(rows), self.end - self.start
        if self.end + m > len(self.rows):
            size = len(self.rows) if live + m <= len(self.rows) // 2 else max(2 * len(self.rows), live + m)
            self._move(size)
        sl = slice(self.end, self.end + m)
        self.rows[sl], self.sq[sl], self.values[sl] = rows, sq, values
        self.end += m

    def pop_oldest(self, k: int) -> None:
        self.start += k
        live = self.end - self.start
        if len(self.rows) > 16 and live < len(self.rows) // 4:  # shrink: memory follows the live rows
            self._move(max(16, 2 * live))

    def _move(self, size: int) -> None:
        """Copy the live rows to the front of fresh buffers of ``size`` rows (compaction, growth or shrink)."""
        live = slice(self.start, self.end)
        n = self.end - self.start
        for attr in ("rows", "sq", "values"):
            old = getattr(self, attr)
            new = np.empty((size, *old.shape[1:]))
            new[:n] = old[live]
            setattr(self, attr, new)
        self.start, self.end = 0, n

    @property
    def nbytes(self) -> int:
        return self.rows.nbytes + self.sq.nbytes + self.values.nbytes


def state_nbytes(state: Any) -> int:
    """Bytes of the numpy buffers held by a detector's per-account state (a dataclass of histories and arrays)."""
    if isinstance(state, np.ndarray):
        return state.nbytes
    if hasattr(state, "nbytes"):
        return int(state.nbytes)
    if hasattr(state, "__dataclass_fields__"):
        return sum(state_nbytes(getattr(state, f)) for f in state.__dataclass_fields__)
    return 8 if isinstance(state, (int, float)) else 0  # a counter (its value, not Python's object overhead)


# -- exact distances ------------------------------------------------------------------------------
# The expansion |a|^2 + |b|^2 - 2 a.b computes squared distances with one BLAS call, but rounds them by up
# to a few ``dim * eps * (|a|^2 + |b|^2)``. ``_ERR`` bounds that error with a margin of seven orders of
# magnitude (any dim below 10^6), per row of ``a`` against the largest row norm of ``b``: every pair whose
# expanded value lies within the bound of a decision (the radius, the row minimum) is recomputed by direct
# differences, exactly as :func:`pair_dists` computes it, so the answers equal brute force bit for bit.
_ERR_REL, _ERR_ABS = 1e-9, 1e-12


def pair_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact L2 distances between rows of ``a`` and ``b`` by direct differences (the brute-force definition)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    out = np.empty((len(a), len(b)))
    step = max(1, 2_000_000 // max(1, len(b) * a.shape[1]))
    for s in range(0, len(a), step):
        out[s:s + step] = np.sqrt(((a[s:s + step, None, :] - b[None, :, :]) ** 2).sum(-1))
    return out


def _exact(a: np.ndarray, b: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Exact distances of the pairs ``(a[ii], b[jj])``, computed as :func:`pair_dists` does."""
    return np.sqrt(((a[ii] - b[jj]) ** 2).sum(-1))


def _approx_sq(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The BLAS expansion of squared distances, less the query norms: ``(m, na, err)`` with
    ``|a_i - b_j|^2 ~ m[i, j] + na[i]`` up to ``err[i]`` (``b_sq``: cached norms of ``b``).

    Decisions compare ``m`` with per-row thresholds shifted by ``na``, so the ``len(a) x len(b)`` matrix is
    written by the product and one in-place pass, and read once or twice: this is the whole per-query cost of the
    range and nearest-distance searches, and its memory traffic is what limits them.
    """
    na = (a * a).sum(1)
    nb = (b * b).sum(1) if b_sq is None else b_sq
    m = (-2.0 * a) @ b.T
    m += nb
    err = _ERR_REL * (na + (nb.max() if len(nb) else 0.0)) + _ERR_ABS
    return m, na, err


def fast_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distances by one matrix product (rounding error ~1e-9 relative): for scores that need no exactness."""
    m, na, _ = _approx_sq(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    m += na[:, None]
    return np.sqrt(np.clip(m, 0.0, None, out=m), out=m)


def count_within(a: np.ndarray, b: np.ndarray, radius: float, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``a``: how many rows of ``b`` lie at L2 distance ``< radius``.

    One matrix product for all pairs; only pairs within rounding error of the radius are recomputed by
    direct differences, so the counts equal brute force (:func:`pair_dists` ``< radius``) exactly.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=np.int64)
    m, na, err = _approx_sq(a, b, b_sq)
    r2 = radius * radius
    lo, hi = (r2 - err - na)[:, None], (r2 + err - na)[:, None]
    counts = np.count_nonzero(m < lo, axis=1).astype(np.int64)  # surely within
    unsure_rows = np.flatnonzero(np.count_nonzero(m <= hi, axis=1) > counts)  # rows with pairs near the radius
    for i in unsure_rows:
        jj = np.flatnonzero((m[i] >= lo[i]) & (m[i] <= hi[i]))
        counts[i] += int(np.count_nonzero(_exact(a, b, np.full(len(jj), i), jj) < radius))
    return counts


def min_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``a``: the exact minimum L2 distance to the rows of ``b`` (``inf`` if ``b`` is empty).

    The BLAS expansion picks the candidates; every candidate within rounding error of the row's minimum is
    recomputed by direct differences, so the result equals ``pair_dists(a, b).min(1)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(b) == 0:
        return np.full(len(a), np.inf)
    if len(a) == 0:
        return np.empty(0)
    m, _, err = _approx_sq(a, b, b_sq)
    # the true minimum's square is at most min(d2) + err; a pair can reach it only if d2 - err <= that
    cut = (m.min(1) + 2.0 * err)[:, None]
    ii, jj = np.nonzero(m <= cut)
    out = np.full(len(a), np.inf)
    np.minimum.at(out, ii, _exact(a, b, ii, jj))
    return out


# -- owner data and cached models -----------------------------------------------------------------
def owner_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The owner's training data ``(x, y)``: the ``train`` split of dataset ``name`` (images only)."""
    ds = get_dataset(name)
    if ds.spec.kind != "image":
        raise ValueError(f"data {name!r} is a {ds.spec.kind} dataset; the detectors take image datasets "
                         f"(digits, mnist, mnist8x8)")
    return ds.split("train")


def flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)


def cached_model(kind: str, build: Callable[[], torch.nn.Module], train: Callable[[torch.nn.Module], None],
                 **key: object) -> torch.nn.Module:
    """Build a model, train it once and keep its weights under the victims' cache (keyed by ``key``)."""
    path = Path(cache_dir("detectors")) / f"{kind}-{cache_key(kind=kind, **key)}.pt"
    model = build()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        with torch.enable_grad():  # callers may be inside no_grad (e.g. encoding queries on first use)
            train(model)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    model.eval()
    return model


# -- calibration ----------------------------------------------------------------------------------
def calibrate(detector: StatefulDetector, streams: Sequence[np.ndarray], target_fpr: float,
              service: str | None = None, batch: int = 50) -> float:
    """Set ``detector``'s threshold so at most ``target_fpr`` of the benign ``streams`` would be flagged.

    Each stream is one benign tuning account's queries in order, sent in batches of ``batch``. Returns the
    threshold (also stored as ``detector.threshold`` and, for victim-dependent detectors, per service).
    """
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    if not streams:
        raise ValueError("calibrate needs at least one benign stream")
    service = service or detector.default_service()
    crit = np.sort([detector.critical(s, service, batch) for s in streams])
    k = int(math.floor(target_fpr * len(crit) + 1e-9))  # streams we may flag
    value = float(crit[k] if detector.flag_above else crit[::-1][k])
    finite = crit[np.isfinite(crit)]
    if k == 0 and math.isfinite(value) and len(finite) > 1:
        # n streams resolve false-positive rates down to 1/n only. Below that (seed 003's 0.01% with a few
        # hundred streams) the empirical quantile is the single most extreme benign stream, and benign traffic
        # from another sample lands on either side of it. Extrapolate past it by half its distance from the
        # median: a conservative tail margin rather than a threshold sitting exactly on one tuning account.
        value += 0.5 * (value - float(np.median(finite)))
    if not math.isfinite(value):  # no stream came near an alarm: stay just beyond the most extreme finite one
        finite = crit[np.isfinite(crit)]
        if not len(finite):
            value = detector.default_threshold
        else:
            value = float(finite.max() if detector.flag_above else finite.min())
    detector.thresholds[service] = value
    detector.threshold = value
    return value


def tuning_streams(x: np.ndarray, accounts: int, queries: int, seed: int) -> list[np.ndarray]:
    """``accounts`` streams of ``queries`` natural samples each (without replacement within a stream) from ``x``."""
    rng = np.random.default_rng(seed)
    return [x[rng.choice(len(x), size=min(queries, len(x)), replace=False)] for _ in range(accounts)]


class StatefulDetector(DefenderBase):
    """Base of the per-account detectors: screening, bounded state, calibration at ``bind``, the level knob.

    Subclasses define ``flag_above``, ``default_threshold``, :meth:`prepare` (models for a service),
    :meth:`new_state`, :meth:`update` (per-query statistics for a batch, state updated) and :meth:`flags`
    and :meth:`reduce` (a whole stream's statistics to its critical value).

    Common args: ``data`` (the owner's dataset; services with other inputs are not screened), ``threshold``
    (``None``: calibrated at ``bind`` to ``target_fpr`` on ``tune_accounts`` streams of ``tune_queries`` queries
    from the held-out third of ``data``'s train split, memoised per process), ``max_history`` (rows kept per
    account; ``vae`` and ``ood`` keep O(1) counters whatever it is), ``seed`` (model training and tuning streams).
    """

    flag_above = True
    default_threshold = 1.0
    victim_dependent = False

    def __init__(self, data: str, threshold: float | None, target_fpr: float, max_history: int,
                 tune_accounts: int, tune_queries: int, seed: int, levels: tuple[float, ...] = LEVELS) -> None:
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite or None (calibrate), got {threshold}")
        if not 0.0 <= target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
        if max_history < 2:
            raise ValueError(f"max_history must be >= 2, got {max_history}")
        if tune_accounts < 1 or tune_queries < 2:
            raise ValueError(f"tune_accounts must be >= 1 and tune_queries >= 2, got {tune_accounts}, {tune_queries}")
        self.data = data
        x, y = owner_data(data)  # fail now, naming the dataset
        # Models are fitted on two thirds of the owner's data; thresholds are tuned (and likelihood / distance
        # references taken) on the held-out third, so they are not biased by what the models memorised.
        order = np.random.default_rng(seed).permutation(len(x))
        fit, tune = order[len(x) // 3:], order[:len(x) // 3]
        self.x_train, self.y_train, self.x_tune = x[fit], y[fit], x[tune]
        self.threshold = threshold
        self.target_fpr, self.max_history, self.seed = target_fpr, max_history, seed
        self.tune_accounts, self.tune_queries = tune_accounts, tune_queries
        self.knobs = (Knob.around("level", levels, 1.0),)
        self.states: dict[str, Any] = {}
        self.thresholds: dict[str, float] = {}
        self.watched: tuple[str, ...] = ()

    # -- episode wiring ---------------------------------------------------------------------------
    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.states = {}
        shape = tuple(self.x_train.shape[1:])
        # Services whose queries are not shaped like the owner's data are not watched (served untouched):
        # a detector trained on 8x8 digits has nothing to say about another input space.
        self.watched = tuple(s for s in view.services() if tuple(view.input_spec(s).shape) == shape)
        unwatched = [s for s in view.services() if s not in self.watched]
        if unwatched:
            name = getattr(self, "registry_name", type(self).__name__)
            warnings.warn(f"{name}: data {self.data!r} has inputs of shape "
                          f"{shape}; service(s) {', '.join(unwatched)} take other inputs and are served unscreened",
                          stacklevel=2)
        for s in self.watched:
            self.prepare(s)
            self.thresholds[s] = float(self.threshold) if self.threshold is not None else self._calibrated(s)

    def _calibrated(self, service: str) -> float:
        victim = self.view.victim_name(service) if self.victim_dependent else ""
        key = repr((type(self).__name__, self.params(), victim))
        if key not in _CALIBRATION_MEMO:
            _CALIBRATION_MEMO[key] = self.tune(service)
            self.threshold = None  # calibrate() stored it; keep "calibrated" as the configured mode
        return _CALIBRATION_MEMO[key]

    def tune(self, service: str) -> float:
        """The calibrated threshold for ``service``: :func:`calibrate` on ``tune_accounts`` streams of the owner's
        held-out data (a detector whose statistic has a known null distribution may compute it instead)."""
        streams = tuning_streams(self.x_tune, self.tune_accounts, self.tune_queries, self.seed)
        return calibrate(self, streams, self.target_fpr, service)

    def params(self) -> tuple:
        return (self.data, self.target_fpr, self.max_history, self.tune_accounts, self.tune_queries, self.seed)

    def default_service(self) -> str:
        return self.watched[0] if self.watched else ""

    def current(self, service: str) -> float:
        """The threshold in force on ``service``: the calibrated (or given) value times the ``level`` knob."""
        base = self.thresholds.get(service, self.threshold if self.threshold is not None else self.default_threshold)
        return float(base) * float(getattr(self, "level", 1.0))

    # -- screening --------------------------------------------------------------------------------
    def screen(self, account: Account, x: np.ndarray) -> int:
        if account.service not in self.watched or len(x) == 0:
            return len(x)
        state = self.states.get(account.id)
        if state is None:
            state = self.states[account.id] = self.new_state(account.service)
        stats = self.update(state, x, account.service)
        hit = np.flatnonzero(self.flags(stats, self.current(account.service)))
        if len(hit):
            del self.states[account.id]  # the account is banned: its state goes with it
            return int(hit[0])
        return len(x)

    def critical(self, stream: np.ndarray, service: str, batch: int = 50) -> float:
        """The threshold at which a fresh account sending ``stream`` (in batches) would just be flagged."""
        state = self.new_state(service)
        stats = [self.update(state, stream[i:i + batch], service) for i in range(0, len(stream), batch)]
        return self.reduce(stats, state)

    # -- per detector -----------------------------------------------------------------------------
    def prepare(self, service: str) -> None:
        """Load or train what the detector needs for ``service`` (cached)."""

    def new_state(self, service: str) -> Any:
        raise NotImplementedError

    def update(self, state: Any, x: np.ndarray, service: str) -> Any:
        raise NotImplementedError

    def flags(self, stats: Any, threshold: float) -> np.ndarray:
        raise NotImplementedError

    def reduce(self, stats: list[Any], state: Any) -> float:
        raise NotImplementedError
