"""Entry points of the Gymnasium ids ``extractgym/Attacker-v0`` and ``extractgym/Defender-v0``."""

from __future__ import annotations

from typing import Any

from extractgym.envs.gym_wrappers import SingleSeatEnv
from extractgym.scenarios import make_env


def make_seat_env(role: str, scenario: Any = "digits-basic", seat: str | None = None, seed: int | None = None,
                  render_mode: str | None = None, action_space: str = "multi", **overrides: Any) -> SingleSeatEnv:
    env = make_env(scenario, seed=seed, action_space=action_space, **overrides)
    seats = [s for s, info in env.seat_info.items() if info.role == role]
    if not seats:
        raise ValueError(f"scenario {env.factory.name!r} has no {role} seat; seats: {', '.join(env.possible_agents)}")
    if seat is not None and seat not in seats:
        raise ValueError(f"seat {seat!r} is not a {role} seat of {env.factory.name!r}; {role} seats: {', '.join(seats)}")
    return SingleSeatEnv(env, seat or seats[0], env.factory.brains, render_mode=render_mode)


def make_attacker_env(scenario: Any = "digits-basic", **kwargs: Any) -> SingleSeatEnv:
    """``gymnasium.make("extractgym/Attacker-v0", scenario=..., seat=None, seed=None, action_space="multi",
    **overrides)``: the seat's knobs as ``MultiDiscrete`` (``action_space="flat"``: one ``Discrete``)."""
    return make_seat_env("attacker", scenario, **kwargs)


def make_defender_env(scenario: Any = "digits-basic", **kwargs: Any) -> SingleSeatEnv:
    """``gymnasium.make("extractgym/Defender-v0", scenario=..., seat=None, seed=None, action_space="multi",
    **overrides)``."""
    return make_seat_env("defender", scenario, **kwargs)
