"""Rounding: reveal probabilities to ``decimals`` places only.

Tramèr et al. 2016 §8 (https://arxiv.org/abs/1609.02943) round confidences to limit equation-solving
attacks; ART's ``Rounded`` postprocessor does the same. Plain rounding leaves rows that no longer sum to
one (three classes at 1/3 each round to 0.999), so we round by the largest-remainder method: every entry is
a multiple of 10**-decimals *and* each row sums to exactly one. Ties in the top class are possible when
the top two probabilities round to the same value; the arg-max then favours the lower index as numpy does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender
from extractgym.envs.protocols import Knob


def round_on_simplex(probs: np.ndarray, decimals: int) -> np.ndarray:
    """Largest-remainder rounding of each row to multiples of ``10**-decimals`` summing to 1."""
    scale = 10 ** int(decimals)
    scaled = np.clip(probs, 0.0, None) * scale / np.clip(probs.sum(axis=1, keepdims=True), 1e-300, None)
    floor = np.floor(scaled)
    short = (scale - floor.sum(axis=1)).round().astype(np.int64)  # units still to hand out per row
    order = np.argsort(-(scaled - floor), axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(probs.shape[1])[None, :].repeat(len(probs), 0), axis=1)
    return (floor + (ranks < short[:, None])) / scale


@register_defender("rounding")
class Rounding(DefenderBase):
    """Knob ``decimals``: 1 (coarse) to 4 (fine)."""

    def __init__(self, decimals: int = 2) -> None:
        if not 0 <= decimals <= 8:
            raise ValueError(f"decimals must be in [0, 8], got {decimals}")
        self.knobs = (Knob.around("decimals", (1, 2, 3, 4), int(decimals)),)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        return round_on_simplex(probs, knobs["decimals"])
