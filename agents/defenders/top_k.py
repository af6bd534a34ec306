"""Top-k: reveal only the k most likely classes, renormalised so each row stays a distribution.

The "return fewer classes" countermeasure of Tramèr et al. 2016 (https://arxiv.org/abs/1609.02943) and
Orekondy et al., "Knockoff Nets" §6 (https://arxiv.org/abs/1812.02766). Renormalising (rather than
leaving the mass missing) keeps outputs on the simplex and preserves the ranking of the revealed classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender
from extractgym.envs.outputs import top_k
from extractgym.envs.protocols import Knob


@register_defender("top-k")
class TopK(DefenderBase):
    """Knob ``k``: how many classes to reveal (1 is hard labels)."""

    def __init__(self, k: int = 3) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.knobs = (Knob.around("k", (1, 2, 3, 5), int(k)),)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        return top_k(probs, knobs["k"])
