"""ActiveThief's Uncertainty strategy: buy the pool samples on which the surrogate is least sure.

Pal et al., "ActiveThief: Model Extraction Using Active Learning and Unannotated Public Data", AAAI 2020
(https://doi.org/10.1609/aaai.v34i01.5432), after Lewis & Gale 1994; seed 003 §III-C, Eq. 5. Each round
the surrogate scores every unsent pool sample by the entropy of its softmax and the top-k are bought.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.extraction.pool import PoolAttacker, entropy, top_k
from extractgym.agents.registry import register_attacker


@register_attacker("uncertainty")
class UncertaintyAttacker(PoolAttacker):
    """Entropy (uncertainty) sampling from the attacker's pool.

    Args:
        pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target: as for
            :class:`~extractgym.agents.extraction.pool.PoolAttacker`.
    """

    # the constructor (and so the YAML parameter schema) is PoolAttacker's

    def select(self, n: int, knobs: dict[str, Any]) -> np.ndarray:
        cand, probs = self.unsent_probs()
        return cand[top_k(entropy(probs), n)]
