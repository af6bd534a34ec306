"""The base of the query-cache detectors (``blacklight``, ``piha``): reject a query too similar to a stored one, ban
an account after ``ban_after`` rejections.

Li et al.'s Blacklight (USENIX Security 2022) and Choi et al.'s perceptual-hashing defence (PIHA) keep a cache of
past queries and *reject* a query that matches one, answering nothing (the OARS authors' ``StatefulClassifier``
with ``action: rejection``): unlike the stateful detectors of seed 003, which ban at the first flag, a rejected
account stays open, so an adaptive attacker can read the rejection and try again (Feng et al., OARS, CCS 2023).
Here an account is banned once ``ban_after`` of its queries were rejected (the API's
:class:`~extractgym.envs.api.Verdict`: rejected queries are served nothing and charged only where the service's
``charge_rejected`` says; queries after the ban are not served, and are billed as rejected ones where it says so).

Each query is reduced to a *similarity* in ``[0, 1]`` to the most similar stored query (and to the batch's earlier
ones), computed by the subclass; it is rejected iff the similarity exceeds the threshold. The ``scope`` knob says
against which cache: the account's own (``account``) or every account's (``global``: what Blacklight deploys, so
Sybil accounts do not help). Both caches are kept up to date whatever the knob says, so a brain can switch; every
query is stored, rejected or not (``add_cache_hit`` in the OARS configs), each cache FIFO-bounded by
``max_history``. An exact repeat of a query the cache answered (the same bytes) is answered again and neither stored
nor counted: it can reveal nothing the first answer did not (the victim and the defences are deterministic for it),
and benign customers re-send the same images (a departure: Blacklight would reject it as a perfect match). A
rejected query sent again is no such repeat: it matches its stored copy and is rejected again, on any account in the
``global`` scope.

Calibration (:mod:`~extractgym.agents.detection.stateful`): a stream's critical value is its ``ban_after``-th largest
similarity, the threshold below which it would be banned; the calibrated threshold certifies ``target_fpr`` on
per-account streams of the owner's held-out data. The ``global`` scope uses the same threshold, so its benign
false-positive rate also depends on what the other customers send (measured, not certified:
``benchmarks/bench_defences_2022.py``). Knob ``level`` multiplies the threshold (higher rejects less).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from extractgym.agents.detection.hashindex import DigestSet, input_digests
from extractgym.agents.detection.stateful import StatefulDetector
from extractgym.envs.api import Account, DefenderView, Verdict
from extractgym.envs.protocols import Knob

SCOPES = ("account", "global")
LEVELS = (0.5, 0.8, 1.0, 1.25, 2.0)


@dataclass
class CacheState:
    """One cache: the detector's store of query features and the digests of the exact queries in it."""

    store: Any
    digests: DigestSet


class RejectingDetector(StatefulDetector):
    """Query-cache detectors: reject similar queries, ban after ``ban_after`` rejections (module docstring).

    Subclasses define :meth:`features` (a batch's features), :meth:`new_store`, :meth:`similarity` (per query,
    against a store and the batch's earlier rows) and :meth:`store` (add features). Common args besides
    :class:`~extractgym.agents.detection.stateful.StatefulDetector`'s: ``ban_after`` (rejections that ban an account) and
    ``scope`` (the knob's preset).
    """

    flag_above = False  # rejected iff similarity > threshold: a stream is banned iff threshold < its critical value
    default_threshold = 0.5

    def __init__(self, data: str, threshold: float | None, ban_after: int, scope: str, target_fpr: float | None,
                 max_history: int, tune_accounts: int, tune_queries: int, seed: int) -> None:
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold (the similarity above which a query is rejected) must be in [0, 1] or None, "
                             f"got {threshold}")
        if ban_after < 1:
            raise ValueError(f"ban_after must be >= 1, got {ban_after}")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed, LEVELS)
        self.ban_after, self.scope = ban_after, scope
        self.knobs = (*self.knobs, Knob.around("scope", SCOPES, scope))
        self.shared: dict[str, CacheState] = {}
        self.rejections: dict[str, int] = {}

    def params(self) -> tuple:
        return (*super().params(), self.ban_after)

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        self.shared = {s: self.new_state(s) for s in self.watched}
        self.rejections = {}

    # -- per detector -----------------------------------------------------------------------------
    def features(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def new_store(self, service: str) -> Any:
        raise NotImplementedError

    def similarity(self, store: Any, feats: np.ndarray) -> np.ndarray:
        """Per row of ``feats``: the similarity in [0, 1] to the most similar stored row or earlier row of the batch."""
        raise NotImplementedError

    def store(self, store: Any, feats: np.ndarray) -> None:
        raise NotImplementedError

    # -- the cache --------------------------------------------------------------------------------
    def new_state(self, service: str) -> CacheState:
        return CacheState(self.new_store(service), DigestSet(self.max_history))

    def _match(self, state: CacheState, feats: np.ndarray, digests: np.ndarray) -> np.ndarray:
        stats = np.asarray(self.similarity(state.store, feats), dtype=np.float64)
        stats[state.digests.repeats(digests)] = 0.0  # an exact repeat is answered and not counted
        return stats

    def _add(self, state: CacheState, feats: np.ndarray, digests: np.ndarray, answered: np.ndarray) -> None:
        """Store the batch's queries that are not exact repeats of answered ones; only the ``answered`` ones join the
        digests (a rejected query sent again is no repeat of an answer: it is matched, and rejected, again)."""
        fresh = ~state.digests.repeats(digests)
        if fresh.any():
            self.store(state.store, feats[fresh])
            state.digests.add(digests[fresh & answered])

    def update(self, state: CacheState, x: np.ndarray, service: str, threshold: float) -> np.ndarray:
        """Similarities of the batch ``x`` to the cache ``state`` (then stored in it)."""
        feats, digests = self.features(x), input_digests(x)
        stats = self._match(state, feats, digests)
        self._add(state, feats, digests, ~self.flags(stats, threshold))
        return stats

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return stats > threshold

    def reduce(self, stats: list[np.ndarray], state: Any) -> float:
        s = np.sort(np.concatenate(stats))
        return float(s[-self.ban_after]) if len(s) >= self.ban_after else -np.inf

    # -- screening --------------------------------------------------------------------------------
    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> Verdict | int:
        if account.service not in self.watched or len(x) == 0:
            return len(x)
        own = self.states.get(account.id)
        if own is None:
            own = self.states[account.id] = self.new_state(account.service)
        shared = self.shared[account.service]
        feats, digests = self.features(x), input_digests(x)
        stats = self._match(shared if knobs["scope"] == "global" else own, feats, digests)
        reject = self.flags(stats, self.current(account.service, knobs["level"]))
        self._add(own, feats, digests, ~reject)
        self._add(shared, feats, digests, ~reject)
        count = self.rejections.get(account.id, 0) + np.cumsum(reject)
        over = np.flatnonzero(count >= self.ban_after)
        if len(over):  # the ban_after-th rejection bans the account: nothing from it on is served
            del self.states[account.id]
            self.rejections.pop(account.id, None)
            return Verdict(~reject & (np.arange(len(x)) < over[0]), ban=True)
        self.rejections[account.id] = int(count[-1])
        return Verdict(~reject) if reject.any() else len(x)
