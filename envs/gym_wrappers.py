"""Gymnasium single-seat views of the arena: one seat learns, the scenario's brains play the others.

Registered as ``extractgym/Attacker-v0`` and ``extractgym/Defender-v0`` (the scenario is a kwarg:
``gymnasium.make("extractgym/Attacker-v0", scenario="digits-basic")``). Spaces are flat
(``Box`` observations, ``Discrete`` actions), so stable-baselines3 takes them as they are.

``info`` carries the referee's figures for the learning seat (attackers: ``accuracy``, ``fidelity``,
``queries``, ``cost``, ``accounts_created``, ``accounts_banned``; defenders: ``defended_accuracy``,
``utility``, ``benign_accounts``, ``benign_accounts_banned``, ``false_positive_rate``) and ``round``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from extractgym.envs.game import Phases, run_phases
from extractgym.envs.parallel_env import ExtractionEnv

Brain = Callable[[np.ndarray], np.ndarray]


class SingleSeatEnv(gym.Env):
    """One seat of an :class:`ExtractionEnv` as a Gymnasium env.

    Args:
        env: the multi-agent env.
        seat: the learning seat, e.g. ``"attacker_0"``.
        brains: a brain (observation -> action) for every other seat, or a function of the episode seed that
            returns them (so random or learned opponents are reseeded by ``reset(seed=...)``).
    """

    metadata = {"render_modes": ["ansi"]}

    def __init__(self, env: ExtractionEnv, seat: str,
                 brains: Mapping[str, Brain] | Callable[[int | None], Mapping[str, Brain]],
                 render_mode: str | None = None) -> None:
        if seat not in env.possible_agents:
            raise ValueError(f"unknown seat {seat!r}; this scenario's seats: {', '.join(env.possible_agents)}")
        self._brain_factory = brains if callable(brains) else (lambda seed, fixed=dict(brains): fixed)
        self.env, self.seat = env, seat
        self.brains = self._opponents(None)
        self.render_mode = render_mode
        self.observation_space = env.observation_space(seat)
        self.action_space = env.action_space(seat)
        self._obs: dict[str, np.ndarray] = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        # the multi-agent env owns the randomness: no seed means the scenario's seed, then fresh draws from it
        if seed is not None:
            self.brains = self._opponents(seed)
        self._obs, infos = self.env.reset(seed=seed, options=options)
        return self._obs[self.seat], infos[self.seat]

    def _opponents(self, seed: int | None) -> dict[str, Brain]:
        brains = {s: b for s, b in self._brain_factory(seed).items() if s != self.seat}
        missing = [s for s in self.env.possible_agents if s != self.seat and s not in brains]
        if missing:
            raise ValueError(f"no brain for seat(s) {', '.join(missing)}")
        return brains

    def action_masks(self) -> np.ndarray:
        """Which actions can take effect now (sb3-contrib's ``MaskablePPO`` calls this)."""
        return self.env.action_mask(self.seat)

    def step(self, action: Any):
        return run_phases(self.steps(action))

    def steps(self, action: Any) -> Phases:
        """:meth:`step` as a generator of the round's phases (what the vector env drives)."""
        actions = {s: (action if s == self.seat else self.brains[s](self._obs[s])) for s in self.env.agents}
        obs, rewards, terms, truncs, infos = yield from self.env.steps(actions)
        self._obs = obs
        return obs[self.seat], float(rewards[self.seat]), bool(terms[self.seat]), bool(truncs[self.seat]), infos[self.seat]

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        old, self.env.render_mode = self.env.render_mode, "ansi"
        try:
            return self.env.render()
        finally:
            self.env.render_mode = old

    def summary(self) -> dict[str, Any]:
        return self.env.summary()
