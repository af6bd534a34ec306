"""Small base classes for attacker and defender bodies (docs/architecture.md: body and brain).

Plumbing that several bodies share lives in plain functions (``agents/extraction/surrogate.py``); these bases
only hold the episode wiring and the knob mechanics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.seats.channel import Channel
from extractgym.envs.api import Account, DefenderView
from extractgym.envs.protocols import Knob


class AttackerBase:
    """Episode wiring for attackers: the channel, the RNG and the surrogate snapshot.

    Subclasses set ``self.knobs`` and ``self.target`` in ``__init__`` (cheap: no data, no models) and implement
    ``play_round``; ``bind`` calls :meth:`setup` for episode state (pools, surrogates). A body buys answers only
    through :meth:`send`, i.e. its :class:`~extractgym.agents.seats.channel.Channel`, and is scored on :meth:`snapshot`
    (by default its ``surrogate``'s), never on a call into its own code.
    """

    knobs: tuple[Knob, ...] = ()
    target: str = ""
    inputs: tuple[str, ...] = ("image", "text")  # the target input kinds it can attack (checked at validation)
    device: str = "cpu"  # where a cheap surrogate lives (auto, cpu, cuda): the scenario's ``device``, from the factory

    def bind(self, channel: Channel, rng: np.random.Generator) -> None:
        self.channel, self.rng = channel, rng
        if not self.target:
            self.target = channel.service_names[0]
        if self.target not in channel.service_names:
            raise ValueError(f"{type(self).__name__}: unknown target service {self.target!r}; "
                             f"services: {', '.join(channel.service_names)}")
        self.setup()

    def setup(self) -> None:
        """Episode state (pool order, surrogate). Override."""

    def send(self, service: str, x: Any, adaptive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Buy answers for as many of ``x`` as the budgets allow (:meth:`Channel.send`): the indices of ``x``
        answered and their outputs. ``adaptive=False`` skips blinding and filtering (exact points)."""
        return self.channel.send(service, x, adaptive)

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        raise NotImplementedError

    def snapshot(self) -> Any:
        """The surrogate as the referee scores it (a :class:`~extractgym.victims.snapshot.ModelSnapshot`)."""
        return self.surrogate.snapshot()

    def predict_proba(self, x: Any) -> np.ndarray:
        """The body's own predictions (for the body's use and for tests; the referee scores the snapshot)."""
        return self.surrogate.predict_proba(x)


class DefenderBase:
    """A defence that serves everything and changes nothing until a subclass says otherwise.

    Subclasses declare ``knobs`` in their constructor. Every hook receives this round's knob values as a mapping
    (``knobs["sigma"]``): a body keeps no copy of them, so what a brain set is exactly what the hook sees.
    """

    knobs: tuple[Knob, ...] = (Knob("noop", (None,)),)

    @property
    def pure_shape(self) -> bool:
        """Whether ``shape(probs, None, x, knobs)`` is a function of its arguments (no random draw, no state read or
        changed), so that the referee's audit of defended outputs is computed once per episode and knob setting.
        True for a body that keeps this class's ``shape``; a subclass with its own says so (``pure_shape = True``)."""
        return type(self).shape is DefenderBase.shape

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        self.view, self.rng = view, rng

    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> int:
        return len(x)

    def shape(self, probs: np.ndarray, account: Account | None, x: np.ndarray | None,
              knobs: Mapping[str, Any]) -> np.ndarray:
        return probs

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        pass
