"""RLlib for scale-out: the PettingZoo env under RLlib's multi-agent API, one policy per side.

``extractgym rllib SCENARIO --iterations N [--address auto] [--env-runners K]`` trains every seat at once with
RLlib's PPO (its new API stack: ``RLModule`` s, ``EnvRunner`` s, ``Learner`` s). The env is the native
:class:`~extractgym.envs.parallel_env.ExtractionEnv` (``action_space="multi"``: one ``MultiDiscrete`` per seat)
wrapped in RLlib's ``ParallelPettingZooEnv``. Seats map to policies by side (:func:`policy_groups`): all
attackers share the ``attacker`` policy and all defenders the ``defender`` policy when their spaces agree (else one
policy per seat), so the two sides have separate networks on different observation and action spaces.

**On a cluster.** Install the package with the extra on every node (``pip install -e '.[ray]'``), start Ray
(``ray start --head`` on one node, ``ray start --address=HEAD:6379`` on the others) and run on the head node with
``--address auto`` and as many ``--env-runners`` as there are spare CPUs; victims are trained and cached on each
node on first use (``EXTRACTGYM_CACHE`` is passed on to the workers). Without ``--address`` a local Ray starts on
this machine's cores.

Needs ``pip install -e '.[ray]'`` (Ray 2.60 with RLlib's requirements, on our gymnasium 1.4; see pyproject).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ENV_NAME = "extractgym-parallel"


def _ray() -> Any:
    try:
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig  # noqa: F401
    except ImportError:
        raise RuntimeError("RLlib needs Ray: pip install -e '.[ray]'") from None
    return ray


def policy_groups(env: Any) -> dict[str, list[str]]:
    """Policy id -> the seats it plays: one per side when the side's seats share their spaces, else one per seat."""
    groups: dict[str, list[str]] = {}
    for role in ("attacker", "defender"):
        seats = [s for s, i in env.seat_info.items() if i.role == role]
        shapes = {(env.observation_space(s).shape, tuple(env.action_space(s).nvec)) for s in seats}
        if len(shapes) <= 1 and seats:
            groups[role] = seats
        else:
            groups.update({s: [s] for s in seats})
    return groups


def make_parallel_env(config: Mapping[str, Any]) -> Any:
    """RLlib's env creator: the scenario's ParallelEnv (MultiDiscrete) in ``ParallelPettingZooEnv``."""
    from ray.rllib.env.wrappers.pettingzoo_env import ParallelPettingZooEnv

    from extractgym.scenarios import make_env

    import torch

    torch.set_num_threads(1)
    return ParallelPettingZooEnv(make_env(config["scenario"], action_space="multi",
                                          **dict(config.get("overrides") or {})))


def rllib_config(scenario: Any, overrides: Mapping[str, Any] | None = None, env_runners: int = 0,
                 seed: int = 0, batch: int = 256, minibatch: int = 64, epochs: int = 5, lr: float = 3e-4) -> Any:
    """A ``PPOConfig`` for the scenario: separate policies per side (:func:`policy_groups`)."""
    _ray()
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from extractgym.scenarios import make_env

    if isinstance(scenario, (str, Path)) and Path(scenario).exists():
        scenario = str(Path(scenario).resolve())  # the workers may start in another folder
    overrides = dict(overrides or {})
    env = make_env(scenario, action_space="multi", **overrides)
    groups = policy_groups(env)
    seat_policy = {s: p for p, seats in groups.items() for s in seats}
    register_env(ENV_NAME, make_parallel_env)
    return (PPOConfig()
            .environment(ENV_NAME, env_config={"scenario": scenario, "overrides": overrides})
            .env_runners(num_env_runners=env_runners, num_envs_per_env_runner=1)
            .multi_agent(policies=set(groups), policy_mapping_fn=_Mapping(seat_policy))
            .rl_module(rl_module_spec=MultiRLModuleSpec(rl_module_specs={p: RLModuleSpec() for p in groups}))
            .training(train_batch_size_per_learner=batch, minibatch_size=minibatch, num_epochs=epochs, lr=lr,
                      gamma=1.0)
            .debugging(seed=seed))


class _Mapping:
    """Agent id -> policy id (a picklable policy_mapping_fn)."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = dict(table)

    def __call__(self, agent_id: str, *args: Any, **kwargs: Any) -> str:
        return self.table[agent_id]


def ray_init_kwargs(address: str | None, cpus: int | None = None) -> dict[str, Any]:
    """Ray quietly, with the cache folder and one thread per worker passed on (as the league's Ray backend)."""
    env = {k: os.environ[k] for k in ("EXTRACTGYM_CACHE", "EXTRACTGYM_TORCH_THREADS", "HF_HUB_OFFLINE")
           if k in os.environ}
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR",
                              "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", **env}}}
    if address:
        kwargs["address"] = address
    else:
        import tempfile

        kwargs.update(num_cpus=cpus or os.cpu_count() or 1, _temp_dir=str(Path(tempfile.gettempdir()) / "extractgym-ray"))
    return kwargs


def train_rllib(scenario: Any, iterations: int = 1, out: Path | None = None, address: str | None = None,
                overrides: Mapping[str, Any] | None = None, env_runners: int = 0, seed: int = 0,
                on_iteration: Callable[[int, dict[str, Any]], None] | None = None, **training: Any) -> list[dict[str, Any]]:
    """Train every seat with RLlib PPO for ``iterations`` iterations; returns one row per iteration (env steps,
    mean episode return per seat and per policy); saves a checkpoint and ``rllib.json`` into ``out``."""
    ray = _ray()
    started = not ray.is_initialized()
    if started:
        ray.init(**ray_init_kwargs(address, max(2, env_runners + 1)))
    rows: list[dict[str, Any]] = []
    try:
        config = rllib_config(scenario, overrides, env_runners, seed, **training)
        algo = config.build_algo()
        t0 = time.perf_counter()
        for i in range(iterations):
            r = algo.train()
            runners = r.get("env_runners", {})
            row = {"iteration": i, "env_steps": int(runners.get("num_env_steps_sampled_lifetime", 0)),
                   "episodes": int(runners.get("num_episodes_lifetime", 0)),
                   "seat_returns": {k: float(v) for k, v in (runners.get("agent_episode_returns_mean") or {}).items()},
                   "policy_returns": {k: float(v) for k, v in
                                      (runners.get("module_episode_returns_mean") or {}).items()},
                   "wall_seconds": time.perf_counter() - t0}
            rows.append(row)
            if on_iteration:
                on_iteration(i, row)
        if out is not None:
            out = Path(out)
            out.mkdir(parents=True, exist_ok=True)
            checkpoint = algo.save_to_path(str((out / "checkpoint").resolve()))
            (out / "rllib.json").write_text(json.dumps({"scenario": str(scenario), "overrides": dict(overrides or {}),
                                                        "iterations": rows, "checkpoint": str(checkpoint)},
                                                       indent=1) + "\n")
        algo.stop()
    finally:
        if started:
            ray.shutdown()
    return rows
