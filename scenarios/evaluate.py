"""The evaluation harness: a seat's policies played on the same held-out seeds, compared in pairs.

``extractgym eval SCENARIO --seat attacker_0 --policy preset --policy random --policy best-constant --seeds 10``
plays each policy in the seat for every held-out seed (the other seats follow the scenario's brains, seeded by
the episode, so every policy meets the same opponents, benign customers and victims: common random numbers), and
reports each policy's mean return +- standard error and its paired difference to the first policy, with a
one-sided p-value (paired t-test) that it is better.

Policies:

* ``preset``: the scenario's own brain for the seat (the attack or defence as published, or its script);
* ``random``: a uniformly random action each round;
* ``constant:K=V,K=V``: the preset with those knobs pinned (values as the knobs print them);
* ``best-constant``: the constant action (one choice per knob) with the best mean return on the *training* seeds
  (disjoint from the held-out ones), then played on the held-out seeds: every constant action is tried when there
  are at most ``MAX_CONSTANTS``, otherwise coordinate ascent searches them (:func:`coordinate_ascent`);
* ``type-oracle``: a yardstick that *sees* the opponents' hidden draw (the episode's type, :meth:`Evaluator.
  episode_type`) and plays the best constant action for that type, searched on training seeds of that type only.
  Its paired gain over ``best-constant`` is the **value of adaptation**: what knowing the type is worth to the best
  constant actions, the most an adaptive policy can gain by reading the type from its observations and then
  playing a constant (:meth:`Evaluator.by_type` searches both on the same training seeds, balanced by type);
* the name of a registered brain (``sticky-random``, ``spread-on-ban``, ...), optionally ``NAME:K=V,...`` for its
  parameters (a list as ``V/V/V``);
* a path to a saved policy (a learned brain, :mod:`extractgym.agents.brains.learned`).

Held-out seeds are ``HELD_OUT + i``; training seeds (the best-constant search) are ``i`` (never overlapping). With
types (``by_type``), the training seeds are the first ``train_seeds`` of each type among ``0, 1, 2, ...``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.agents.brains import BRAINS, RandomBrain, pinned_indices
from extractgym.envs.protocols import Knob, encode_action, knob_values
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
from extractgym.scenarios.schema import validated_params

HELD_OUT = 10_000
FIGURES = ("attacker_accuracy", "fidelity", "cost", "queries", "accounts_created", "accounts_banned",
           "benign_value_share", "false_positive_rate")
MAX_CONSTANTS = 512
MAX_SWEEPS = 3  # coordinate ascent: at most this many passes over the knobs
MAX_STARTS = 3  # ... from at most this many starts (the best-scoring of the preset and the given ones)
MAX_TYPE_SCAN = 2000  # training seeds scanned for the episodes of each type


class EvalError(ValueError):
    """A policy or seat that cannot be evaluated, with the reason."""


@dataclass
class PolicyResult:
    name: str
    returns: np.ndarray  # per held-out seed
    figures: dict[str, np.ndarray] = field(default_factory=dict)
    note: str = ""
    traces: list[dict[str, list[dict[str, Any]]]] = field(default_factory=list)  # per seed: each seat's knob values
    # per round (what the policy did, and what the opponents did: the hidden draws a policy has to read)
    types: list[str] = field(default_factory=list)  # per seed: the opponents' hidden draw (with ``by_type``)
    summaries: list[dict[str, Any]] = field(default_factory=list)  # per seed: the episode's summary (``keep``)

    def by_type(self) -> dict[str, np.ndarray]:
        """The returns grouped by the seeds' types (empty without types)."""
        out: dict[str, list[float]] = {}
        for t, r in zip(self.types, self.returns, strict=False):
            out.setdefault(t, []).append(float(r))
        return {t: np.asarray(v) for t, v in sorted(out.items())}

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def se(self) -> float:
        return float(self.returns.std(ddof=1) / math.sqrt(len(self.returns))) if len(self.returns) > 1 else math.nan


@dataclass(frozen=True)
class Paired:
    """``policy - baseline`` per seed: mean, standard error, one-sided p-value that the policy is better."""

    mean: float
    se: float
    p_better: float


def paired(a: np.ndarray, b: np.ndarray) -> Paired:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    if n < 2:
        return Paired(float(d.mean()), se, math.nan)
    if se == 0:
        return Paired(float(d.mean()), 0.0, 0.0 if d.mean() > 0 else 1.0)
    from scipy.stats import t

    return Paired(float(d.mean()), se, float(t.sf(d.mean() / se, n - 1)))


def constant_brain(knobs: tuple[Knob, ...], indices: Sequence[int]) -> Callable[[np.ndarray], int]:
    action = encode_action(knobs, list(indices))
    return lambda obs: action


def coordinate_ascent(score: Callable[[tuple[int, ...]], float], sizes: Sequence[int],
                      starts: Sequence[Sequence[int]], max_sweeps: int = MAX_SWEEPS) -> tuple[int, ...]:
    """The best constant action coordinate ascent finds from each of ``starts``: one knob at a time, every choice
    tried with the others held, the best kept, until a pass over all knobs changes nothing (or ``max_sweeps``
    passes). ``score`` is called once per distinct action (memoise it); ties keep the current choice, then the
    lower index. Returns the best action found from any start."""
    best: tuple[int, ...] | None = None
    for start in starts:
        current = tuple(int(i) for i in start)
        value = score(current)
        for _ in range(max_sweeps):
            moved = False
            for k, n in enumerate(sizes):
                for choice in range(n):
                    if choice == current[k]:
                        continue
                    cand = current[:k] + (choice,) + current[k + 1:]
                    v = score(cand)
                    if v > value:
                        current, value, moved = cand, v, True
            if not moved:
                break
        if best is None or value > score(best):
            best = current
    return best if best is not None else ()


def parse_values(text: str, knobs: tuple[Knob, ...] | None = None) -> dict[str, Any]:
    """``K=V,K=V`` to ``{K: V}``, each value matched against the knob's choices as they print."""
    out: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in item:
            raise EvalError(f"expected NAME=VALUE, got {item!r}")
        name, raw = (s.strip() for s in item.split("=", 1))
        knob = next((k for k in knobs or () if k.name == name), None)
        if knob is not None:
            match = [c for c in knob.choices if str(c) == raw]
            if not match:
                raise EvalError(f"knob {name!r} has no choice {raw!r}; choices: {[str(c) for c in knob.choices]}")
            out[name] = match[0]
        else:
            out[name] = _scalar(raw)
    return out


def as_number(raw: str) -> Any:
    """``raw`` as an int or a float if it reads as one (``1e-4`` included), else unchanged."""
    for cast in (int, float):
        try:
            return cast(raw)
        except ValueError:
            pass
    return raw


def _scalar(raw: str) -> Any:
    if "/" in raw:  # a list: 1/2/4
        return [_scalar(r) for r in raw.split("/")]
    value = as_number(raw)
    return {"None": None, "true": True, "false": False}.get(value, value) if isinstance(value, str) else value


class _Recorder:
    """A brain that logs the knob values of every action it takes."""

    def __init__(self, brain: Callable[[np.ndarray], Any], knobs: tuple[Knob, ...], log: list) -> None:
        self.brain, self.knobs, self.log = brain, knobs, log

    def __call__(self, obs: np.ndarray) -> Any:
        action = self.brain(obs)
        self.log.append({k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v))
                         for k, v in knob_values(self.knobs, action).items()})
        return action


def describe_trace(rounds: Sequence[dict[str, Any]], knobs: tuple[Knob, ...] = ()) -> str:
    """A seat's knob values over an episode, run-length encoded: ``a=1,b=x x3 | a=2,b=x x9`` (knobs with a single
    choice left out)."""
    fixed = {k.name for k in knobs if len(k.choices) == 1}
    runs: list[list[Any]] = []
    for values in rounds:
        text = ",".join(f"{k}={v}" for k, v in values.items() if k not in fixed) or "-"
        if runs and runs[-1][0] == text:
            runs[-1][1] += 1
        else:
            runs.append([text, 1])
    return " | ".join(f"{text} x{n}" for text, n in runs)


class Evaluator:
    """Plays policies in one seat of a scenario on paired seeds.

    Args:
        scenario: name, path, dict or Scenario.
        seat: the seat evaluated (default: the first attacker).
        overrides: scenario fields to replace (e.g. ``rounds``).
    """

    def __init__(self, scenario: Any, seat: str | None = None, **overrides: Any) -> None:
        self.env = make_env(scenario, action_space="multi", **overrides)
        seats = self.env.possible_agents
        self.seat = seat or next((s for s, i in self.env.seat_info.items() if i.role == "attacker"), seats[0])
        if self.seat not in seats:
            raise EvalError(f"unknown seat {self.seat!r}; this scenario's seats: {', '.join(seats)}")
        self.knobs = self.env.knobs(self.seat)
        self._types: dict[int, str] = {}

    def brain(self, spec: str, seed: int) -> Callable[[np.ndarray], Any]:
        """The seat's policy for one episode (``spec`` as the module docstring lists)."""
        if spec == "preset":
            return self.env.factory.brains(seed)[self.seat]
        if spec == "random":
            return RandomBrain(self.knobs, rng=np.random.default_rng([seed, 7]))
        if spec.startswith("constant:"):
            return constant_brain(self.knobs, pinned_indices(self.knobs, parse_values(spec[9:], self.knobs)))
        name, _, params = spec.partition(":")
        if name in BRAINS:
            try:
                entry = BRAINS[name]
                return entry(self.knobs, {}, np.random.default_rng([seed, 7]),
                             **validated_params(entry, parse_values(params)))
            except (ValueError, TypeError) as e:
                raise EvalError(f"policy {spec!r}: {e}") from None
        if Path(spec).exists():
            from extractgym.agents.brains.learned import load_brain

            return load_brain(Path(spec), self.env, self.seat)
        if spec.endswith(".zip") or "/" in spec:
            raise EvalError(f"policy file {spec} not found")
        raise EvalError(f"unknown policy {spec!r}: preset, random, best-constant, constant:K=V,..., a brain "
                        f"({', '.join(BRAINS)}) or a policy file")

    def play(self, make_brain: Callable[[int], Callable[[np.ndarray], Any]], seeds: Sequence[int],
             trace: bool = False, keep: bool = False) -> PolicyResult:
        """Play ``make_brain(seed)`` in the seat on each seed; with ``trace``, record every seat's knob values per
        round (``PolicyResult.traces``); with ``keep``, every episode's summary (``PolicyResult.summaries``)."""
        returns, figures, traces, summaries = [], {k: [] for k in FIGURES}, [], []
        for seed in seeds:
            brains = self.env.factory.brains(seed)
            brains[self.seat] = make_brain(seed)
            if trace:
                log: dict[str, list[dict[str, Any]]] = {s: [] for s in brains}
                brains = {s: _Recorder(b, self.env.knobs(s), log[s]) for s, b in brains.items()}
                traces.append(log)
            s = play_episode(self.env, seed=seed, brains=brains)
            returns.append(s["returns"][self.seat])
            for k in FIGURES:
                figures[k].append(s.get(k, math.nan))
            if keep:
                summaries.append(s)
        return PolicyResult("", np.asarray(returns), {k: np.asarray(v, dtype=np.float64) for k, v in figures.items()},
                            traces=traces, summaries=summaries)

    def constants(self) -> list[tuple[int, ...]]:
        combos = list(itertools.product(*(range(len(k.choices)) for k in self.knobs)))
        if len(combos) > MAX_CONSTANTS:
            raise EvalError(f"{len(combos)} constant actions; best-constant searches at most {MAX_CONSTANTS}")
        return combos

    def n_constants(self) -> int:
        return int(np.prod([len(k.choices) for k in self.knobs])) if self.knobs else 1

    def best_constant(self, train_seeds: Sequence[int], starts: Sequence[Sequence[int]] = ()
                      ) -> tuple[tuple[int, ...], dict[tuple[int, ...], float]]:
        """The constant action with the best mean return on ``train_seeds`` and the mean of every action tried: all
        of them when there are at most ``MAX_CONSTANTS``, else those :func:`coordinate_ascent` visits from the
        best ``MAX_STARTS`` of the preset and ``starts`` (e.g. the best constants of each type)."""
        means: dict[tuple[int, ...], float] = {}

        def score(c: tuple[int, ...]) -> float:
            if c not in means:
                means[c] = self.play(lambda seed, c=c: constant_brain(self.knobs, c), train_seeds).mean
            return means[c]

        if self.n_constants() <= MAX_CONSTANTS:
            for c in self.constants():
                score(c)
            return max(means, key=lambda c: (means[c], [-i for i in c])), means
        preset = tuple(k.default for k in self.knobs)
        starts = list(dict.fromkeys([preset, *(tuple(s) for s in starts)]))
        starts = sorted(starts, key=score, reverse=True)[:MAX_STARTS]  # ascend from the most promising starts
        return coordinate_ascent(score, [len(k.choices) for k in self.knobs], starts), means

    # -- hidden types ------------------------------------------------------------------------------------
    def episode_type(self, seed: int) -> str:
        """What the other seats drew for episode ``seed`` (their brains are seeded by it): for each, what a drawing
        brain says it drew (its ``drawn``), else its first round's knob values (a ``sticky-random`` opponent holds
        them all episode). Knobs with one choice are left out. The learner never sees this; the oracle does."""
        if seed not in self._types:
            brains = self.env.factory.brains(seed)
            obs, _ = self.env.reset(seed=seed)
            parts = []
            for s in self.env.possible_agents:
                if s == self.seat:
                    continue
                action = brains[s](obs[s])
                drawn = getattr(brains[s], "drawn", None)
                if drawn is None:
                    knobs = self.env.knobs(s)
                    drawn = ",".join(f"{k}={v}" for k, v in knob_values(knobs, action).items()
                                     if len(next(kn for kn in knobs if kn.name == k).choices) > 1)
                parts.append(f"{s}:{drawn}" if len(self.env.possible_agents) > 2 else str(drawn))
            self._types[seed] = "; ".join(parts) or "-"
        return self._types[seed]

    def typed_seeds(self, per_type: int, start: int = 0) -> dict[str, list[int]]:
        """The first ``per_type`` training seeds of each type, scanning ``start, start + 1, ...`` until every type
        seen has them and 20 more seeds showed no new type (at most ``MAX_TYPE_SCAN`` seeds)."""
        out: dict[str, list[int]] = {}
        quiet = 0
        for seed in range(start, start + MAX_TYPE_SCAN):
            t = self.episode_type(seed)
            quiet = quiet + 1 if t in out else 0
            out.setdefault(t, [])
            if len(out[t]) < per_type:
                out[t].append(seed)
            if quiet >= 20 and all(len(v) >= per_type for v in out.values()):
                break
        return dict(sorted(out.items()))

    def type_constants(self, typed: Mapping[str, Sequence[int]],
                       progress: Callable[[str], None] | None = None) -> dict[str, tuple[int, ...]]:
        """The best constant action of each type, searched on that type's training seeds only."""
        out = {}
        for t, seeds in typed.items():
            if progress:
                progress(f"type-oracle: {t}")
            out[t], _ = self.best_constant(seeds)
        return out

    def describe(self, indices: Sequence[int]) -> str:
        return ",".join(f"{k.name}={k.choices[i]}" for k, i in zip(self.knobs, indices, strict=True))

    def evaluate(self, policies: Sequence[str], seeds: int, train_seeds: int = 5,
                 progress: Callable[[str], None] | None = None, trace: bool = False,
                 by_type: bool = False) -> list[PolicyResult]:
        """Play ``policies`` on ``seeds`` held-out seeds. With ``by_type`` (implied by ``type-oracle``), constants
        are searched on ``train_seeds`` training seeds *of each type* (the same seeds for ``best-constant``, whose
        search also starts from each type's best constant), and every result records its seeds' types."""
        held_out = [HELD_OUT + i for i in range(seeds)]
        by_type = by_type or "type-oracle" in policies
        typed = self.typed_seeds(train_seeds) if by_type else None
        training = sorted(s for v in typed.values() for s in v) if typed else list(range(train_seeds))
        oracle: dict[str, tuple[int, ...]] | None = None
        if typed and ("type-oracle" in policies or "best-constant" in policies):
            oracle = self.type_constants(typed, progress)
        overall: list[tuple[int, ...]] = []  # the best constant over all types, searched once

        def best_overall() -> tuple[int, ...]:
            if not overall:
                overall.append(self.best_constant(training, list(oracle.values()) if oracle else ())[0])
            return overall[0]

        results = []
        for spec in policies:
            if progress:
                progress(spec)
            note = ""
            if spec == "best-constant":
                best = best_overall()
                note = self.describe(best)
                result = self.play(lambda seed, b=best: constant_brain(self.knobs, b), held_out, trace)
            elif spec == "type-oracle":
                assert oracle is not None
                note = "; ".join(f"{t}: {self.describe(c)}" for t, c in oracle.items())
                # a held-out seed of a type the training seeds never drew gets the best constant over all types
                result = self.play(lambda seed: constant_brain(
                    self.knobs, oracle.get(self.episode_type(seed)) or best_overall()), held_out, trace)
            else:
                self.brain(spec, held_out[0])  # fail now, naming the policy
                result = self.play(lambda seed, s=spec: self.brain(s, seed), held_out, trace)
            result.name, result.note = spec, note
            if by_type:
                result.types = [self.episode_type(seed) for seed in held_out]
            results.append(result)
        return results
