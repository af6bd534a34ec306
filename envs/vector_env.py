"""K episodes of one seat stepping in lockstep in one process, their work batched (a Gymnasium 1.x ``VectorEnv``).

* Import: ``gymnasium.make_vec("extractgym/Attacker-v0", num_envs=K, vectorization_mode="vector_entry_point",
  scenario=...)`` (and ``Defender-v0``); keywords as ``gymnasium.make``'s (``seat``, ``seed``, ``action_space``,
  scenario overrides such as ``surrogates="full"``) plus ``autoreset_mode``.
* Sub-envs: K copies of the single-seat env (:class:`~extractgym.envs.gym_wrappers.SingleSeatEnv`): one seat learns,
  the scenario's brains play the others.
* Spaces: ``single_observation_space`` / ``single_action_space`` are the single-seat env's; batched, ``(K, ...)``.
* Autoreset: ``next-step`` (Gymnasium's default), ``same-step`` (``final_obs`` / ``final_info`` in the infos) or
  ``disabled`` (reset ended sub-envs with ``options["reset_mask"]``).
* Masks: :meth:`SeatVectorEnv.action_masks`, ``(K, sum of the knobs' choices)`` (``multi``) or ``(K, n actions)``.

**Same game, serial or vector.** Each sub-env is a whole single-seat env (its own game, API, ledger, defenders,
benign customers, brains and random streams); the vector env only drives their rounds together. A round is a
generator of phases (:meth:`~extractgym.envs.game.Game.steps`): the K games play their traffic, then their queued
surrogate fits are trained as one batch (:func:`~extractgym.victims.ensemble.deferred_fits`), then the referee scores
their snapshots as one batch (:meth:`~extractgym.envs.referee.Referee.score_many`), then each game closes its round.
No game reads another's state, and a batched computation gives each game what it would get alone (bit for bit on
CPU: ``victims/ensemble.py``), so sub-env ``i`` of ``reset(seed=s)`` plays the same episodes as the serial env reset
with ``s + i``, and then autoresets as the serial env does when reset without a seed (its next game seed drawn from
its own stream, its opponents' brains kept). ``tests/test_vector_env.py`` compares ``summary.json`` over seeds and
scenarios.

**What is batched.** Always: the referee's scoring of cheap-setting snapshots, and the phases' bookkeeping. With a
scenario's ``surrogates: cheap`` (the ``rl-`` scenarios ship with it): the K surrogates' training, as one ensemble
(:mod:`extractgym.victims.ensemble`). Full-setting surrogates train one after the other, as in the serial env.
Scenarios whose episodes cannot share a process safely are refused with a message: remote services (K clients of
one HTTP endpoint) and isolated seats (K child processes per seat). ``reset(seed=None)`` before any seed gives
sub-env ``i`` the scenario's seed plus ``i`` (a ``SyncVectorEnv`` of serial envs would play K copies of one episode).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from extractgym.envs.game import FITS, Scoring
from extractgym.envs.gym_wrappers import SingleSeatEnv
from extractgym.envs.parallel_env import ExtractionEnv, GameFactory
from extractgym.envs.protocols import knob_values
from extractgym.victims.ensemble import deferred_fits

AUTORESET_MODES = {"next-step": AutoresetMode.NEXT_STEP, "same-step": AutoresetMode.SAME_STEP,
                   "disabled": AutoresetMode.DISABLED}


class SeatVectorEnv(gym.vector.VectorEnv):
    """K single-seat episodes of one scenario, stepped in lockstep (module docstring).

    Args:
        factory: the scenario's game factory (:class:`~extractgym.scenarios.factory.ScenarioFactory`).
        seat: the learning seat.
        num_envs: K.
        brains: the other seats' brains as a function of the episode seed (as :class:`SingleSeatEnv` takes).
        action_space: ``multi`` (``MultiDiscrete``) or ``flat`` (``Discrete``).
        autoreset_mode: ``next-step``, ``same-step`` or ``disabled`` (or a ``gymnasium.vector.AutoresetMode``).
    """

    metadata = {"render_modes": ["ansi"], "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, factory: GameFactory, seat: str, num_envs: int,
                 brains: Callable[[int | None], Any], action_space: str = "multi",
                 autoreset_mode: str | AutoresetMode = "next-step", render_mode: str | None = None) -> None:
        if not isinstance(num_envs, int | np.integer) or isinstance(num_envs, bool) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else AUTORESET_MODES.get(autoreset_mode)
        if mode is None:
            raise ValueError(f"autoreset_mode must be one of {', '.join(AUTORESET_MODES)}, got {autoreset_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'ansi', got {render_mode!r}")
        self.num_envs = int(num_envs)
        self.factory, self.render_mode = factory, render_mode
        self.envs = [SingleSeatEnv(ExtractionEnv(factory, action_space=action_space), seat, brains)
                     for _ in range(self.num_envs)]
        self.seat = seat
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._obs = np.zeros(self.observation_space.shape, dtype=self.single_observation_space.dtype)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._seeded = False
        self.env_infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]  # the last call's, per sub-env

    @property
    def autoreset_mode(self) -> AutoresetMode:
        return self.metadata["autoreset_mode"]

    # -- reset ---------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Reset all sub-envs (or those of ``options["reset_mask"]``); ``seed``: an int ``s`` (sub-env ``i`` gets
        ``s + i``), one per sub-env, or ``None`` (each continues its own stream; before any seed, the scenario's
        seed plus ``i``)."""
        seeds = self._seeds(seed)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        elif not (isinstance(mask, np.ndarray) and mask.dtype == np.bool_ and mask.shape == (self.num_envs,)
                  and mask.any()):
            raise ValueError(f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) with a True")
        infos: dict[str, Any] = {}
        self.env_infos = [{} for _ in range(self.num_envs)]
        for i in np.flatnonzero(mask):
            self._obs[i], info = self.envs[i].reset(seed=seeds[i], options=options or None)
            infos = self._add_info(infos, info, int(i))
            self.env_infos[i] = info
            self._autoreset[i] = False
        return self._obs.copy(), infos

    def _seeds(self, seed: int | Sequence[int | None] | None) -> list[int | None]:
        if seed is None:
            if self._seeded:
                return [None] * self.num_envs
            self._seeded = True
            return [self.factory.default_seed + i for i in range(self.num_envs)]
        self._seeded = True
        if isinstance(seed, int | np.integer) and not isinstance(seed, bool):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"seed must be an int, None or {self.num_envs} seeds, got {len(seeds)}")
        return seeds

    # -- step ----------------------------------------------------------------------------------------------
    def step(self, actions: Any):
        """One round of every sub-env (those that ended last step reset instead, under ``next-step``)."""
        actions = np.asarray(actions)
        if actions.shape[:1] != (self.num_envs,):
            raise ValueError(f"actions must have one row per sub-env: shape ({self.num_envs}, ...), got "
                             f"{actions.shape}")
        mode = self.autoreset_mode
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terms = np.zeros(self.num_envs, dtype=bool)
        truncs = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        self.env_infos = [{} for _ in range(self.num_envs)]
        stepping = []
        for i in range(self.num_envs):
            if self._autoreset[i]:
                if mode == AutoresetMode.DISABLED:
                    raise RuntimeError(f"sub-env {i} ended: reset it (options['reset_mask']) before stepping "
                                       f"(autoreset_mode disabled)")
                if mode == AutoresetMode.NEXT_STEP:
                    self._obs[i], info = self.envs[i].reset()
                    infos = self._add_info(infos, info, i)
                    self.env_infos[i] = info
                    continue
            stepping.append(i)
        knobs = self.envs[0].env.knobs(self.seat)
        for i in stepping:  # every action checked before any game plays: a bad one leaves no round half-played
            try:
                knob_values(knobs, actions[i])
            except ValueError as e:
                raise ValueError(f"sub-env {i}: bad action for {self.seat}: {e}") from None
        results = self._step_phases(stepping, actions)
        for i, (obs, reward, term, trunc, info) in zip(stepping, results, strict=True):
            self._obs[i], rewards[i], terms[i], truncs[i] = obs, reward, term, trunc
            self.env_infos[i] = info
            if mode == AutoresetMode.SAME_STEP and (term or trunc):
                infos = self._add_info(infos, {"final_obs": obs, "final_info": info}, i)
                self._obs[i], info = self.envs[i].reset()
            infos = self._add_info(infos, info, i)
        self._autoreset = terms | truncs
        return self._obs.copy(), rewards, terms, truncs, infos

    def _step_phases(self, which: list[int], actions: np.ndarray) -> list[tuple]:
        """Drive the rounds of sub-envs ``which`` phase by phase, each phase batched over them."""
        phases = [self.envs[i].steps(actions[i]) for i in which]
        with deferred_fits():  # the surrogates' fits of every game's round, trained together when it closes
            requests = [self._advance(i, p, None) for i, p in zip(which, phases, strict=True)]
        if any(r is not FITS for r in requests):
            raise RuntimeError("a game's round did not reach its fits phase")
        requests = [self._advance(i, p, None) for i, p in zip(which, phases, strict=True)]
        replies = serve_scorings(requests)
        out = []
        for i, p, reply in zip(which, phases, replies, strict=True):
            try:
                self._advance(i, p, reply)
            except StopIteration as stop:
                out.append(stop.value)
                continue
            raise RuntimeError(f"sub-env {i}'s round has more phases than the vector env serves")
        return out

    @staticmethod
    def _advance(i: int, phases: Any, reply: Any) -> Any:
        try:
            return phases.send(reply) if reply is not None else next(phases)
        except StopIteration:
            raise
        except (ValueError, RuntimeError) as e:
            raise type(e)(f"sub-env {i}: {e}") from e

    # -- masks, rendering, attributes ----------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Which actions can take effect now, per sub-env (sb3-contrib's ``MaskablePPO`` takes these)."""
        return np.stack([env.action_masks() for env in self.envs])

    def render(self) -> tuple[str | None, ...] | None:
        if self.render_mode != "ansi":
            return None
        return tuple(env.render() for env in self._ansi())

    def _ansi(self) -> list[SingleSeatEnv]:
        for env in self.envs:
            env.render_mode = "ansi"
        return self.envs

    def summaries(self) -> list[dict[str, Any]]:
        """Each sub-env's ``summary.json`` figures of its current (or just finished) episode."""
        return [env.summary() for env in self.envs]

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call (or read) ``name`` on every sub-env (as ``SyncVectorEnv.call``)."""
        out = []
        for env in self.envs:
            attr = getattr(env, name)
            out.append(attr(*args, **kwargs) if callable(attr) else attr)
        return tuple(out)

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.env.close()


def serve_scorings(requests: list[Any]) -> list[Any]:
    """The referee's scores for each game's :class:`~extractgym.envs.game.Scoring`, as few batches as possible: the
    games of one scenario share their judge's sets (the same cached arrays), so one referee scores all of them."""
    if not requests:
        return []
    if any(not isinstance(r, Scoring) for r in requests):
        raise RuntimeError("a game's round did not reach its scoring phase")
    first = requests[0].referee
    if any(not _same_judge(first, r.referee) for r in requests[1:]):
        return [r.serve() for r in requests]
    items = [item for r in requests for item in r.items]
    scores = first.score_many(items)
    out, k = [], 0
    for r in requests:
        out.append(scores[k:k + len(r.items)])
        k += len(r.items)
    return out


def _same_judge(a: Any, b: Any) -> bool:
    """Whether two referees score the same way: the same test sets (the same arrays) and the same victims' labels."""
    if a is b:
        return True
    if a.test_sets.keys() != b.test_sets.keys():
        return False
    return all(a.test_sets[k][0] is b.test_sets[k][0] and a.test_sets[k][1] is b.test_sets[k][1]
               and np.array_equal(a.victim_labels[k], b.victim_labels[k]) for k in a.test_sets)
