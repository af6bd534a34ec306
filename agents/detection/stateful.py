"""The base of the stateful detectors (``prada``, ``similarity``, ``vae``, ``ood``).

A detector keeps per-account state, keyed by account id, bounded by ``max_history`` rows, and dropped when
it bans the account. Each detector turns a batch of new queries into one *statistic* per query
(:meth:`StatefulDetector.update`, vectorised over the batch) and flags the first query whose statistic
crosses the threshold; :meth:`StatefulDetector.screen` serves the queries before it and bans the account.

Calibration (seed 003 §VI, §VIII: thresholds tuned so that 0.01% of benign users are flagged):
every detector reduces a whole benign stream to its *critical value* -- the threshold at which that stream
would just be flagged -- and :func:`calibrate` picks the threshold from the tuning streams' critical values so
that, with ``CONFIDENCE`` (95%), at most ``target_fpr`` of fresh accounts drawn like the tuning streams would be
flagged: a distribution-free order-statistic bound (if ``r`` of ``n`` exchangeable streams lie beyond the
threshold, the flag rate of a fresh one is Beta(r + 1, n - r) distributed). ``n`` streams certify targets down
to ``1 - 0.05 ** (1 / n)`` only (1.5% with 200, 0.3% with 1,000): a lower target is not supported by the data,
and :func:`calibrate` says so (a ``UserWarning`` at bind) and calibrates to that lowest supported target
instead; ``target_fpr=None`` asks for it without the warning. The bound in force is ``detector.fpr_bound``
(per service: ``detector.fpr_bounds``). The orientation is per detector: ``flag_above`` means "flagged iff
threshold > critical" (PRADA's ``delta`` on the Shapiro-Wilk W, the similarity radius), otherwise "flagged iff
threshold < critical" (the VAE credibility multiplier, the OOD share, Blacklight's and PIHA's match level). By
default a detector calibrates itself at ``bind`` on streams of natural queries from its ``data`` train split
(the owner's data; benign customers and the referee use the pool and test splits, so the detector is never
evaluated on what it tuned on). The bound is exact for accounts drawing from the owner's held-out images and
approximate for other benign data of the same distribution: ``benchmarks/bench_defences_2022.py`` measures the
realised rate on fresh accounts from the pool split at the shipped scenarios' volumes. (The previous rule, the
empirical quantile extrapolated past the most extreme stream, had no stated guarantee.) A detector whose
statistic has a known null distribution may compute its threshold instead (``ood``: :meth:`StatefulDetector.tune`).

Cost per query (``benchmarks/bench_detector_latency.py``): ``vae`` and ``ood`` keep O(1) counters, flat.
``prada`` (exact nearest distance to the growing set of the query's class, incremental Shapiro-Wilk) and
``similarity`` (exact range count) are linear in the account's history with small constants, and bounded by
``max_history`` (memory too): their searches (:func:`~extractgym.agents.detection.distances.min_dists`, :func:`~extractgym.agents.detection.distances.count_within`) are one BLAS product
plus an exact recheck of near-ties, equal to brute force. Their BLAS runs on ``EXTRACTGYM_TORCH_THREADS``
threads (:func:`~extractgym.agents.detection.distances.blas_threads`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import binom

from extractgym.agents.base import DefenderBase
from extractgym.agents.detection.history import tuning_streams
from extractgym.envs.api import Account, DefenderView, Verdict
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset

LEVELS = (0.5, 0.8, 1.0, 1.25, 2.0)

# Calibrated thresholds are the same in every episode of a process (same detector parameters, same victim):
# computed once, keyed by both.
_CALIBRATION_MEMO: dict[str, tuple[float, float]] = {}  # key -> (threshold, certified FPR bound)


def owner_data(name: str, kinds: tuple[str, ...] = ("image",)) -> tuple[np.ndarray, np.ndarray]:
    """The owner's training data ``(x, y)``: the ``train`` split of dataset ``name`` (of one of ``kinds``)."""
    ds = get_dataset(name)
    if ds.spec.kind not in kinds:
        known = "digits, mnist, mnist8x8" if kinds == ("image",) else "rotten-tomatoes, guardian, rt-plots"
        raise ValueError(f"data {name!r} is a {ds.spec.kind} dataset; this detector takes {' or '.join(kinds)} "
                         f"datasets ({known})")
    return ds.split("train")


# -- calibration ----------------------------------------------------------------------------------
CONFIDENCE = 0.95  # confidence of the calibrated false-positive bound


def supported_fpr(n_streams: int, confidence: float = CONFIDENCE) -> float:
    """The lowest false-positive rate ``n_streams`` exchangeable benign streams can certify at ``confidence``: a
    threshold beyond all of them flags a fresh stream with probability ``F ~ Beta(1, n)``, and ``P(F <= t) =
    1 - (1 - t) ** n``."""
    return 1.0 - (1.0 - confidence) ** (1.0 / n_streams)


def flagged_streams(n_streams: int, target_fpr: float, confidence: float = CONFIDENCE) -> int:
    """How many of ``n_streams`` tuning streams a threshold may flag while certifying ``target_fpr`` at
    ``confidence``: the largest ``r`` with ``P(Binomial(n, target) >= r + 1) >= confidence`` (0 if none)."""
    ok = np.flatnonzero(binom.sf(np.arange(n_streams), n_streams, target_fpr) >= confidence)
    return int(ok.max()) if len(ok) else 0


def calibrate(detector: StatefulDetector, streams: Sequence[np.ndarray], target_fpr: float | None,
              service: str | None = None, batch: int = 50, confidence: float = CONFIDENCE) -> float:
    """Set ``detector``'s threshold so that, with ``confidence``, at most ``target_fpr`` of fresh benign accounts
    drawn like ``streams`` would be flagged (the module docstring's order-statistic bound).

    Each stream is one benign tuning account's queries in order, sent in batches of ``batch``. A target below what
    the streams can certify (:func:`supported_fpr`) is raised to it with a ``UserWarning``; ``None`` asks for it.
    Returns the threshold (also stored as ``detector.threshold`` and, per service, in ``detector.thresholds``; the
    certified bound in ``detector.fpr_bound`` / ``detector.fpr_bounds``).
    """
    if target_fpr is not None and not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1) or None, got {target_fpr}")
    if not streams:
        raise ValueError("calibrate needs at least one benign stream")
    service = service or detector.default_service()
    n = len(streams)
    lowest = supported_fpr(n, confidence)
    if target_fpr is None or target_fpr < lowest:
        if target_fpr is not None:
            name = getattr(detector, "registry_name", type(detector).__name__)
            warnings.warn(f"{name}: {n} tuning streams of the owner's held-out data certify a false-positive rate "
                          f"of {lowest:.2%} at best ({confidence:.0%} confidence); target {target_fpr:.4%} is not "
                          f"supported: calibrating to {lowest:.2%} (raise tune_accounts to certify lower rates)",
                          stacklevel=3)
        target_fpr = lowest
    crit = np.sort([detector.critical(s, service, batch) for s in streams])
    r = flagged_streams(n, target_fpr, confidence)
    # the (r+1)-th most extreme critical value: the r streams beyond it are flagged, it and the rest are not
    value = float(crit[r] if detector.flag_above else crit[::-1][r])
    if not math.isfinite(value):  # no stream came near an alarm: stay just beyond the most extreme finite one
        finite = crit[np.isfinite(crit)]
        if not len(finite):
            value = detector.default_threshold
        else:
            value = float(finite.max() if detector.flag_above else finite.min())
    detector.thresholds[service] = value
    detector.fpr_bounds[service] = float(target_fpr)
    detector.threshold, detector.fpr_bound = value, float(target_fpr)
    return value


class StatefulDetector(DefenderBase):
    """Base of the per-account detectors: screening, bounded state, calibration at ``bind``, the level knob.

    Subclasses define ``flag_above``, ``default_threshold``, :meth:`prepare` (models for a service),
    :meth:`new_state`, :meth:`update` (per-query statistics for a batch, state updated) and :meth:`flags`
    and :meth:`reduce` (a whole stream's statistics to its critical value).

    Common args: ``data`` (the owner's dataset; services with other inputs are not screened), ``threshold``
    (``None``: calibrated at ``bind`` to ``target_fpr`` on ``tune_accounts`` streams of ``tune_queries`` queries
    from the held-out third of ``data``'s train split, memoised per process; ``target_fpr=None``: the lowest
    false-positive rate those streams certify at 95% confidence, see :func:`calibrate`), ``max_history`` (rows kept per
    account; ``vae`` and ``ood`` keep O(1) counters whatever it is), ``seed`` (model training and tuning streams).
    """

    flag_above = True
    default_threshold = 1.0
    victim_dependent = False
    throttle_at: float | None = None  # a graduated response (a subclass that offers it sets it from its arguments)
    row_sources: tuple[tuple[str, str], ...] = ()  # (dataset, split) rows a scenario's answer_table lets it tabulate
    device: str = "cpu"  # where its encoder runs (the scenario's device: auto, cpu, cuda)
    data_kinds: tuple[str, ...] = ("image",)  # the kinds of ``data`` (and of the queries) the detector reads

    def __init__(self, data: str, threshold: float | None, target_fpr: float | None, max_history: int,
                 tune_accounts: int, tune_queries: int, seed: int, levels: tuple[float, ...] = LEVELS) -> None:
        if threshold is not None and not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite or None (calibrate), got {threshold}")
        if target_fpr is not None and not 0.0 <= target_fpr < 1.0:
            raise ValueError(f"target_fpr must be in [0, 1) or None (the lowest the data supports), got {target_fpr}")
        if max_history < 2:
            raise ValueError(f"max_history must be >= 2, got {max_history}")
        if tune_accounts < 1 or tune_queries < 2:
            raise ValueError(f"tune_accounts must be >= 1 and tune_queries >= 2, got {tune_accounts}, {tune_queries}")
        self.data = data
        x, y = owner_data(data, self.data_kinds)  # fail now, naming the dataset
        self.data_kind = get_dataset(data).spec.kind
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
        self.fpr_bound: float | None = None  # the certified false-positive bound of the calibrated threshold
        self.fpr_bounds: dict[str, float] = {}
        self.watched: tuple[str, ...] = ()

    # -- episode wiring ---------------------------------------------------------------------------
    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.states = {}
        self.pressures: dict[str, float] = {}  # account -> pressure after its latest request
        shape = tuple(self.x_train.shape[1:])
        # Services whose queries are not shaped like the owner's data are not watched (served untouched):
        # a detector trained on 8x8 digits has nothing to say about another input space.
        self.watched = tuple(s for s in view.services()
                             if (view.input_spec(s).kind, tuple(view.input_spec(s).shape)) == (self.data_kind, shape))
        unwatched = [s for s in view.services() if s not in self.watched]
        if unwatched:
            name = getattr(self, "registry_name", type(self).__name__)
            warnings.warn(f"{name}: data {self.data!r} has {self.data_kind} inputs of shape "
                          f"{shape}; service(s) {', '.join(unwatched)} take other inputs and are served unscreened",
                          stacklevel=2)
        for s in self.watched:
            self.prepare(s)
            self.thresholds[s] = float(self.threshold) if self.threshold is not None else self._calibrated(s)

    def _calibrated(self, service: str) -> float:
        victim = self.view.victim_name(service) if self.victim_dependent else ""
        key = repr((type(self).__name__, self.params(), victim))
        if key not in _CALIBRATION_MEMO:
            value = self.tune(service)
            _CALIBRATION_MEMO[key] = (value, self.fpr_bounds.get(service, math.nan))
            self.threshold = None  # calibrate() stored it; keep "calibrated" as the configured mode
        value, bound = _CALIBRATION_MEMO[key]
        self.fpr_bounds[service] = self.fpr_bound = bound
        return value

    def tune(self, service: str) -> float:
        """The calibrated threshold for ``service``: :func:`calibrate` on ``tune_accounts`` streams of the owner's
        held-out data (a detector whose statistic has a known null distribution may compute it instead)."""
        streams = tuning_streams(self.x_tune, self.tune_accounts, self.tune_queries, self.seed)
        return calibrate(self, streams, self.target_fpr, service)

    def params(self) -> tuple:
        return (self.data, self.target_fpr, self.max_history, self.tune_accounts, self.tune_queries, self.seed)

    def default_service(self) -> str:
        return self.watched[0] if self.watched else ""

    def current(self, service: str, level: float = 1.0) -> float:
        """The threshold in force on ``service``: the calibrated (or given) value times the ``level`` knob's value."""
        base = self.thresholds.get(service, self.threshold if self.threshold is not None else self.default_threshold)
        return float(base) * float(level)

    # -- screening --------------------------------------------------------------------------------
    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> int:
        if account.service not in self.watched or len(x) == 0:
            return len(x)
        state = self.states.get(account.id)
        if state is None:
            state = self.states[account.id] = self.new_state(account.service)
        threshold = self.current(account.service, knobs["level"])
        stats = self.update(state, x, account.service, threshold)
        hit = np.flatnonzero(self.flags(stats, threshold))
        throttled = self._throttled(stats, threshold, len(x))
        if len(hit):
            del self.states[account.id]  # the account is banned: its state goes with it
            self.pressures.pop(account.id, None)
            if throttled is None:
                return int(hit[0])
            return Verdict((np.arange(len(x)) < hit[0]) & ~throttled, ban=True)
        self.pressures[account.id] = float(self.pressure(np.asarray(stats)[-1], threshold))
        if throttled is not None and throttled.any():
            return Verdict(~throttled, ban=False)
        return len(x)

    def _throttled(self, stats: Any, threshold: float, n: int) -> np.ndarray | None:
        """Which queries a graduated response refuses without a ban (``throttle_at``): those sent once the account's
        pressure reached that share of the ban threshold. None when the detector does not throttle."""
        if self.throttle_at is None:
            return None
        pressure = self.pressures_of(np.asarray(stats, dtype=np.float64).reshape(n), threshold)
        return np.nan_to_num(pressure, nan=0.0) >= self.throttle_at

    def pressure(self, stat: Any, threshold: float) -> float:
        """How close one statistic is to flagging, scaled so that 1 is the threshold (NaN: no score yet). What the
        owner's dashboard shows, and the defender's observation summarises."""
        return float("nan")

    def pressures_of(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        """:meth:`pressure` of each statistic in ``stats`` (a subclass with a vectorised form overrides it)."""
        return np.array([self.pressure(s, threshold) for s in stats])

    def critical(self, stream: np.ndarray, service: str, batch: int = 50) -> float:
        """The threshold at which a fresh account sending ``stream`` (in batches) would just be flagged."""
        state = self.new_state(service)
        threshold = self.current(service)
        stats = [self.update(state, stream[i:i + batch], service, threshold) for i in range(0, len(stream), batch)]
        return self.reduce(stats, state)

    # -- per detector -----------------------------------------------------------------------------
    def prepare(self, service: str) -> None:
        """Load or train what the detector needs for ``service`` (cached)."""

    def new_state(self, service: str) -> Any:
        raise NotImplementedError

    def update(self, state: Any, x: np.ndarray, service: str, threshold: float) -> Any:
        """Per-query statistics of the batch ``x`` (``state`` updated); ``threshold`` is the one in force."""
        raise NotImplementedError

    def flags(self, stats: Any, threshold: float) -> np.ndarray:
        raise NotImplementedError

    def reduce(self, stats: list[Any], state: Any) -> float:
        raise NotImplementedError
