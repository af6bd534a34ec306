"""ActiveThief's DFAL and DFAL+K-center strategies: buy the pool samples closest to the surrogate's boundary.

Pal et al., "ActiveThief", AAAI 2020 (https://doi.org/10.1609/aaai.v34i01.5432); Ducoffe & Precioso,
"Adversarial Active Learning for Deep Networks: a Margin Based Approach", 2018 (https://arxiv.org/abs/1802.09841);
seed 003 §III-C. DeepFool is run on the surrogate for every unsent sample (batched); the k samples with the
smallest perturbation ``||x - x'||²`` are bought. As in ActiveThief the ORIGINAL samples are sent, never the
adversarial ones. With ``preselect > 0`` (registered as ``dfal-k-center``) DFAL first keeps the
``preselect * k`` closest samples and greedy K-center on the surrogate's probability vectors picks k of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.extraction.pool import PoolAttacker, deepfool_distances, k_center_greedy, top_k
from extractgym.agents.extraction.surrogate import WARM_STEPS
from extractgym.agents.refs import AttackerData, TargetService, split_of
from extractgym.agents.registry import register_attacker


@register_attacker("dfal")
class DfalAttacker(PoolAttacker):
    """DeepFool active learning (optionally followed by K-center).

    Args:
        pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target: as for
            :class:`~extractgym.agents.extraction.pool.PoolAttacker`.
        preselect: 0 for plain DFAL; ``m > 0`` keeps the ``m * k`` smallest perturbations, then K-center picks k.
        max_iter: DeepFool iterations; ``overshoot``: DeepFool's overshoot.
    """

    def __init__(self, pool: AttackerData = "digits", pool_split: split_of("pool") = "pool", queries_per_round: int = 50,
                 labels: str = "soft", surrogate: str = "auto", train_steps: int = WARM_STEPS, warm_start: bool = True,
                 target: TargetService | None = None, preselect: int = 0, max_iter: int = 30, overshoot: float = 0.02) -> None:
        super().__init__(pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target)
        if preselect < 0:
            raise ValueError(f"preselect must be >= 0, got {preselect}")
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        if not 0 <= overshoot < 1:
            raise ValueError(f"overshoot must be in [0, 1), got {overshoot}")
        self.preselect, self.max_iter, self.overshoot = preselect, max_iter, overshoot

    def select(self, n: int, knobs: dict[str, Any]) -> np.ndarray:
        cand = np.flatnonzero(self.unsent)
        dist = deepfool_distances(self.surrogate.model, self.surrogate.features(self.pool[cand]),
                                  self.max_iter, self.overshoot)
        if not self.preselect:
            return cand[top_k(-dist, n)]
        near = cand[top_k(-dist, self.preselect * n)]
        probs = self.surrogate.predict_proba(self.pool[near])
        centers = self.surrogate.predict_proba(self.pool[np.concatenate(self.bought)])
        return near[k_center_greedy(probs, centers, n)]


@register_attacker("dfal-k-center")
class DfalKCenterAttacker(DfalAttacker):
    """ActiveThief's DFAL+K-center: :class:`DfalAttacker` preset with ``preselect=4`` (same parameters)."""

    def __init__(self, pool: AttackerData = "digits", pool_split: split_of("pool") = "pool", queries_per_round: int = 50,
                 labels: str = "soft", surrogate: str = "auto", train_steps: int = WARM_STEPS, warm_start: bool = True,
                 target: TargetService | None = None, preselect: int = 4, max_iter: int = 30, overshoot: float = 0.02) -> None:
        if preselect < 1:
            raise ValueError(f"dfal-k-center needs preselect >= 1 (0 is plain 'dfal'), got {preselect}")
        super().__init__(pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target,
                         preselect, max_iter, overshoot)
