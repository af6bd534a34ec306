"""Training envs: one seat of a scenario as a Gymnasium env with fresh, seeded opponents every episode, vectorised.

* :class:`EpisodeSeeds`: every episode gets an explicit seed from the env's own generator (seeded once by
  ``reset(seed=...)``), so the opponents' brains, the benign customers and the game are rebuilt from that seed each
  episode, and a run is reproducible from its seed. Training episode seeds are drawn from ``[2**20, 2**31)``, never
  the evaluation harness's training or held-out seeds (``0..`` and ``10_000..``).
* :class:`Opponents`: the other seats' brains for one episode: the scenario's brains, or, for PSRO, one brain per
  seat drawn from a population mixture per episode (:func:`mixture_opponents`).
* :func:`make_vec_env`: ``K`` such envs as one vector env stepping them in lockstep (:class:`~extractgym.training.vector.VectorEnvAdapter` over
  :class:`~extractgym.envs.vector_env.SeatVectorEnv`, their work batched), in a ``DummyVecEnv`` (one process) or in
  a ``SubprocVecEnv`` (one process per env), each process on one torch thread, by the rule :func:`choose_vec_env`.

**Which vectorisation.** The vector env (``vector``) whenever the scenario allows it (not a remote service, not an
isolated seat): it plays exactly the episodes the ``DummyVecEnv`` would, in the same order and with the same seeds
(so the same model comes out), at a fraction of the CPU (``benchmarks/bench_vector_env.py``). Otherwise:
``benchmarks/bench_train.py`` on this 2-core machine (digits-similarity, 3 rounds,
MaskablePPO; medians of 2 interleaved repeats; another engineer's process held one core throughout): an env step
costs ~100 CPU-ms (a round trains a surrogate), the learner adds almost nothing (1 process: 1.03x raw env steps/s),
and two worker processes cost little CPU (8.9 steps per CPU-second against 9.3 for two envs in one process) but,
with only one core free, gained no wall-clock time either (0.98x raw). Worker processes cannot be slower by more
than their small CPU overhead, and they use a second core when one is free, so the rule is: ``SubprocVecEnv``
when ``K >= 2`` and this process may run on at least 2 CPUs, else ``DummyVecEnv``. ``--vec vector|dummy|subproc``
overrides it. All give the same model for the same seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from extractgym.envs.vector_env import SeatVectorEnv

TRAIN_SEED_LOW = 2**20
TRAIN_SEED_HIGH = 2**31 - 1
VEC_KINDS = ("auto", "vector", "dummy", "subproc")


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def choose_vec_env(n_envs: int, kind: str = "auto", cpus: int | None = None, scenario: Any = None,
                   overrides: Mapping[str, Any] | None = None) -> str:
    """``vector``, ``dummy`` or ``subproc`` for ``n_envs`` envs of ``scenario`` (the rule in the module docstring)."""
    if kind not in VEC_KINDS:
        raise ValueError(f"vec env must be one of {', '.join(VEC_KINDS)}, got {kind!r}")
    if kind != "auto":
        return kind
    if scenario is not None and batchable(scenario, overrides):
        return "vector"
    return "subproc" if n_envs >= 2 and (usable_cpus() if cpus is None else cpus) >= 2 else "dummy"


def batchable(scenario: Any, overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether the vector env takes ``scenario`` (it refuses remote services and isolated seats)."""
    from extractgym.scenarios import load_scenario
    from extractgym.scenarios.factory import ScenarioFactory
    from extractgym.scenarios.gym_entry import refuse_unbatchable

    try:
        refuse_unbatchable(ScenarioFactory(load_scenario(scenario, **dict(overrides or {}))))
    except ValueError:
        return False
    return True


def one_thread() -> None:
    """One torch (and BLAS) thread in this process: the env's models are tiny and the cores are shared."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


class EpisodeSeeds(gym.Wrapper):
    """Reset every episode with an explicit seed drawn from the wrapper's own generator (module docstring)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._rng: np.random.Generator | None = None
        self.episode_seed: int | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng([0 if seed is None else int(seed), 0x5EED])
        self.episode_seed = int(self._rng.integers(TRAIN_SEED_LOW, TRAIN_SEED_HIGH))
        return self.env.reset(seed=self.episode_seed, options=options)

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()


@dataclass
class Opponents:
    """The other seats' brains per episode seed: each seat follows one of its ``choices`` (functions of the seed
    returning a brain), drawn with ``weights`` from a generator seeded by the episode seed; seats without choices
    follow the scenario's brains."""

    factory: Any
    choices: Mapping[str, Sequence[Callable[[int], Any]]]
    weights: Mapping[str, Sequence[float]]

    def __call__(self, seed: int | None) -> dict[str, Any]:
        brains = dict(self.factory.brains(seed))
        rng = np.random.default_rng([0 if seed is None else int(seed), 0x0990])
        for seat, options in self.choices.items():
            w = np.asarray(self.weights[seat], dtype=np.float64)
            k = int(rng.choice(len(options), p=w / w.sum()))
            brains[seat] = options[k](seed)
        return brains


def seat_env(scenario: Any, seat: str, action_space: str = "multi", opponents: Callable[[Any], Callable] | None = None,
             overrides: Mapping[str, Any] | None = None, monitor: bool = True) -> gym.Env:
    """One seat of a scenario as a training env: :class:`SingleSeatEnv` in :class:`EpisodeSeeds` (in a ``Monitor``).

    Args:
        scenario: name, path, dict or Scenario.
        seat: the learning seat.
        action_space: ``multi`` (``MultiDiscrete``, with masks) or ``flat`` (``Discrete``, for DQN).
        opponents: given the env's factory, returns the brains function of the episode seed (default: the
            scenario's brains).
        overrides: scenario fields to replace.
    """
    from stable_baselines3.common.monitor import Monitor

    from extractgym.envs.gym_wrappers import SingleSeatEnv
    from extractgym.scenarios import make_env

    env = make_env(scenario, action_space=action_space, **dict(overrides or {}))
    if seat not in env.possible_agents:
        raise ValueError(f"unknown seat {seat!r}; this scenario's seats: {', '.join(env.possible_agents)}")
    brains = opponents(env.factory) if opponents is not None else env.factory.brains
    out: gym.Env = EpisodeSeeds(SingleSeatEnv(env, seat, brains))
    return Monitor(out) if monitor else out


class _Thunk:
    """A picklable env constructor for one vector slot (``SubprocVecEnv`` sends it to a worker process)."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.kwargs = kwargs

    def __call__(self) -> gym.Env:
        one_thread()
        return seat_env(**self.kwargs)


def make_vec_env(scenario: Any, seat: str, n_envs: int = 1, seed: int = 0, action_space: str = "multi",
                 vec: str = "auto", opponents: Callable[[Any], Callable] | None = None,
                 overrides: Mapping[str, Any] | None = None, stack: int = 1) -> Any:
    """``n_envs`` training envs of one seat, vectorised by :func:`choose_vec_env`, seeded ``seed + i``; with
    ``stack > 1`` the policy reads the last ``stack`` observations (SB3's ``VecFrameStack``: zeros before the first
    round, the newest last, as :class:`~extractgym.agents.brains.learned.ObsStack` plays them)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecFrameStack, VecMonitor

    kind = choose_vec_env(n_envs, vec, scenario=scenario, overrides=overrides)
    if kind == "vector":
        from extractgym.scenarios import load_scenario
        from extractgym.scenarios.factory import ScenarioFactory
        from extractgym.scenarios.gym_entry import refuse_unbatchable

        one_thread()
        factory = ScenarioFactory(load_scenario(scenario, **dict(overrides or {})))
        refuse_unbatchable(factory)
        if seat not in factory.seats():
            raise ValueError(f"unknown seat {seat!r}; this scenario's seats: {', '.join(factory.seats())}")
        from extractgym.training.vector import VectorEnvAdapter

        brains = opponents(factory) if opponents is not None else factory.brains
        venv = VecMonitor(VectorEnvAdapter(SeatVectorEnv(factory, seat, n_envs, brains, action_space, "disabled")))
        venv.seed(seed)
        return VecFrameStack(venv, stack) if stack > 1 else venv
    thunks = [_Thunk({"scenario": scenario, "seat": seat, "action_space": action_space, "opponents": opponents,
                      "overrides": dict(overrides or {})}) for _ in range(n_envs)]
    venv = SubprocVecEnv(thunks, start_method="fork" if hasattr(os, "fork") else None) if kind == "subproc" \
        else DummyVecEnv(thunks)
    venv.seed(seed)
    return VecFrameStack(venv, stack) if stack > 1 else venv
