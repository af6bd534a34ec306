"""What the simulation needs from the agents that play in it (implemented in ``extractgym.agents``).

Bodies and brains (docs/architecture.md): a *body* is an algorithm from the literature that owns its state and
exposes a few :class:`Knob` s; a *brain* chooses the knob values each round (a preset, a script or a
learned policy). The env's action space for a seat is its body's knob space, flattened: one ``Discrete``
action per combination of knob choices (knob spaces are small; PettingZoo's checkers and every SB3
algorithm take ``Discrete``). :func:`knob_values` decodes an action, :func:`encode_action` builds one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from extractgym.envs.api import Account, Client, DefenderView


@dataclass(frozen=True)
class Knob:
    """One setting a brain can turn: ``choices`` are the values, ``default`` the preset's index."""

    name: str
    choices: tuple[Any, ...]
    default: int = 0

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"knob {self.name!r} needs at least one choice")
        if not 0 <= self.default < len(self.choices):
            raise ValueError(f"knob {self.name!r}: default index {self.default} out of range")

    @classmethod
    def around(cls, name: str, choices: tuple[Any, ...], preset: Any) -> Knob:
        """A knob whose choices include ``preset`` (added and sorted in if missing), defaulting to it."""
        values = tuple(dict.fromkeys(choices)) if preset in choices else tuple(sorted({*choices, preset}))
        return cls(name, values, values.index(preset))


def n_actions(knobs: tuple[Knob, ...]) -> int:
    """Size of a seat's ``Discrete`` action space: one action per combination of knob choices."""
    return int(np.prod([len(k.choices) for k in knobs], dtype=np.int64)) if knobs else 1


def encode_action(knobs: tuple[Knob, ...], indices: Any) -> int:
    """The flat action for one choice index per knob (row-major over ``knobs``)."""
    return int(np.ravel_multi_index(tuple(int(i) for i in indices), [len(k.choices) for k in knobs])) if knobs else 0


def knob_values(knobs: tuple[Knob, ...], action: Any) -> dict[str, Any]:
    """Map an action to ``{name: value}``, naming the problem if it is not one.

    ``action`` is the flat ``Discrete`` index (what the envs use) or one choice index per knob.
    """
    arr = np.asarray(action)
    total = n_actions(knobs)
    if arr.ndim == 0 or (arr.shape == (1,) and len(knobs) != 1):
        value = arr.reshape(()).item()
        if not float(value).is_integer() or not 0 <= int(value) < total:
            names = ", ".join(k.name for k in knobs)
            raise ValueError(f"action must be an integer in [0, {total}) (one per combination of {names}), got {value!r}")
        idx = np.unravel_index(int(value), [len(k.choices) for k in knobs]) if knobs else ()
    else:
        idx = arr.reshape(-1)
        if idx.shape[0] != len(knobs):
            raise ValueError(f"action must be a flat index or {len(knobs)} knob indices "
                             f"({', '.join(k.name for k in knobs)}), got {idx.shape[0]}")
    out = {}
    for k, i in zip(knobs, idx, strict=True):
        if not float(i).is_integer() or not 0 <= int(i) < len(k.choices):
            raise ValueError(f"action for knob {k.name!r} must be an integer in [0, {len(k.choices)}), got {i}")
        out[k.name] = k.choices[int(i)]
    return out


def preset_action(knobs: tuple[Knob, ...]) -> int:
    return encode_action(knobs, [k.default for k in knobs])


def preset_values(knobs: tuple[Knob, ...]) -> dict[str, Any]:
    """``{name: value}`` of every knob at its preset (default) choice."""
    return {k.name: k.choices[k.default] for k in knobs}


ATTACKER, DEFENDER = "attacker", "defender"


@dataclass(frozen=True)
class SeatInfo:
    """A seat as the env publishes it before any game is built: its role and its knobs."""

    role: str
    knobs: tuple[Knob, ...]

    def __post_init__(self) -> None:
        if self.role not in (ATTACKER, DEFENDER):
            raise ValueError(f"role must be {ATTACKER!r} or {DEFENDER!r}, got {self.role!r}")


class AttackerSeat(Protocol):
    """An attacker seat as the game drives it: a body and the channel the factory assembled from its tactics
    (implemented by :class:`extractgym.agents.seats.seat.Seat`). The game hands it the owner's client; the body inside
    only ever sees its channel."""

    knobs: tuple[Knob, ...]
    target: str  # the service whose victim the referee scores this attacker against

    def bind(self, client: Client, rng: np.random.Generator) -> None:
        """Start an episode: connect the channel to the client, bind the body, draw everything random from ``rng``."""

    def play_round(self, knobs: Mapping[str, Any], round_index: int) -> None:
        """Play one round with these knob values (the body's and the tactics')."""

    def snapshot(self) -> Any:
        """The surrogate as the referee scores it (:mod:`extractgym.victims.snapshot`); never a callable."""

    def stats(self) -> dict[str, Any]:
        """The seat's own tally of its tactics (queries withheld never reach the API); empty without tactics."""

    def round_log(self) -> Any:
        """What the seat's channel recorded this round: queries asked, answered and withheld, and the queries it sent
        with their answers (``asked``, ``answered``, ``withheld``, ``refused``, ``queries()``); the game computes the
        seat's observation from it."""


class DefenderBody(Protocol):
    """A defence of the prediction API: it screens requests (may ban) and shapes outputs.

    Every hook receives this round's knob values; accounts are copies."""

    knobs: tuple[Knob, ...]

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        """Start an episode with a read-only view of the API and an RNG."""

    def screen(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> int:
        """How many leading queries of this request to serve; fewer than ``len(x)`` bans the account."""

    def shape(self, probs: np.ndarray, account: Account | None, x: np.ndarray | None,
              knobs: Mapping[str, Any]) -> np.ndarray:
        """Defended outputs for a batch of victim probabilities (``account`` is None for the referee's audit)."""

    def end_round(self, round_index: int, knobs: Mapping[str, Any]) -> None:
        """Called once after all of a round's traffic."""
