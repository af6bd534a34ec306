"""Content linker: link the accounts whose queries are jointly shifted away from benign traffic, confirm the cluster
by a pooled two-sample test on held-out queries, and act on it (docs/sybil.md).

Liu, Guo & Dong, "An Embarrassingly Simple Detector for Model Extraction Attacks in Large Language Model API
Traffic", arXiv 2606.05725 (2026; code LabRAI/mmd-llm-mea-detection): extraction queries look benign one at a time,
but a *window* of traffic that contains them deviates in distribution from historical benign traffic. They embed
queries, compute the unbiased MMD^2 (Gretton et al., "A Kernel Two-Sample Test", JMLR 2012) of the window against
benign reference traffic with an RBF kernel of median-heuristic bandwidth, and flag it above a quantile of
benign-vs-benign scores (0.3% benign FPR and 90.5% average detection over attacker fractions). A window says *that*
a campaign is in the traffic; linking needs *which accounts*. Here, per round:

1. the window is the round's traffic; its mean embedding minus the benign reference's is the MMD witness direction
   ``w`` (the direction in the kernel's feature space along which the window differs from benign);
2. each account's queries are scored along ``w`` (its mean, standardised by the benign spread along ``w`` and its
   number of queries): the accounts above ``z_account`` form the candidate cluster, jointly shifted the same way;
3. the cluster's pooled *held-out* queries (each account's stream is split in alternation: half ``A`` gives ``w`` and
   the candidates, half ``B`` tests them, so selection cannot create the effect) must deviate along ``w`` beyond
   ``z_cluster`` standard errors *and* by at least ``min_shift`` benign standard deviations per query; the cluster
   is then acted on if it has at least ``min_cluster`` accounts.

The effect-size floor is there because customers' traffic is never exactly the owner's reference data: measured on
digits, the customers' pool split sits 0.05 benign standard deviations from the owner's training split along the
witness, which any test pooled over ten thousand queries calls significant. Accounts with fewer than ``min_queries``
queries in half ``A`` are not candidates (one unusual image is not a pattern).

Departures: the kernel is evaluated through random Fourier features (Rahimi & Recht, NeurIPS 2007; ``features``
dimensions approximate the RBF kernel), so each account keeps two running sums of ``features`` numbers, O(1) memory
and cost per query whatever its history, and a round costs O(accounts x features); the test is the linear-time
witness statistic on held-out data (Gretton et al. §6; Jitkrittum et al., NeurIPS 2016) rather than a permutation
null, its threshold a normal quantile. The queries are embedded by their pixels (8x8 digits), not a learned encoder.

What it can and cannot see: a campaign whose queries come from another distribution than customers' (the attacker's
own data) shifts the window; one that sends what customers send is invisible to it, and cover traffic (natural
samples mixed into each account) dilutes each account's shift, so fewer accounts pass ``z_account``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.detection.linking import ClusterLinker
from extractgym.agents.detection.stateful import owner_data
from extractgym.agents.refs import ImageDefenderData
from extractgym.agents.registry import register_defender
from extractgym.envs.api import Account, DefenderView, Verdict
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset

LEVELS = (0.75, 1.0, 1.25, 1.5)


@register_defender("content-linker")
class ContentLinker(ClusterLinker):
    """Accounts jointly shifted along the window's MMD witness, confirmed on held-out queries.

    Args:
        data: the owner's image dataset (its train split is the benign reference; services whose queries have
            another shape are not watched).
        features: random Fourier features approximating the RBF kernel.
        z_account: an account's standardised score along the witness that makes it a candidate.
        z_cluster: the candidate cluster's pooled held-out score that confirms it.
        min_shift: the least mean shift along the witness, in benign standard deviations per query, of the
            cluster's held-out queries.
        min_queries: the fewest half-``A`` queries of a candidate account.
        seed: the random features.
        action, min_cluster: see :class:`~extractgym.agents.detection.linking.ClusterLinker`.
    Knobs: ``action``, ``min_cluster`` and ``level`` (multiplies ``z_account``: higher flags fewer).
    """

    def __init__(self, data: ImageDefenderData = "digits", features: int = 64, z_account: float = 4.0,
                 z_cluster: float = 5.0, min_shift: float = 0.3, min_queries: int = 4, seed: int = 0,
                 action: str = "ban", min_cluster: int = 10) -> None:
        super().__init__(action, min_cluster)
        if features < 1:
            raise ValueError(f"features must be >= 1, got {features}")
        if not (np.isfinite(z_account) and z_account > 0 and np.isfinite(z_cluster) and z_cluster > 0):
            raise ValueError(f"z_account and z_cluster must be finite and > 0, got {z_account}, {z_cluster}")
        self.data, self.features, self.seed = data, features, seed
        if not (np.isfinite(min_shift) and min_shift >= 0) or min_queries < 1:
            raise ValueError(f"min_shift must be finite and >= 0 and min_queries >= 1, got {min_shift}, {min_queries}")
        self.z_account, self.z_cluster = float(z_account), float(z_cluster)
        self.min_shift, self.min_queries = float(min_shift), int(min_queries)
        x, _ = owner_data(data)  # fail now, naming the dataset
        self.input_shape = tuple(x.shape[1:])
        self.knobs = (*self.knobs, Knob.around("level", LEVELS, 1.0))

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        x, _ = owner_data(self.data)
        ref = x.reshape(len(x), -1).astype(np.float64)
        g = np.random.default_rng(self.seed)
        sample = ref[g.choice(len(ref), size=min(len(ref), 1000), replace=False)]
        sq = (sample ** 2).sum(axis=1)
        d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * sample @ sample.T, 0.0)[np.triu_indices(len(sample), 1)]
        bandwidth = float(np.sqrt(np.median(d2[d2 > 0]))) if (d2 > 0).any() else 1.0  # the median heuristic
        self.w_rff = g.normal(size=(ref.shape[1], self.features)) / bandwidth
        self.b_rff = g.uniform(0.0, 2 * np.pi, size=self.features)
        self.ref_phi = self.embed(ref)
        self.mu = self.ref_phi.mean(axis=0)
        kind = get_dataset(self.data).spec.kind
        self.watched = tuple(s for s in view.services()
                             if (view.input_spec(s).kind, tuple(view.input_spec(s).shape)) == (kind, self.input_shape))
        if len(self.watched) < len(view.services()):
            warnings.warn(f"content-linker: service(s) {', '.join(s for s in view.services() if s not in self.watched)}"
                          f" take other inputs than {self.data!r} and are not watched", stacklevel=2)
        self.sums = np.zeros((2, 0, self.features))  # half A, half B: each account's running sums of features
        self.counts = np.zeros((2, 0), dtype=np.int64)
        self.window, self.window_n = np.zeros(self.features), 0  # this round's half-A traffic

    def embed(self, x: np.ndarray) -> np.ndarray:
        """Random Fourier features: ``<embed(x), embed(y)>`` approximates ``exp(-|x-y|^2 / (2 bandwidth^2))``."""
        flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        return np.sqrt(2.0 / self.features) * np.cos(flat @ self.w_rff + self.b_rff)

    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> int | Verdict:
        if account.service in self.watched and len(x) and account.id not in self.acted:
            r = self.row(account.id)
            if r >= self.sums.shape[1]:
                grow = max(r + 1, 2 * self.sums.shape[1], 64)
                self.sums = np.concatenate([self.sums, np.zeros((2, grow - self.sums.shape[1], self.features))], 1)
                self.counts = np.concatenate([self.counts, np.zeros((2, grow - self.counts.shape[1]), np.int64)], 1)
            phi = self.embed(x)
            seen = int(self.counts[:, r].sum())
            half = (seen + np.arange(len(x))) % 2  # alternate: half A (even), half B (odd)
            for h in (0, 1):
                part = phi[half == h]
                self.sums[h, r] += part.sum(axis=0)
                self.counts[h, r] += len(part)
            self.window += phi[half == 0].sum(axis=0)
            self.window_n += int((half == 0).sum())
        return self.verdict(account, len(x))

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        window, n_window = self.window, self.window_n
        self.window, self.window_n = np.zeros(self.features), 0
        n = len(self.ids)
        if n_window < 2 or n < knobs["min_cluster"]:
            return
        delta = window / n_window - self.mu
        norm = float(np.linalg.norm(delta))
        if norm == 0.0:
            return
        w = delta / norm  # the witness direction of this round's traffic
        spread = float((self.ref_phi @ w).std())
        if spread == 0.0:
            return
        base = float(self.mu @ w)
        counts_a, counts_b = self.counts[0, :n], self.counts[1, :n]
        with np.errstate(divide="ignore", invalid="ignore"):
            score = (self.sums[0, :n] @ w / counts_a - base) * np.sqrt(counts_a) / spread
        candidates = np.flatnonzero(self.open_rows(n) & (counts_a >= self.min_queries)
                                    & (score > self.z_account * knobs["level"]))
        n_b = int(counts_b[candidates].sum())
        if len(candidates) < knobs["min_cluster"] or n_b == 0:
            return
        shift = (self.sums[1, candidates].sum(axis=0) @ w / n_b - base) / spread
        pooled = shift * np.sqrt(n_b)
        if pooled > self.z_cluster and shift >= self.min_shift:
            self.act(candidates, knobs, f"{len(candidates)} accounts shifted jointly: held-out shift {shift:.2f} "
                                        f"benign sd per query, z = {pooled:.1f}")
