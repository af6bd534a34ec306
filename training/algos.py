"""The algorithms ``extractgym train --algo`` knows, with defaults sized for this arena.

An episode is one campaign of a few rounds (3-10 steps) and a step costs tens to hundreds of CPU-milliseconds, so
the defaults favour sample efficiency over wall-clock throughput: short rollouts, several epochs per batch, an
undiscounted return (``gamma=1``: the potential-based rewards telescope to the episode's value exactly), a small
entropy bonus, and a 64x64 network. ``--param KEY=VALUE`` overrides any constructor keyword.

| algo           | class (library)              | action space   | masks |
|----------------|------------------------------|----------------|-------|
| `ppo`          | `PPO` (stable-baselines3)    | MultiDiscrete  | no    |
| `maskable-ppo` | `MaskablePPO` (sb3-contrib)  | MultiDiscrete  | yes   |
| `a2c`          | `A2C` (stable-baselines3)    | MultiDiscrete  | no    |
| `dqn`          | `DQN` (stable-baselines3)    | Discrete (flat)| no    |
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Algo:
    """One algorithm: where its class lives, the action space it takes, whether it uses masks, its defaults."""

    module: str
    cls: str
    action_space: str  # "multi" or "flat"
    masks: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)
    activation: str = "tanh"

    def load(self) -> type:
        return getattr(importlib.import_module(self.module), self.cls)


_PG = {"gamma": 1.0, "ent_coef": 0.01, "learning_rate": 3e-4}
ALGOS: dict[str, Algo] = {
    "ppo": Algo("stable_baselines3", "PPO", "multi", False,
                {**_PG, "n_steps": 64, "batch_size": 64, "n_epochs": 10, "gae_lambda": 0.95, "clip_range": 0.2}),
    "maskable-ppo": Algo("sb3_contrib", "MaskablePPO", "multi", True,
                         {**_PG, "n_steps": 64, "batch_size": 64, "n_epochs": 10, "gae_lambda": 0.95,
                          "clip_range": 0.2}),
    "a2c": Algo("stable_baselines3", "A2C", "multi", False, {**_PG, "n_steps": 8, "learning_rate": 7e-4}),
    "dqn": Algo("stable_baselines3", "DQN", "flat", False,
                {"gamma": 1.0, "learning_rate": 1e-3, "buffer_size": 50_000, "learning_starts": 200, "batch_size": 64,
                 "train_freq": 1, "gradient_steps": 1, "target_update_interval": 200, "exploration_fraction": 0.3,
                 "exploration_final_eps": 0.05}, activation="relu"),
}
NET_ARCH = [64, 64]
# the numeric settings SB3 would only trip over inside learn() (an UnboundLocalError for n_steps=0, NaN losses)
BOUNDS: dict[str, tuple[float | None, float | None, str]] = {
    **{k: (1, None, "at least 1") for k in ("n_steps", "batch_size", "n_epochs", "buffer_size", "train_freq",
                                             "gradient_steps", "target_update_interval")},
    "learning_starts": (0, None, "at least 0"),
    "learning_rate": (1e-12, None, "positive"),
    "gamma": (0.0, 1.0, "in [0, 1]"), "gae_lambda": (0.0, 1.0, "in [0, 1]"),
    "clip_range": (1e-12, None, "positive"), "ent_coef": (0.0, None, "at least 0"), "vf_coef": (0.0, None, "at least 0"),
    "exploration_fraction": (0.0, 1.0, "in [0, 1]"), "exploration_final_eps": (0.0, 1.0, "in [0, 1]"),
}


def get_algo(name: str) -> Algo:
    if name not in ALGOS:
        raise ValueError(f"unknown algorithm {name!r}; known: {', '.join(ALGOS)}")
    return ALGOS[name]


def hyperparameters(name: str, n_envs: int, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The constructor keywords: the defaults, the PPO batch fitted to ``n_steps * n_envs``, then ``overrides``
    (checked against the class's signature)."""
    import inspect

    algo = get_algo(name)
    kw = dict(algo.defaults)
    signature = inspect.signature(algo.load().__init__).parameters
    accepted = set(signature) - {"self", "policy", "env"}
    for key, value in (overrides or {}).items():
        if key not in accepted or key in ("policy_kwargs", "seed", "device", "tensorboard_log", "verbose"):
            settable = sorted(accepted - {"policy_kwargs", "seed", "device", "tensorboard_log", "verbose",
                                          "_init_setup_model"})
            raise ValueError(f"--param {key}: not a setting of {algo.cls}; settable: {', '.join(settable)}")
        default = algo.defaults.get(key, signature[key].default)
        if isinstance(default, (int, float)) and not isinstance(default, bool) and (
                isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"--param {key}={value!r}: {algo.cls}'s {key} is a number (default {default})")
        low, high, what = BOUNDS.get(key, (None, None, ""))
        if isinstance(value, (int, float)) and ((low is not None and value < low) or (high is not None and value > high)):
            raise ValueError(f"--param {key}={value!r}: must be {what}")
        kw[key] = value
    if "batch_size" in kw and "n_steps" in kw and "batch_size" not in (overrides or {}):
        kw["batch_size"] = min(kw["batch_size"], kw["n_steps"] * n_envs)  # PPO: at least one whole minibatch
    return kw


def policy_kwargs(name: str) -> dict[str, Any]:
    """The network (recorded in checkpoints, so a policy file can be rebuilt without unpickling anything)."""
    return {"net_arch": list(NET_ARCH), "activation_fn": get_algo(name).activation}


def torch_policy_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    acts = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU, "leaky_relu": torch.nn.LeakyReLU}
    out = dict(kwargs)
    if "activation_fn" in out:
        out["activation_fn"] = acts[out["activation_fn"]]
    return out
