"""Scenarios: YAML files, their schema, the name registries, the CLI and the env entry points.

``make_env(scenario, seed=None, **overrides)`` is the contract other parts rely on (docs/architecture.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from extractgym.envs.parallel_env import ExtractionEnv
from extractgym.scenarios.factory import ScenarioFactory
from extractgym.scenarios.schema import Scenario, ScenarioError, load_scenario, shipped_scenarios

__all__ = ["ExtractionEnv", "Scenario", "ScenarioError", "ScenarioFactory", "load_scenario", "make_env",
           "shipped_scenarios"]


def make_env(scenario: str | Path | Scenario | dict[str, Any] = "digits-basic", seed: int | None = None,
             render_mode: str | None = None, action_space: str = "flat", **overrides: Any) -> ExtractionEnv:
    """The PettingZoo ``ParallelEnv`` for a scenario name, YAML path, dict or :class:`Scenario`.

    Args:
        scenario: what to play; shipped names are listed by ``extractgym list``.
        seed: replaces the scenario's ``seed`` (the first ``reset()`` without a seed uses it).
        render_mode: ``None`` or ``"ansi"``.
        action_space: ``"flat"`` (one ``Discrete`` per seat, what PettingZoo's checkers take) or ``"multi"``
            (``MultiDiscrete``, one dimension per knob).
        **overrides: scenario fields to replace, e.g. ``rounds=3`` or ``services=[...]``.
    """
    if seed is not None:
        overrides["seed"] = seed
    return ExtractionEnv(ScenarioFactory(load_scenario(scenario, **overrides)), render_mode=render_mode,
                         action_space=action_space)
