"""A defence whose brain chooses, round by round, which output perturbation the API applies.

The output-perturbation defences of the literature (none, reverse sigmoid, MAD, top-1 labels, rounding, noise...)
trade the attacker's extraction against what honest customers are served: which one pays depends on what the
attacker does (seed 002's temperature vs label-only queries; seed 000's finding that label-only extraction barely
suffers from perturbation). This body makes the choice itself a knob, so a defender brain can play the duel:
each component is a registered defender built with its own parameters, and the ``defence`` knob picks which one
screens and shapes this round (its own knobs stay at their presets).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import DEFENDERS, register_defender
from extractgym.envs.api import Account, DefenderView
from extractgym.envs.protocols import Knob, preset_values

DEFAULT = ("none", "reverse-sigmoid", "mad", "hard-label")


@register_defender("switch")
class PerturbationSwitch(DefenderBase):
    """A ``defence`` knob choosing among output perturbations each round.

    Args:
        defences: registered defenders to choose from (each with its defaults unless ``params`` says otherwise).
        default: the preset choice (default: the first).
        params: ``{defence: {parameter: value}}`` for the components.
    """

    def __init__(self, defences: list[str] = list(DEFAULT), default: str | None = None,  # noqa: B006
                 params: dict[str, dict[str, Any]] | None = None) -> None:
        if not defences or len(set(defences)) != len(defences):
            raise ValueError(f"defences must name distinct defenders, got {defences}")
        unknown = [d for d in defences if d not in DEFENDERS or d == "switch"]
        if unknown:
            raise ValueError(f"unknown defender(s) {unknown}; known: {', '.join(sorted(set(DEFENDERS) - {'switch'}))}")
        params = dict(params or {})
        extra = sorted(set(params) - set(defences))
        if extra:
            raise ValueError(f"params for defender(s) {extra} not in defences {defences}")
        default = defences[0] if default is None else default
        if default not in defences:
            raise ValueError(f"default {default!r} is not among defences {defences}")
        self.names = tuple(defences)
        self.components = {name: DEFENDERS[name](**params.get(name, {})) for name in defences}
        self.presets = {name: preset_values(c.knobs) for name, c in self.components.items()}
        self.knobs = (Knob("defence", self.names, self.names.index(default)),)

    @property
    def pure_shape(self) -> bool:
        return all(getattr(c, "pure_shape", False) for c in self.components.values())

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        for component, child in zip(self.components.values(), rng.spawn(len(self.components)), strict=True):
            component.bind(view, child)

    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> Any:
        name = knobs["defence"]
        return self.components[name].screen(account, x, self.presets[name])

    def shape(self, probs: np.ndarray, account: Account | None, x: np.ndarray | None,
              knobs: Mapping[str, Any]) -> np.ndarray:
        name = knobs["defence"]
        return self.components[name].shape(probs, account, x, self.presets[name])

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        for name, component in self.components.items():
            component.end_round(round_index, self.presets[name])
