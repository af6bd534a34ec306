"""The algorithms ``extractgym train --algo`` knows, with defaults sized for this arena.

An episode is one campaign of a few rounds (3-10 steps) and a step costs tens to hundreds of CPU-milliseconds, so
the defaults favour sample efficiency over wall-clock throughput: short rollouts, several epochs per batch, an
undiscounted return (``gamma=1``: the potential-based rewards telescope to the episode's value exactly), a small
entropy bonus, and a 64x64 network. ``--param KEY=VALUE`` overrides any constructor keyword.

Memory and learning from scratch (issue 21). Against a hidden opponent type the policy must remember what the
first rounds showed: ``--stack 4`` (the last four observations; SB3's ``VecFrameStack``) is the memory these
defaults assume, because ``RecurrentPPO`` takes no action masks. From a random network, with 8 environments, the
slow tests use ``--param n_steps=128 --param batch_size=256`` (1,024 steps, about 128 eight-round episodes, per
update: enough episodes per batch that the episode-to-episode noise of one campaign does not dominate the
advantage estimates) and ``--cpu-minutes 60``. The same batch on the vector env (``--envs 32 --param n_steps=32
--param batch_size=256``) beat the best constant action from a random network on rl-duel (25 CPU-minutes) and
rl-sybil (8), learning a fixed schedule rather than a reaction to the opponent; the gauntlet is not yet measured
(docs/rl.md, "Issue 21, measured").

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
# the numeric settings SB3 would only trip over inside learn() (an UnboundLocalError for n_steps=0, NaN losses), or
# that would ask for more memory than a machine has (buffers are sized by them): (low, high, in words)
BOUNDS: dict[str, tuple[float | None, float | None, str]] = {
    **{k: (1, 1_000_000, "in [1, 1000000]") for k in ("n_steps", "batch_size", "train_freq", "gradient_steps")},
    "n_epochs": (1, 10_000, "in [1, 10000]"), "buffer_size": (1, 10_000_000, "in [1, 10000000]"),
    "target_update_interval": (1, 10**9, "in [1, 1e9]"), "learning_starts": (0, 10**9, "in [0, 1e9]"),
    "stats_window_size": (1, 1_000_000, "in [1, 1000000]"), "sde_sample_freq": (-1, 1_000_000, "in [-1, 1000000]"),
    "learning_rate": (1e-12, 10.0, "in (0, 10]"),
    "gamma": (0.0, 1.0, "in [0, 1]"), "gae_lambda": (0.0, 1.0, "in [0, 1]"), "tau": (0.0, 1.0, "in [0, 1]"),
    "clip_range": (1e-12, 1e6, "positive"), "clip_range_vf": (1e-12, 1e6, "positive"),
    "ent_coef": (0.0, 1e6, "in [0, 1e6]"), "vf_coef": (0.0, 1e6, "in [0, 1e6]"),
    "max_grad_norm": (1e-12, 1e6, "positive"), "target_kl": (1e-12, 1e6, "positive"),
    "rms_prop_eps": (1e-12, 1.0, "in (0, 1]"),
    "exploration_fraction": (0.0, 1.0, "in [0, 1]"), "exploration_final_eps": (0.0, 1.0, "in [0, 1]"),
    "exploration_initial_eps": (0.0, 1.0, "in [0, 1]"),
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
        kw[key] = _checked(key, value, signature[key], algo)
    if "batch_size" in kw and "n_steps" in kw and "batch_size" not in (overrides or {}):
        kw["batch_size"] = min(kw["batch_size"], kw["n_steps"] * n_envs)  # PPO: at least one whole minibatch
    return kw


def _kinds(annotation: Any) -> set[str]:
    """What a constructor annotation admits from the command line: ``bool``, ``int``, ``float``, ``none``,
    ``freq`` (DQN's ``(n, "step"|"episode")``); callables, classes and dicts cannot be written there."""
    text = str(annotation)
    out = set()
    for part in (p.strip() for p in text.replace("typing.Optional[", "").split("|")):
        if part in ("<class 'bool'>", "bool"):
            out.add("bool")
        elif part in ("<class 'int'>", "int"):
            out.add("int")
        elif part in ("<class 'float'>", "float"):
            out.add("float")
        elif part == "None":
            out.add("none")
        elif part.startswith("tuple[int, str]"):
            out.add("freq")
    return out


def _checked(key: str, value: Any, parameter: Any, algo: Algo) -> Any:
    """``--param key=value`` as the algorithm's constructor takes it, or ``ValueError`` naming the problem: the
    annotation's type (numbers finite, integers integral, booleans ``true``/``false``), then the range."""
    import math

    kinds = _kinds(parameter.annotation)
    default = algo.defaults.get(key, parameter.default)
    if not kinds & {"bool", "int", "float", "freq"}:
        raise ValueError(f"--param {key}: {algo.cls}'s {key} cannot be set from the command line")
    if value is None:
        if "none" in kinds:
            return None
        raise ValueError(f"--param {key}=null: {algo.cls}'s {key} needs a value (default {default!r})")
    if isinstance(value, bool):
        if "bool" in kinds:
            return value
        raise ValueError(f"--param {key}={value!r}: {algo.cls}'s {key} is a number (default {default!r})")
    if "bool" in kinds:
        raise ValueError(f"--param {key}={_short(value)}: {algo.cls}'s {key} is true or false")
    if "freq" in kinds and isinstance(value, list) and len(value) == 2 and value[1] in ("step", "episode"):
        return (_checked(key, value[0], parameter.replace(annotation=int), algo), value[1])
    if not isinstance(value, int | float) or not kinds & {"int", "float"}:
        raise ValueError(f"--param {key}={_short(value)}: {algo.cls}'s {key} is a number (default {default!r})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"--param {key}={value!r}: must be a finite number")
    if "float" not in kinds:  # an integer setting: 1e3 is 1000, 2.5 is refused
        if isinstance(value, float) and not value.is_integer():
            raise ValueError(f"--param {key}={value!r}: {algo.cls}'s {key} is a whole number")
        value = int(value)
    low, high, what = BOUNDS.get(key, (None, None, ""))
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"--param {key}={_short(value)}: must be {what}")
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


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
