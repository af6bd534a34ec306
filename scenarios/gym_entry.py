"""Entry points of the Gymnasium ids ``extractgym/Attacker-v0`` and ``extractgym/Defender-v0``: ``make`` gives one
episode at a time (:class:`~extractgym.envs.gym_wrappers.SingleSeatEnv`), ``make_vec(...,
vectorization_mode="vector_entry_point")`` K in lockstep (:class:`~extractgym.envs.vector_env.SeatVectorEnv`)."""

from __future__ import annotations

from typing import Any

from extractgym.envs.gym_wrappers import SingleSeatEnv
from extractgym.envs.vector_env import SeatVectorEnv
from extractgym.scenarios import load_scenario, make_env
from extractgym.scenarios.factory import ScenarioFactory


def make_seat_env(role: str, scenario: Any = "digits-basic", seat: str | None = None, seed: int | None = None,
                  render_mode: str | None = None, action_space: str = "multi", **overrides: Any) -> SingleSeatEnv:
    env = make_env(scenario, seed=seed, action_space=action_space, **overrides)
    return SingleSeatEnv(env, pick_seat(env.factory, role, seat), env.factory.brains, render_mode=render_mode)


def pick_seat(factory: ScenarioFactory, role: str, seat: str | None) -> str:
    """The learning seat: ``seat`` if it is one of the scenario's seats of ``role``, else the first of them."""
    seats = [s for s, info in factory.seats().items() if info.role == role]
    if not seats:
        raise ValueError(f"scenario {factory.name!r} has no {role} seat; seats: {', '.join(factory.seats())}")
    if seat is not None and seat not in seats:
        raise ValueError(f"seat {seat!r} is not a {role} seat of {factory.name!r}; {role} seats: {', '.join(seats)}")
    return seat or seats[0]


def make_seat_vec_env(role: str, num_envs: int = 1, scenario: Any = "digits-basic", seat: str | None = None,
                      seed: int | None = None, render_mode: str | None = None, action_space: str = "multi",
                      autoreset_mode: Any = "next-step", **overrides: Any) -> SeatVectorEnv:
    if seed is not None:
        overrides["seed"] = seed
    factory = ScenarioFactory(load_scenario(scenario, **overrides))
    refuse_unbatchable(factory)
    return SeatVectorEnv(factory, pick_seat(factory, role, seat), num_envs, factory.brains, action_space,
                         autoreset_mode, render_mode)


def refuse_unbatchable(factory: ScenarioFactory) -> None:
    """Scenarios whose K episodes cannot share one process are refused, naming why (use ``vectorization_mode=
    "sync"`` or ``"async"`` for them)."""
    s = factory.scenario
    remote = [v.name for v in s.services if v.remote is not None]
    if remote:
        raise ValueError(f"scenario {s.name!r}: the vector env cannot batch remote services ({', '.join(remote)}: K "
                         f"episodes would share one endpoint's accounts); use vectorization_mode='sync'")
    isolated = [f"attacker_{i}" for i, a in enumerate(s.attackers) if a.isolate]
    if isolated:
        raise ValueError(f"scenario {s.name!r}: the vector env cannot batch isolated seats ({', '.join(isolated)}: "
                         f"their bodies run in child processes); use vectorization_mode='sync' or 'async'")


def make_attacker_vec_env(num_envs: int = 1, scenario: Any = "digits-basic", **kwargs: Any) -> SeatVectorEnv:
    """``gymnasium.make_vec("extractgym/Attacker-v0", num_envs=K, vectorization_mode="vector_entry_point",
    scenario=..., seat=None, seed=None, action_space="multi", autoreset_mode="next-step", **overrides)``."""
    return make_seat_vec_env("attacker", num_envs, scenario, **kwargs)


def make_defender_vec_env(num_envs: int = 1, scenario: Any = "digits-basic", **kwargs: Any) -> SeatVectorEnv:
    """``gymnasium.make_vec("extractgym/Defender-v0", num_envs=K, vectorization_mode="vector_entry_point", ...)``."""
    return make_seat_vec_env("defender", num_envs, scenario, **kwargs)


def make_attacker_env(scenario: Any = "digits-basic", **kwargs: Any) -> SingleSeatEnv:
    """``gymnasium.make("extractgym/Attacker-v0", scenario=..., seat=None, seed=None, action_space="multi",
    **overrides)``: the seat's knobs as ``MultiDiscrete`` (``action_space="flat"``: one ``Discrete``)."""
    return make_seat_env("attacker", scenario, **kwargs)


def make_defender_env(scenario: Any = "digits-basic", **kwargs: Any) -> SingleSeatEnv:
    """``gymnasium.make("extractgym/Defender-v0", scenario=..., seat=None, seed=None, action_space="multi",
    **overrides)``."""
    return make_seat_env("defender", scenario, **kwargs)
