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
        knobs: ``{defence: {knob: value}}``: the components' own knob values (default: their presets), e.g. a
            stricter detector ``{similarity: {level: 2.0}}``.
    """

    def __init__(self, defences: list[str] = list(DEFAULT), default: str | None = None,  # noqa: B006
                 params: dict[str, dict[str, Any]] | None = None,
                 knobs: dict[str, dict[str, Any]] | None = None) -> None:
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
        knobs = dict(knobs or {})
        extra = sorted(set(knobs) - set(defences))
        if extra:
            raise ValueError(f"knobs for defender(s) {extra} not in defences {defences}")
        self.presets = {}
        for name, c in self.components.items():
            values = preset_values(c.knobs)
            for knob, value in knobs.get(name, {}).items():
                k = next((k for k in c.knobs if k.name == knob), None)
                if k is None or value not in k.choices:
                    raise ValueError(f"knobs.{name}.{knob}: " + (f"{name} has no knob {knob!r}; knobs: "
                                     f"{', '.join(k.name for k in c.knobs)}" if k is None else
                                     f"no choice {value!r}; choices: {list(k.choices)}"))
                values[knob] = value
            self.presets[name] = values
        self.knobs = (Knob("defence", self.names, self.names.index(default)),)
        self.active = default

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

    @property
    def pressures(self) -> dict[str, float]:
        """The pressures (closeness to a flag, per account) of the component that screened the last round, if it keeps
        them (the defender's observation reads them)."""
        pressures = getattr(self.components[self.active], "pressures", None)
        return pressures if isinstance(pressures, dict) else {}

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        self.active = knobs["defence"]
        for name, component in self.components.items():
            component.end_round(round_index, self.presets[name])
