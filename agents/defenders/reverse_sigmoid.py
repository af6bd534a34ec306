"""Reverse sigmoid: a deceptive perturbation of the probabilities that misleads attackers training on them.

Lee, Edwards, Molloy & Srivastava, "Defending Against NN Model Stealing Attacks Using Deceptive Perturbations",
IEEE S&P Workshops 2019 (https://arxiv.org/abs/1806.00054), Eq. 3-4:

    r(y) = beta * (sigmoid(gamma * logit(y)) - 1/2),    y~ = alpha * (y - r(y))

with ``alpha`` renormalising each row. ``sigmoid(gamma * logit(y))`` is ``y^g / (y^g + (1 - y)^g)``, computed in
that form so that ``y = 0`` and ``y = 1`` are exact (no clipping of the logit, which would move small
probabilities: ART's ``ReverseSigmoid`` clips at 1e-9, so an entry of 0 gets ``r = beta * (sigmoid(-20.7 gamma) -
1/2)`` instead of ``-beta / 2``). Small probabilities are pushed *up* and the perturbation is non-monotonic: as
``y`` falls towards 0 the served value rises again towards ``beta / 2``, so the order of the small classes inverts
and the served log-probabilities, which a soft-label attacker fits, point away from the victim's logits. Entries
pushed below zero (``y`` near 1 when ``beta > 2``) are clipped before renormalising, as in ART. The top class is
not guaranteed: a flat row whose runner-up classes are near zero can be overtaken by them at large ``beta``.
Label-only attackers see only the arg-max, which Lee et al. do not claim to protect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender
from extractgym.envs.protocols import Knob


def reverse_sigmoid_perturbation(y: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """``r(y) = beta * (sigmoid(gamma * logit(y)) - 1/2)`` elementwise, exact at ``y`` in {0, 1}."""
    y = np.clip(y, 0.0, 1.0)
    a, b = y ** gamma, (1.0 - y) ** gamma
    return beta * (a / (a + b) - 0.5)


def reverse_sigmoid(probs: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """Lee et al.'s ``alpha * (y - r(y))`` per row, clipped at 0; a row clipped to all zeros becomes uniform."""
    if beta == 0:
        return probs
    out = np.clip(probs - reverse_sigmoid_perturbation(probs, beta, gamma), 0.0, None)
    total = out.sum(axis=1, keepdims=True)
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), 1.0 / probs.shape[1])


@register_defender("reverse-sigmoid")
class ReverseSigmoid(DefenderBase):
    """Knob ``beta``: the perturbation's magnitude (0 serves the victim as it is).

    Args:
        beta: the preset magnitude, ``>= 0``.
        gamma: the convergence parameter, ``> 0``: how fast the perturbation saturates as ``y`` leaves 1/2
            (dataset- and model-specific in Lee et al.; ART defaults to 0.1, Orekondy et al.'s code to 1).
    """

    pure_shape = True

    def __init__(self, beta: float = 1.0, gamma: float = 0.1) -> None:
        if not math.isfinite(beta) or beta < 0:
            raise ValueError(f"beta must be finite and >= 0, got {beta}")
        if not math.isfinite(gamma) or gamma <= 0:
            raise ValueError(f"gamma must be finite and > 0, got {gamma}")
        self.gamma = float(gamma)
        self.knobs = (Knob.around("beta", (0.0, 0.1, 0.3, 0.7, 1.0), float(beta)),)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        return reverse_sigmoid(probs, knobs["beta"], self.gamma)
