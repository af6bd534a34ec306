"""Temperature softening: serve ``softmax(logits / T)`` instead of ``softmax(logits)``.

The SOFT defence of seed 002 (extraction and attribute inference against BERT-based APIs, §5 "Softening
predictions", Table 7; the temperature of Hinton et al., https://arxiv.org/abs/1503.02531): a higher temperature
flattens the posterior, a lower one sharpens it, and ``T -> 0`` gives the hard label. The API only has
probabilities, but ``log p`` equals the logits up to a per-row constant, which softmax ignores, so
``softmax(log p / T)`` is exactly the softened posterior. Softening never changes the ranking of the classes, so benign users keep their top
class; seed 002 found it does not stop extraction (at ``T = 5`` it even helped the attacker on AG news).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender
from extractgym.envs.protocols import Knob


def soften(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` per row; ``temperature = 0`` is its limit (mass split over the tied top).

    Zero entries stay zero for any ``temperature > 0`` (their logit is minus infinity). A row with no positive entry
    (not a distribution) becomes uniform.
    """
    if temperature == 1.0:
        return probs
    p = np.clip(probs, 0.0, None)
    if temperature == 0.0:
        top = p == p.max(axis=1, keepdims=True)
        return top / top.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        z = np.log(p) / temperature
    peak = z.max(axis=1, keepdims=True)
    dead = ~np.isfinite(peak)  # all-zero row
    e = np.exp(z - np.where(dead, 0.0, peak))
    e[dead[:, 0]] = 1.0
    return e / e.sum(axis=1, keepdims=True)


@register_defender("temperature")
class Temperature(DefenderBase):
    """Knob ``temperature``: ``T`` of ``softmax(logits / T)``; 1 serves the victim as it is, 0 the hard label.

    Args:
        temperature: the preset ``T >= 0``.
    """

    def __init__(self, temperature: float = 5.0) -> None:
        if not math.isfinite(temperature) or temperature < 0:
            raise ValueError(f"temperature must be finite and >= 0, got {temperature}")
        self.knobs = (Knob.around("temperature", (0.0, 0.5, 1.0, 2.0, 5.0), float(temperature)),)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        return soften(probs, knobs["temperature"])
