"""The base of the stateful detectors (``prada``, ``similarity``, ``vae``, ``ood``).

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
``max_history`` (memory too): their searches (:func:`~extractgym.agents.distances.min_dists`, :func:`~extractgym.agents.distances.count_within`) are one BLAS product
plus an exact recheck of near-ties, equal to brute force. Their BLAS runs on ``EXTRACTGYM_TORCH_THREADS``
threads (:func:`~extractgym.agents.distances.blas_threads`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.history import tuning_streams
from extractgym.envs.api import Account, DefenderView
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset

LEVELS = (0.5, 0.8, 1.0, 1.25, 2.0)

# Calibrated thresholds are the same in every episode of a process (same detector parameters, same victim):
# computed once, keyed by both.
_CALIBRATION_MEMO: dict[str, float] = {}


def owner_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """The owner's training data ``(x, y)``: the ``train`` split of dataset ``name`` (images only)."""
    ds = get_dataset(name)
    if ds.spec.kind != "image":
        raise ValueError(f"data {name!r} is a {ds.spec.kind} dataset; the detectors take image datasets "
                         f"(digits, mnist, mnist8x8)")
    return ds.split("train")


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
        self.pressures: dict[str, float] = {}  # account -> pressure after its latest request
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
        if len(hit):
            del self.states[account.id]  # the account is banned: its state goes with it
            self.pressures.pop(account.id, None)
            return int(hit[0])
        self.pressures[account.id] = float(self.pressure(np.asarray(stats)[-1], threshold))
        return len(x)

    def pressure(self, stat: Any, threshold: float) -> float:
        """How close one statistic is to flagging, scaled so that 1 is the threshold (NaN: no score yet). What the
        owner's dashboard shows, and the defender's observation summarises."""
        return float("nan")

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
