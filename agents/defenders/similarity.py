"""The similarity-based stateful detector of seed 003 §VI-A: ban an account at ``ban_pairs`` similar pairs.

Zhang, Chen & Wagner, "Towards Characterizing Model Extraction Queries and How to Detect Them" (seed 003,
§VI-A, §VIII-A), after the Stateful Detector of Chen, Carlini & Wagner, "Stateful Detection of Black-Box
Adversarial Attacks", 2019 (https://arxiv.org/abs/1907.05587). A similarity encoder ``f`` is first trained
to classify the owner's data, then with the contrastive loss of Eq. 6,
``||f(x0) - f(x+)||^2 + max(0, m^2 - ||f(x0) - f(x-)||^2)`` with ``m = sqrt(10)``, where ``x+`` is ``x0``
slightly transformed (a shift of at most one pixel plus faint noise) and ``x-`` another training image.
Per account, a pair of queries is *similar* when their encodings lie closer than ``delta``; the account is
banned once it has sent ``ban_pairs`` (50) similar pairs. ``delta`` is calibrated to a target FPR.

Departures: the encoder is a small MLP rather than Chen et al.'s CIFAR CNN (our images are 8x8 or 28x28
digits, and it must train in seconds); pairs are counted within the newest ``max_history`` queries (the
paper keeps the whole history), which bounds memory and per-query cost.

Volume: the statistic counts pairs, and an account of ``n`` natural queries has ``n (n - 1) / 2`` of them, so
even natural traffic crosses ``ban_pairs`` once an account sends enough: the FPR holds for accounts of about
``tune_queries`` queries (the calibration's stream length), not for heavier ones. Measured on digits
(``benchmarks/bench_detectors.py``, ``delta`` calibrated by the empirical quantile used before issue 14, 200
accounts each sending distinct natural pool images): 0% of accounts banned at 100 and 150 queries, 100% at 300 and
at 539 (the whole pool: what the plain ``random`` attacker sends, losing 2 of its 3 accounts); on mnist8x8, 0% at
150, 35.5% at 300, 100% at 539. With the certified calibration (1,000 streams, 0.3% at 95% confidence), 0.1% of
1,000 game-like 100-query digits accounts were flagged (``benchmarks/bench_defences_2022.py``).
This is the detector's nature, not a defect of the count: seed 003 (§VIII-A, Table IX) reports its FPR on
accounts that send whole datasets, with ``delta`` tuned on such streams. Set ``tune_queries`` to the largest
volume a benign account is expected to send (here at most the 299 images of the held-out third of the digits
train split per stream), or accept that heavy natural users are asked to open another account.

Cost: the count is an exact range search in the ``embed_dim``-dimensional encoding space
(:func:`~extractgym.agents.detection.distances.count_within_prefix`: one BLAS product against the history and the
batch's earlier queries, exact recheck of pairs within rounding of ``delta``, equal to brute force), so per-query cost and memory are linear in the history
up to ``max_history`` (``benchmarks/bench_detector_latency.py``: about 0.6 ms per query at batch 1 and 0.05 ms
at batch 64 for the default 10^4, 2.7 MiB per account). An exact k-d-tree index (scipy's cKDTree in a
log-structured forest with FIFO eviction, candidates rechecked exactly) was built and measured: at batch 1 it
was no faster at 10^4 and 1.8x faster at 10^5, slower than the scan from batch 16 on, and still grew with the
history (32 dimensions, and attack histories with hundreds of neighbours within ``delta``): not adopted. faiss'
flat index was no faster than numpy's BLAS; its approximate indexes cannot give exact counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from extractgym.agents.detection.distances import blas_threads, count_within_prefix, pair_dists
from extractgym.agents.detection.encoders import SimilarityEncoder, encode, on_device, trained_encoder
from extractgym.agents.detection.history import History
from extractgym.agents.detection.stateful import StatefulDetector
from extractgym.agents.refs import ImageDefenderData
from extractgym.agents.registry import register_defender
from extractgym.victims.answers import RowTable
from extractgym.victims.zoo import dataset_fingerprint


@dataclass
class SimilarityState:
    history: History
    pairs: int = 0


@register_defender("similarity")
class SimilarityDetector(StatefulDetector):
    """Seed 003's similarity detector (similar-pair counting on contrastive encodings).

    Args:
        data: the owner's training dataset (trains the encoder; its train split tunes ``delta``).
        threshold: ``delta``, the encoding distance under which two queries are similar; ``None`` calibrates.
        ban_pairs: similar pairs that get an account banned (seed 003: 50).
        margin: ``m`` of Eq. 6 (seed 003: sqrt(10)).
        embed_dim: encoding size.
        target_fpr, max_history, tune_accounts, tune_queries, seed: see :class:`~extractgym.agents.detection.stateful.StatefulDetector`
            (``seed`` also seeds the encoder's training).
        throttle_at: a graduated response (``None``: off). Once an account has sent ``throttle_at * ban_pairs``
            similar pairs, its queries are refused without a ban (not answered; charged only if the service charges
            rejections), and the account is banned at ``ban_pairs`` as before: refused queries still count, since
            the detector saw them. Throttling before terminating is how API providers commonly escalate (rate
            limits, then suspension); seed 003 bans outright. A refusal is what an attacker sees of "detection
            nears" (the observation's ``refused``): the stakes scenario ``rl-sybil`` is built on it.
    Knob ``level``: multiplies ``delta`` (higher flags more).
    """

    flag_above = True
    default_threshold = 1.0

    def __init__(self, data: ImageDefenderData = "digits", threshold: float | None = None, ban_pairs: int = 50,
                 margin: float = float(np.sqrt(10.0)), embed_dim: int = 32, target_fpr: float | None = None,
                 max_history: int = 10_000, tune_accounts: int = 1000, tune_queries: int = 150, seed: int = 0,
                 throttle_at: float | None = None) -> None:
        if threshold is not None and threshold <= 0:
            raise ValueError(f"threshold (the similarity radius delta) must be > 0 or None, got {threshold}")
        if ban_pairs < 1:
            raise ValueError(f"ban_pairs must be >= 1, got {ban_pairs}")
        if not np.isfinite(margin) or margin <= 0:
            raise ValueError(f"margin must be finite and > 0, got {margin}")
        if embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {embed_dim}")
        if throttle_at is not None and not (math.isfinite(throttle_at) and 0.0 < throttle_at < 1.0):
            raise ValueError(f"throttle_at must be in (0, 1) (a share of ban_pairs) or None, got {throttle_at}")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed)
        self.ban_pairs, self.margin, self.embed_dim = ban_pairs, float(margin), embed_dim
        self.throttle_at = None if throttle_at is None else float(throttle_at)
        self.encoder: SimilarityEncoder | None = None
        self.rows: RowTable | None = None

    def params(self) -> tuple:
        return (*super().params(), self.ban_pairs, self.margin, self.embed_dim)

    def prepare(self, service: str) -> None:
        if self.encoder is None:
            self.encoder = on_device(trained_encoder("similarity", self.x_train, self.y_train, self.seed, self.margin,
                                                     self.embed_dim, data=dataset_fingerprint(self.data),
                                                     fit="two-thirds"), self.device)

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            self.prepare("")
        return encode(self.encoder, x)

    def encode_traffic(self, x: np.ndarray) -> np.ndarray:
        """Encodings of screened queries: with the scenario's ``answer_table`` (``row_sources`` set), rows of its
        benign and pool data come from a table of this encoder computed once per process
        (:class:`~extractgym.victims.answers.RowTable`); calibration always encodes."""
        if not self.row_sources:
            return self.encode(x)
        if self.rows is None:
            self.encode(x[:0])
            self.rows = RowTable(lambda v: encode(self.encoder, v), ("similarity", repr(self.params())),
                                 self.row_sources)
        return self.rows.apply(self.encode, x)

    def new_state(self, service: str) -> SimilarityState:
        return SimilarityState(History(self.max_history, self.embed_dim))

    def update(self, state: SimilarityState, x: np.ndarray, service: str, threshold: float) -> np.ndarray:
        """Cumulative similar pairs after each query (pairs with the history and with earlier batch queries)."""
        z = self.encode_traffic(x)
        with blas_threads():  # pairs with the history and with the batch's earlier queries, in one product
            new = count_within_prefix(z, state.history.rows, threshold, state.history.sq_norms)
        total = state.pairs + np.cumsum(new)
        state.pairs = int(total[-1])
        state.history.append(z)
        return total

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return stats >= self.ban_pairs

    def pressure(self, stat: float, threshold: float) -> float:
        return float(stat) / self.ban_pairs

    def pressures_of(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return np.asarray(stats, dtype=np.float64) / self.ban_pairs

    def critical(self, stream: np.ndarray, service: str, batch: int = 50) -> float:
        """The ``ban_pairs``-th smallest distance among the pairs the stream would have counted."""
        history = History(self.max_history, self.embed_dim)
        found: list[np.ndarray] = []
        for i in range(0, len(stream), batch):
            z = self.encode(stream[i:i + batch])
            found.append(pair_dists(z, history.rows).ravel())
            found.append(pair_dists(z, z)[np.tril_indices(len(z), k=-1)])
            history.append(z)
        d = np.concatenate(found)
        k = self.ban_pairs
        return float(np.partition(d, k - 1)[k - 1]) if len(d) >= k else np.inf
