"""An attacker body with tactics: the body's knobs plus the tactics' knobs, one seat."""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.tactics.base import TACTICS, Tactics
from extractgym.envs.protocols import Knob


def build_tactics(specs: dict[str, dict[str, Any]]) -> Tactics:
    """``{"sybil": {...}, "blinding": {...}, "filter": {...}}`` -> :class:`Tactics` (params already validated)."""
    unknown = sorted(set(specs) - set(TACTICS))
    if unknown:
        raise ValueError(f"unknown tactic(s) {', '.join(unknown)}; known: {', '.join(TACTICS)}")
    return Tactics(**{name: TACTICS[name](**params) for name, params in specs.items()})


class TacticalAttacker:
    """Wraps an attacker body so that its :meth:`~extractgym.agents.base.AttackerBase.send` goes through
    ``tactics``; the seat's knobs are the body's followed by each tactic's (names must not clash)."""

    def __init__(self, body: Any, tactics: Tactics) -> None:
        self.body, self.tactics = body, tactics
        body.tactics = tactics
        knobs: tuple[Knob, ...] = tuple(body.knobs)
        for t in tactics.active:
            knobs += tuple(t.knobs)
        names = [k.name for k in knobs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"tactic knob(s) {', '.join(clash)} clash with the body's knobs")
        self.knobs = knobs
        self._body_knobs = {k.name for k in body.knobs}
        self.registry_name = getattr(body, "registry_name", type(body).__name__)

    @property
    def target(self) -> str:
        return self.body.target

    def bind(self, client: Any, rng: np.random.Generator) -> None:
        # the body keeps the seat's generator (a seat with inert tactics plays exactly as without them);
        # spawning a child does not draw from the parent's stream
        tactic_rng = rng.spawn(1)[0]
        self.body.bind(client, rng)
        self.tactics.bind(self.body, tactic_rng)

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        for t in self.tactics.active:
            t.set_knobs({k.name: knobs[k.name] for k in t.knobs if k.name in knobs})
        self.body.play_round({k: v for k, v in knobs.items() if k in self._body_knobs}, round_index)

    def predict_proba(self, x: Any) -> np.ndarray:
        return self.body.predict_proba(x)

    def stats(self) -> dict[str, Any]:
        return self.tactics.stats()

    def __getattr__(self, name: str) -> Any:  # the body's other attributes (surrogate, pool, ...)
        if name in ("body", "tactics") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.body, name)
