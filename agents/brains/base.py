"""Brains: what sets a body's knobs each round (docs/architecture.md). A brain maps an observation to an action.

* ``preset``: the body's published defaults, optionally with some knobs pinned (``knobs: {queries: 20}``).
* ``random``: a uniformly random choice per knob each round (a sanity baseline for learned brains).
* ``sticky-random``: one uniformly random action per episode, held every round (an opponent whose setting varies
  between episodes but not within one: what makes reading the observation pay).
* ``mixture``: one brain per episode drawn from a list (presets with knobs pinned, scripts, other brains), played
  for the whole episode: an opponent of a hidden *type* (``drawn`` names it; ``extractgym eval --by-type`` groups
  seeds by it).
* scripted brains that read the observation (:mod:`extractgym.agents.brains.scripts`).
A learned policy is just another callable ``obs -> action`` (e.g. an SB3 model's ``predict``).

Every brain is built as ``Brain(knobs, values, rng, **params)``: the seat's knobs, the knob values the scenario
pins (``brain: {knobs: ...}``), a seeded generator and its own keyword parameters (``brain: {params: ...}``),
validated like a body's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from extractgym.envs.protocols import Knob, encode_action


def pinned_indices(knobs: tuple[Knob, ...], values: Mapping[str, Any]) -> list[int]:
    """Per-knob choice indices: the preset, with the knobs named in ``values`` set to those values."""
    action = [k.default for k in knobs]
    by_name = {k.name: i for i, k in enumerate(knobs)}
    for name, value in values.items():
        if name not in by_name:
            raise ValueError(f"no knob {name!r}; knobs: {', '.join(by_name) or '(none)'}")
        knob = knobs[by_name[name]]
        if value not in knob.choices:
            raise ValueError(f"knob {name!r} has no choice {value!r}; choices: {list(knob.choices)}")
        action[by_name[name]] = knob.choices.index(value)
    return action


def pinned_action(knobs: tuple[Knob, ...], values: Mapping[str, Any]) -> int:
    """The flat action of :func:`pinned_indices`."""
    return encode_action(knobs, pinned_indices(knobs, values))


class PresetBrain:
    """Always the same action: the body's preset, with ``values`` pinned."""

    context_args = ("knobs", "values", "rng")  # what every brain is built with (its params come after)

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.action = pinned_action(knobs, values or {})

    def __call__(self, obs: np.ndarray) -> int:
        return self.action


class RandomBrain:
    """A uniformly random choice per knob, from its own seeded generator.

    Args:
        among: ``{knob: [values]}`` to draw some knobs from a subset of their choices only.
    """

    context_args = ("knobs", "values", "rng")

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, among: dict[str, list[Any]] | None = None) -> None:
        self.knobs = knobs
        self.rng = rng if rng is not None else np.random.default_rng(0)
        pinned = pinned_indices(knobs, values or {})
        self.fixed = {i: pinned[i] for i, k in enumerate(knobs) if k.name in (values or {})}
        self.options = [np.arange(len(k.choices)) for k in knobs]
        for name, allowed in (among or {}).items():
            i = next((j for j, k in enumerate(knobs) if k.name == name), None)
            if i is None:
                raise ValueError(f"among: no knob {name!r}; knobs: {', '.join(k.name for k in knobs)}")
            bad = [v for v in allowed if v not in knobs[i].choices]
            if bad or not allowed:
                raise ValueError(f"among.{name}: {bad or 'no values'} not among the choices {list(knobs[i].choices)}")
            self.options[i] = np.array([knobs[i].choices.index(v) for v in dict.fromkeys(allowed)])

    def __call__(self, obs: np.ndarray) -> int:
        draw = self.rng.integers(0, np.array([len(o) for o in self.options]))  # one draw per knob
        action = [int(opts[d]) for opts, d in zip(self.options, draw, strict=True)]
        for i, a in self.fixed.items():
            action[i] = a
        return encode_action(self.knobs, action)


class StickyRandomBrain(RandomBrain):
    """One random action per episode (drawn when the observation says round 0), held every round."""

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, among: dict[str, list[Any]] | None = None) -> None:
        super().__init__(knobs, values, rng, among)
        self.action: int | None = None

    def __call__(self, obs: np.ndarray) -> int:
        if self.action is None or float(np.asarray(obs).reshape(-1)[0]) == 0.0:  # the episode's first round
            self.action = super().__call__(obs)
        return self.action


class MixtureBrain:
    """One brain per episode, drawn (when the observation says round 0) from ``brains`` with ``weights``, and held for
    the episode; ``drawn`` names the draw.

    Args:
        brains: each a brain name (``"label-if-softened"``) or ``{kind: NAME, params: {...}, knobs: {...}}`` (a
            ``preset`` with ``knobs`` pinned is a constant action), optionally with a ``name`` for ``drawn``.
        weights: the draw's weights (default: uniform).
    """

    context_args = ("knobs", "values", "rng")

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, brains: list[Any] = [],  # noqa: B006
                 weights: list[float] | None = None) -> None:
        if not brains:
            raise ValueError("mixture: brains must list at least one brain")
        if weights is not None and (len(weights) != len(brains) or any(not (w >= 0) for w in weights)
                                    or not sum(weights) > 0):
            raise ValueError(f"mixture: weights must be one non-negative number per brain, not all 0, got {weights}")
        self.knobs, self.values = knobs, dict(values or {})
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.specs = [self._spec(b, i) for i, b in enumerate(brains)]
        names = [s["name"] for s in self.specs]
        if len(set(names)) != len(names):
            raise ValueError(f"mixture: brains must be distinct (give each a name), got {names}")
        for spec in self.specs:  # fail now, naming the member
            self._build(spec, np.random.default_rng(0))
        w = np.asarray(weights if weights is not None else [1.0] * len(brains), dtype=np.float64)
        self.weights = w / w.sum()
        self.brain: Callable[[np.ndarray], Any] | None = None
        self.drawn: str | None = None

    @staticmethod
    def _spec(b: Any, i: int) -> dict[str, Any]:
        if isinstance(b, str):
            b = {"kind": b}
        if not isinstance(b, Mapping) or not isinstance(b.get("kind", "preset"), str):
            raise ValueError(f"mixture: brains.{i} must be a brain name or {{kind, params, knobs}}, got {b!r}")
        unknown = sorted(set(b) - {"kind", "params", "knobs", "name"})
        if unknown:
            raise ValueError(f"mixture: brains.{i}: unknown field(s) {unknown}; fields: kind, params, knobs, name")
        kind = b.get("kind", "preset")
        if kind not in BRAINS or kind == "mixture":
            raise ValueError(f"mixture: brains.{i}: unknown brain {kind!r}; known: "
                             f"{', '.join(k for k in BRAINS if k != 'mixture')}")
        knobs, params = dict(b.get("knobs") or {}), dict(b.get("params") or {})
        label = ",".join(f"{k}={v}" for k, v in {**params, **knobs}.items())
        return {"kind": kind, "params": params, "knobs": knobs,
                "name": str(b.get("name") or (f"{kind}:{label}" if label else kind))}

    def _build(self, spec: Mapping[str, Any], rng: np.random.Generator) -> Callable[[np.ndarray], Any]:
        try:
            return BRAINS[spec["kind"]](self.knobs, {**self.values, **spec["knobs"]}, rng, **spec["params"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"mixture: brain {spec['name']!r}: {e}") from None

    def __call__(self, obs: np.ndarray) -> Any:
        if self.brain is None or float(np.asarray(obs).reshape(-1)[0]) == 0.0:  # the episode's first round
            spec = self.specs[int(self.rng.choice(len(self.specs), p=self.weights))]
            self.brain, self.drawn = self._build(spec, self.rng.spawn(1)[0]), spec["name"]
        return self.brain(obs)


BRAINS: dict[str, Callable[..., Callable[[np.ndarray], int]]] = {
    "preset": PresetBrain, "random": RandomBrain, "sticky-random": StickyRandomBrain, "mixture": MixtureBrain}
