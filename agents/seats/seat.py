"""An attacker seat: a body and the channel the factory assembled from the seat's tactics.

The game drives seats (:class:`extractgym.envs.protocols.AttackerSeat`); the seat connects its channel to the
owner's client, binds the body to the channel only, splits each round's knob values between the body and the
channel's tactics, and hands the referee the body's surrogate snapshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.seats.channel import Channel
from extractgym.agents.tactics import TACTICS
from extractgym.envs.api import Client
from extractgym.envs.protocols import Knob


def build_channel(tactics: Mapping[str, Mapping[str, Any]] | None = None) -> Channel:
    """A channel with one stage per tactic (``{"sybil": {...}, "blinding": {...}, "filter": {...}}``)."""
    tactics = dict(tactics or {})
    unknown = sorted(set(tactics) - set(TACTICS))
    if unknown:
        raise ValueError(f"unknown tactic(s) {', '.join(unknown)}; known: {', '.join(TACTICS)}")
    return Channel(TACTICS[name](**params) for name, params in tactics.items())


class Seat:
    """One attacker seat (implements :class:`~extractgym.envs.protocols.AttackerSeat`).

    Args:
        body: the attack (an :class:`~extractgym.agents.base.AttackerBase` or anything with the same methods,
            e.g. an :class:`~extractgym.agents.seats.isolation.IsolatedBody`).
        channel: its pipeline to the API (default: a plain channel, reactive accounts, no tactics).
    """

    def __init__(self, body: Any, channel: Channel | None = None) -> None:
        self.body, self.channel = body, channel if channel is not None else Channel()
        knobs: tuple[Knob, ...] = (*body.knobs, *self.channel.knobs)
        names = [k.name for k in knobs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"tactic knob(s) {', '.join(clash)} clash with the body's knobs")
        self.knobs = knobs
        self._body_knobs = tuple(k.name for k in body.knobs)
        self._channel_knobs = tuple(k.name for k in self.channel.knobs)

    @property
    def target(self) -> str:
        return self.body.target

    @property
    def tactical(self) -> bool:
        return self.channel.tactical

    def bind(self, client: Client, rng: np.random.Generator) -> None:
        # the body keeps the seat's generator (a seat with inert tactics plays exactly as one without them);
        # spawning the tactics' child does not draw from the parent's stream
        tactic_rng = rng.spawn(1)[0] if self.channel.tactical else None
        self.channel.bind(client, tactic_rng)
        self.body.bind(self.channel, rng)

    def play_round(self, knobs: Mapping[str, Any], round_index: int) -> None:
        self.channel.begin_round({k: knobs[k] for k in self._channel_knobs})
        self.body.play_round({k: knobs[k] for k in self._body_knobs}, round_index)

    def snapshot(self) -> Any:
        return self.body.snapshot()

    def stats(self) -> dict[str, Any]:
        return self.channel.stats()

    def round_log(self) -> Any:
        """The channel's record of this round (asked, answered, withheld; the queries sent and their answers)."""
        return self.channel.log

    def close(self) -> None:
        """Release the body's resources (an isolated body's process)."""
        close = getattr(self.body, "close", None)
        if callable(close):
            close()
