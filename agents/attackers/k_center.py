"""ActiveThief's K-center strategy: a greedy core-set of the surrogate's probability vectors.

Pal et al., "ActiveThief", AAAI 2020 (https://doi.org/10.1609/aaai.v34i01.5432); Sener & Savarese, "Active
Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018 (https://arxiv.org/abs/1708.00489);
seed 003 §III-C. The probability vectors (under the current surrogate) of the samples bought so far are the
centers; each pick is the unsent sample farthest from its nearest center, which then becomes a center.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.extraction.pool import PoolAttacker, k_center_greedy
from extractgym.agents.registry import register_attacker


@register_attacker("k-center")
class KCenterAttacker(PoolAttacker):
    """Greedy K-center sampling in the surrogate's output space.

    Args:
        pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target: as for
            :class:`~extractgym.agents.extraction.pool.PoolAttacker`.
    """

    # the constructor (and so the YAML parameter schema) is PoolAttacker's

    def select(self, n: int, knobs: dict[str, Any]) -> np.ndarray:
        cand, probs = self.unsent_probs()
        centers = self.surrogate.predict_proba(self.pool[np.concatenate(self.bought)])
        return cand[k_center_greedy(probs, centers, n)]
