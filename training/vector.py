"""The vector env as a stable-baselines3 ``VecEnv``: what ``extractgym train --envs K`` steps (``--vec vector``)."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from extractgym.envs.vector_env import SeatVectorEnv
from extractgym.training.envs import TRAIN_SEED_HIGH, TRAIN_SEED_LOW


class VectorEnvAdapter(VecEnv):
    """A :class:`~extractgym.envs.vector_env.SeatVectorEnv` as a stable-baselines3 ``VecEnv``, with the episodes of
    :func:`seat_env` in a ``DummyVecEnv``: after ``seed(s)``, env ``i``'s episodes are reset with the seeds its
    :class:`EpisodeSeeds` would draw, an ended episode is reset in the same step (``terminal_observation`` and
    ``TimeLimit.truncated`` in its info, as SB3 does), and ``env_method("action_masks")`` gives the masks that
    sb3-contrib's ``MaskablePPO`` asks for. Wrap it in ``VecMonitor`` for the episodes' returns."""

    def __init__(self, venv: SeatVectorEnv) -> None:
        if venv.autoreset_mode.name != "DISABLED":
            raise ValueError("VectorEnvAdapter resets ended episodes itself: build the vector env with "
                             "autoreset_mode='disabled'")
        self.venv = venv
        super().__init__(venv.num_envs, venv.single_observation_space, venv.single_action_space)
        self._rngs: list[np.random.Generator | None] = [None] * venv.num_envs
        self._actions: np.ndarray | None = None

    def _episode_seed(self, i: int, seed: int | None = None) -> int:
        if seed is not None or self._rngs[i] is None:  # EpisodeSeeds.reset, exactly
            self._rngs[i] = np.random.default_rng([0 if seed is None else int(seed), 0x5EED])
        return int(self._rngs[i].integers(TRAIN_SEED_LOW, TRAIN_SEED_HIGH))

    def reset(self) -> np.ndarray:
        seeds = [self._episode_seed(i, self._seeds[i]) for i in range(self.num_envs)]
        obs, _ = self.venv.reset(seed=seeds)
        self.reset_infos = [dict(info) for info in self.venv.env_infos]
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        obs, rewards, terms, truncs, _ = self.venv.step(self._actions)
        infos = [dict(info) for info in self.venv.env_infos]
        dones = terms | truncs
        for i in range(self.num_envs):
            infos[i]["TimeLimit.truncated"] = bool(truncs[i] and not terms[i])
        if dones.any():
            for i in np.flatnonzero(dones):
                infos[i]["terminal_observation"] = obs[i].copy()
            seeds = [self._episode_seed(i) if dones[i] else None for i in range(self.num_envs)]
            fresh, _ = self.venv.reset(seed=seeds, options={"reset_mask": dones})
            obs[dones] = fresh[dones]
            for i in np.flatnonzero(dones):
                self.reset_infos[i] = dict(self.venv.env_infos[i])
        return obs, rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        self.venv.close()

    def _targets(self, indices: Any) -> list[Any]:
        return [self.venv.envs[i] for i in self._get_indices(indices)]

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        return [getattr(env, attr_name) for env in self._targets(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        for env in self._targets(indices):
            setattr(env, attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: Any = None, **method_kwargs: Any) -> list:
        return [getattr(env, method_name)(*method_args, **method_kwargs) for env in self._targets(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [isinstance(env, wrapper_class) for env in self._targets(indices)]

    def get_images(self) -> list[Any]:
        return [None] * self.num_envs
