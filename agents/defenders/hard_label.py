"""Hard labels: return only the top class, as a one-hot vector.

The output-granularity defence discussed by Tramèr et al., "Stealing Machine Learning Models via
Prediction APIs", USENIX Security 2016 (https://arxiv.org/abs/1609.02943) and seed 003 §II-B
(its default threat model). Label-only extraction still works (seed 001), so this mostly costs the
attacker the soft-label bonus; it never changes the top class, so benign utility stays 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender
from extractgym.envs.outputs import one_hot_top
from extractgym.envs.protocols import Knob


@register_defender("hard-label")
class HardLabel(DefenderBase):
    """Knob ``enabled``: a brain may switch the defence off (e.g. while traffic looks benign)."""

    pure_shape = True

    def __init__(self, enabled: bool = True) -> None:
        self.knobs = (Knob.around("enabled", (False, True), bool(enabled)),)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        return one_hot_top(probs) if knobs["enabled"] else probs
