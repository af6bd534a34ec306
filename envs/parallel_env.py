"""
# Extraction arena (PettingZoo ParallelEnv)

| Import             | `from extractgym.scenarios import make_env`                                          |
|--------------------|--------------------------------------------------------------------------------------|
| Actions            | `flat`: Discrete (one per combination of knob choices); `multi`: MultiDiscrete (one dimension per knob) |
| Parallel API       | Yes                                                                                  |
| Agents             | `agents = ["attacker_0", ..., "defender_0", ...]` (from the scenario; roles in `env.seat_info`) |
| Action shape       | `()` (flat) or `(n_knobs,)` (multi)                                                  |
| Observation shape  | attackers `(16 + n_knobs,)`, defenders `(14 + n_knobs,)`                              |
| Observation values | `[0, 1]`                                                                             |

One episode is one model-extraction campaign of `rounds` rounds against a simulated prediction API.
Every seat is a *body* (an attack or a defence from the literature) whose knobs the acting policy sets
each round: attackers choose how many queries to buy, where, how to send them and how to train; defenders
choose the strength or kind of their perturbation or detection. Benign customers share the API every round.

## Arguments

``ExtractionEnv(factory, render_mode=None, action_space="flat")``; users call
``make_env(scenario, seed=None, render_mode=None, action_space="flat", **overrides)``.

* ``factory``: builds a :class:`~extractgym.envs.game.Game` from a seed and names the seats, their roles and knobs
  (a scenario supplies it).
* ``render_mode``: ``None`` or ``"ansi"`` (a one-line-per-seat text table).
* ``action_space``: ``"flat"`` (what PettingZoo's AEC checker and SB3's DQN take) or ``"multi"`` (factored: what the
  Gymnasium seats ``extractgym/Attacker-v0`` and ``Defender-v0`` use by default).

## Observation Space

Attackers, a ``Box(0, 1, (16 + n_knobs,))`` (names in ``extractgym.envs.game.ATTACKER_OBS``): round progress;
shares of the query, money and account budgets left; live accounts; this round's answered queries; the shares of
this round's asked queries refused (budgets, rate limits, rejections, bans) and withheld by its own filter; bans
this round and in all; ``agreement``, its surrogate's agreement *before* this round's training with the answers it
just bought (an honest running fidelity estimate: inputs it had not trained on); ``fit``, the same after training;
the answers' mean confidence and normalised entropy, the share of one-hot answers, and ``softened`` (how much less
confident the answers are than its own surrogate: a sign of reverse sigmoid, MAD or temperature); then its previous
action (each knob's choice index scaled to [0, 1]). Nothing comes from the victim's test set.

Defenders, a ``Box(0, 1, (14 + n_knobs,))`` (``DEFENDER_OBS``): round progress; this round's queries and new
accounts; live accounts; bans this round and the share of all accounts banned; the share of this round's traffic
from accounts opened this round, and from accounts opened during the campaign (``young_traffic``) with the share
of that on probability endpoints; the busiest account's share; ``value_share``, the share of the value benign
customers wanted that they got (the provider's revenue after refunds); its detectors' pressure (how close live
accounts are to a flag: max, mean, share above one half); then its previous action.

## Action Space

``flat``: ``Discrete(prod(len(k.choices) for k in knobs))``, action ``a`` the row-major index of one choice per knob.
``multi``: ``MultiDiscrete([len(k.choices) for k in knobs])``. ``env.knobs(agent)`` lists the knobs (a scenario's
``fix:`` removes knobs from the space); ``extractgym.envs.protocols.knob_values(knobs, action)`` decodes either form.
``env.action_mask(agent)`` says which choices can take effect now (per knob, concatenated, for ``multi``; per
action for ``flat``): an attacker that can buy nothing more has one canonical action.

## Rewards

Weights and form from the scenario's ``rewards:`` (:class:`~extractgym.envs.referee.RewardWeights`).

| Seat     | Reward per round                                                                                      |
|----------|-------------------------------------------------------------------------------------------------------|
| attacker | ``ΔΦ − cost·money/money_budget − queries·queries/query_budget − banned·bans − accounts·accounts_opened``, ``Φ = accuracy·acc + fidelity·fid`` |
| defender | ``−attacker_gain·mean(ΔΦ of attackers) − utility_loss·(1 − utility) − false_positive·new benign bans/benign accounts − revenue_loss·(1 − value_share)`` |

``Φ`` starts at a fixed ``reference`` (``chance``: ``Φ(1/K, 1/K)``; or ``initial``: the episode's untrained
surrogate), so an attacker's return is its final value minus the reference minus its costs, however its random
initial surrogate scored. ``shaping: potential`` pays each round's terms in that round; ``terminal`` pays their sum
at the last round. Accuracy and fidelity are the referee's, on the victim's held-out test set, from a snapshot of
the surrogate evaluated in the referee's own code. All seats terminate together after the last round; ``infos``
carry the referee's figures.

## Version History

* v0: initial release.
* v0 (issue 10): honest observations, MultiDiscrete option and masks, rewards from a fixed reference with potential
  or terminal shaping, economics (prepaid credit, identity cost, ban delay, revenue).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

from extractgym.envs.game import Game, Phases, observation_size, run_phases
from extractgym.envs.protocols import Knob, SeatInfo, n_actions


class GameFactory(Protocol):
    """What the env needs from a scenario."""

    name: str
    default_seed: int

    def seats(self) -> dict[str, SeatInfo]:
        """Seat names (attackers first), their roles and knobs, without building a game."""

    def build(self, seed: int) -> Game:
        """A fresh game; everything random derives from ``seed``."""


ACTION_SPACES = ("flat", "multi")


def knob_space(knobs: tuple[Knob, ...], kind: str = "flat") -> spaces.Discrete | spaces.MultiDiscrete:
    """A seat's action space: ``flat`` = one ``Discrete`` action per combination of knob choices (what PettingZoo's
    checkers and every SB3 algorithm take); ``multi`` = ``MultiDiscrete``, one dimension per knob (factored: what
    learners should use, with masks for MaskablePPO)."""
    if kind == "multi":
        return spaces.MultiDiscrete([len(k.choices) for k in knobs] or [1])
    return spaces.Discrete(n_actions(knobs))


class ExtractionEnv(ParallelEnv):
    """The multi-agent extraction arena. See the module docstring for spaces and rewards."""

    metadata = {"name": "extractgym_v0", "render_modes": ["ansi"], "is_parallelizable": True}

    def __init__(self, factory: GameFactory, render_mode: str | None = None, action_space: str = "flat") -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        if action_space not in ACTION_SPACES:
            raise ValueError(f"action_space must be one of {', '.join(ACTION_SPACES)}, got {action_space!r}")
        self.factory = factory
        self.render_mode = render_mode
        self.action_space_kind = action_space
        self.seat_info = factory.seats()
        self._knobs = {a: info.knobs for a, info in self.seat_info.items()}
        self.possible_agents = list(self._knobs)
        # one space object per agent, built once: PettingZoo wants the same object on every call
        self._observation_spaces = {a: spaces.Box(0.0, 1.0, (observation_size(info),), dtype=np.float32)
                                    for a, info in self.seat_info.items()}
        self._action_spaces = {a: knob_space(k, action_space) for a, k in self._knobs.items()}
        self.agents: list[str] = []
        self.game: Game | None = None
        self._seed_rng: np.random.Generator | None = None

    def observation_space(self, agent: str) -> spaces.Box:
        return self._observation_spaces[self._check(agent)]

    def action_space(self, agent: str) -> spaces.Discrete:
        return self._action_spaces[self._check(agent)]

    def _check(self, agent: str) -> str:
        if agent not in self._knobs:
            raise KeyError(f"unknown agent {agent!r}; agents: {', '.join(self.possible_agents)}")
        return agent

    def knobs(self, agent: str) -> tuple[Knob, ...]:
        return self._knobs[agent]

    def action_mask(self, agent: str) -> np.ndarray:
        """Which actions can take effect now: per knob concatenated (``multi``, the form sb3-contrib's MaskablePPO
        takes), or per flat action (``flat``). All true before ``reset``."""
        knobs = self._knobs[self._check(agent)]
        per_knob = (self.game.action_mask(agent) if self.game is not None and agent in self.agents
                    else [np.ones(len(k.choices), dtype=bool) for k in knobs])
        if self.action_space_kind == "multi":
            return np.concatenate(per_knob) if per_knob else np.ones(1, dtype=bool)
        grid = np.ones(1, dtype=bool)
        for m in per_knob:  # row-major over the knobs, as encode_action
            grid = (grid[:, None] & m[None, :]).reshape(-1)
        return grid

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._seed_rng = np.random.default_rng(seed)
            game_seed = int(seed)
        elif self._seed_rng is None:
            game_seed = self.factory.default_seed
            self._seed_rng = np.random.default_rng(game_seed)
        else:
            game_seed = int(self._seed_rng.integers(2**31 - 1))
        if self.game is not None:
            self.game.close()
        self.game = self.factory.build(game_seed)
        self.agents = list(self.possible_agents)
        obs = self.game.initial_observations()
        return obs, {a: {"round": 0} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        return run_phases(self.steps(actions))

    def steps(self, actions: dict[str, Any]) -> Phases:
        """:meth:`step` as a generator of the round's phases (:meth:`~extractgym.envs.game.Game.steps`): what the
        vector env drives for K episodes at once."""
        if self.game is None or not self.agents:
            raise RuntimeError("call reset() before step() (the episode is over or has not started)")
        result = yield from self.game.steps(actions)
        done = result.done
        terminations = {a: done for a in self.agents}
        truncations = {a: False for a in self.agents}
        if done:
            self.agents = []
        return result.observations, result.rewards, terminations, truncations, result.infos

    def render(self) -> str | None:
        if self.render_mode is None or self.game is None:
            return None
        lines = [f"round {self.game.round}/{self.game.rounds}"]
        for seat, info in self.game.last_infos.items():
            figures = ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in info.items())
            lines.append(f"  {seat}: {figures}")
        return "\n".join(lines)

    def close(self) -> None:
        if self.game is not None:
            self.game.close()
        self.game = None

    def summary(self) -> dict[str, Any]:
        if self.game is None:
            raise RuntimeError("no episode: call reset() and play it first")
        return self.game.summary()
