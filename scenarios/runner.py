"""Play whole episodes with the scenario's brains (what ``extractgym run`` and the benchmarks call)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from extractgym.envs.errors import RemoteFailure
from extractgym.envs.parallel_env import ExtractionEnv
from extractgym.envs.remote import reconcile

SUMMARY_KEYS = ("scenario", "seed", "rounds", "victim_accuracy", "defended_accuracy", "attacker_accuracy", "fidelity",
                "queries", "cost", "accounts_created", "accounts_banned", "benign_accounts", "benign_accounts_banned",
                "false_positive_rate", "wall_seconds")


def play_episode(env: ExtractionEnv, seed: int | None = None, brains: dict[str, Any] | None = None,
                 on_round: Callable[[int, dict[str, dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Play one episode; return the summary (``summary.json``'s content).

    Args:
        env: the arena.
        seed: episode seed (default: the scenario's).
        brains: a callable ``obs -> action`` per seat (default: the scenario's brains).
        on_round: called after each round with the round number and the infos (progress bars).
    """
    seed = env.factory.default_seed if seed is None else seed
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    brains = brains or env.factory.brains(seed)
    rewards_sum = {a: 0.0 for a in env.agents}
    while env.agents:
        obs, rewards, _, _, infos = env.step({a: brains[a](obs[a]) for a in env.agents})
        for a, r in rewards.items():
            rewards_sum[a] += r
        if on_round:
            on_round(env.game.round, infos)
    disagree = reconcile(env.game.api)  # a remote service's books must be the server's
    if disagree:
        raise RemoteFailure("the books disagree with the remote server's at the end of the episode: "
                            + "; ".join(disagree[:5]))
    summary = {"scenario": env.factory.name, "seed": seed, **env.summary(),
               "returns": rewards_sum, "wall_seconds": time.perf_counter() - start}
    return summary


def write_summary(summary: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    # numpy scalars become floats; NaN/inf become null, so the file is strict JSON
    clean = json.loads(json.dumps(summary, default=float), parse_constant=lambda c: None)
    path.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n")
    return path
