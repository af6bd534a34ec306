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
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from extractgym.agents.base import DefenderBase
from extractgym.envs.api import Account, DefenderView
from extractgym.envs.protocols import Knob
from extractgym.victims.cache import cache_dir, cache_key
from extractgym.victims.datasets import get_dataset

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


# -- exact distances ------------------------------------------------------------------------------
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


def _approx_sq(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances by the BLAS expansion, and a bound on their rounding error (``b_sq``: cached norms)."""
    na, nb = (a * a).sum(1), (b * b).sum(1) if b_sq is None else b_sq
    d2 = na[:, None] + nb[None, :] - 2.0 * (a @ b.T)
    err = 1e-9 * (na[:, None] + nb[None, :]) + 1e-12
    return d2, err


def fast_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distances by one matrix product (rounding error ~1e-9 relative): for scores that need no exactness."""
    d2, _ = _approx_sq(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.sqrt(np.clip(d2, 0.0, None))


def count_within(a: np.ndarray, b: np.ndarray, radius: float, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``a``: how many rows of ``b`` lie at L2 distance ``< radius``.

    One matrix product for all pairs; only pairs within rounding error of the radius are recomputed by
    direct differences, so the counts equal brute force (:func:`pair_dists` ``< radius``) exactly.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=np.int64)
    d2, err = _approx_sq(a, b, b_sq)
    r2 = radius * radius
    sure = d2 < r2 - err
    unsure = np.abs(d2 - r2) <= err
    counts = sure.sum(1)
    ii, jj = np.nonzero(unsure)
    if len(ii):
        exact = np.sqrt(((a[ii] - b[jj]) ** 2).sum(-1)) < radius
        np.add.at(counts, ii, exact.astype(np.int64))
    return counts.astype(np.int64)


def min_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``a``: the exact minimum L2 distance to the rows of ``b`` (``inf`` if ``b`` is empty).

    The BLAS expansion picks the candidates; every candidate within rounding error of the row's minimum is
    recomputed by direct differences, so the result equals ``pair_dists(a, b).min(1)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(b) == 0:
        return np.full(len(a), np.inf)
    d2, err = _approx_sq(a, b, b_sq)
    hi = (d2 + err).min(1)  # the true minimum's square is at most this
    cand = d2 - err <= hi[:, None]
    ii, jj = np.nonzero(cand)
    exact = np.sqrt(((a[ii] - b[jj]) ** 2).sum(-1))
    out = np.full(len(a), np.inf)
    np.minimum.at(out, ii, exact)
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
            streams = tuning_streams(self.x_tune, self.tune_accounts, self.tune_queries, self.seed)
            _CALIBRATION_MEMO[key] = calibrate(self, streams, self.target_fpr, service)
            self.threshold = None  # calibrate() stored it; keep "calibrated" as the configured mode
        return _CALIBRATION_MEMO[key]

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
