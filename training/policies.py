"""Saving learned policies (the checkpoint format and loading: :mod:`extractgym.agents.brains.learned`).

* :func:`save_policy`: an SB3 model saved as usual, plus ``extractgym.json`` (scenario, seat, role, knobs,
  spaces, algorithm, network shape, training settings, package versions).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from extractgym.agents.brains.learned import FORMAT, META, PolicyError, knob_record
from extractgym.envs.parallel_env import ExtractionEnv

__all__ = ["PolicyError", "policy_meta", "save_policy", "scenario_digest"]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def scenario_digest(env: ExtractionEnv) -> str:
    """sha256 of the scenario as validated (every field, defaults included)."""
    scenario = getattr(env.factory, "scenario", None)
    text = json.dumps(scenario.model_dump(mode="json") if scenario is not None else env.factory.name, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def policy_meta(env: ExtractionEnv, seat: str, algo: str, action_kind: str, policy_kwargs: Mapping[str, Any],
                stack: int = 1, **extra: Any) -> dict[str, Any]:
    """What a checkpoint records about the seat it was trained in (``stack``: observations read at once, the
    policy's memory; :class:`~extractgym.agents.brains.learned.ObsStack`)."""
    from extractgym import __version__

    space = env.action_space(seat)
    action = ({"kind": "multi", "nvec": [int(n) for n in space.nvec]} if action_kind == "multi"
              else {"kind": "flat", "n": int(space.n)})
    info = env.seat_info[seat]
    return {"format": FORMAT, "algo": algo, "scenario": env.factory.name, "scenario_digest": scenario_digest(env),
            "seat": seat, "role": info.role, "knobs": knob_record(info.knobs),
            "observation": {"shape": [int(env.observation_space(seat).shape[0]) * stack]}, "action": action,
            **({"memory": {"stack": stack}} if stack > 1 else {}), "policy_kwargs": dict(policy_kwargs),
            "versions": {"extractgym": __version__, **{d: _version(d) for d in
                                                       ("stable-baselines3", "sb3-contrib", "torch", "gymnasium")}},
            **extra}


def save_policy(model: Any, path: Path, meta: Mapping[str, Any]) -> Path:
    """Save an SB3 model to ``path`` (a ``.zip``) with the extractgym metadata beside its members."""
    path = Path(path)
    if path.suffix != ".zip":
        path = path.with_suffix(".zip")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.zip")
    model.save(tmp)
    with zipfile.ZipFile(tmp, "a") as archive:
        archive.writestr(META, json.dumps(dict(meta), indent=1, default=str))
    tmp.replace(path)  # a reader never sees half a file
    return path
