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
  (disjoint from the held-out ones), then played on the held-out seeds;
* the name of a registered brain (``sticky-random``, ``spread-on-ban``, ...), optionally ``NAME:K=V,...`` for its
  parameters (a list as ``V/V/V``);
* a path to a saved policy (a learned brain, :mod:`extractgym.agents.brains.learned`).

Held-out seeds are ``HELD_OUT + i``; training seeds (the best-constant search) are ``i`` (never overlapping).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
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
             trace: bool = False) -> PolicyResult:
        """Play ``make_brain(seed)`` in the seat on each seed; with ``trace``, record every seat's knob values per
        round (``PolicyResult.traces``)."""
        returns, figures, traces = [], {k: [] for k in FIGURES}, []
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
        return PolicyResult("", np.asarray(returns), {k: np.asarray(v, dtype=np.float64) for k, v in figures.items()},
                            traces=traces)

    def constants(self) -> list[tuple[int, ...]]:
        combos = list(itertools.product(*(range(len(k.choices)) for k in self.knobs)))
        if len(combos) > MAX_CONSTANTS:
            raise EvalError(f"{len(combos)} constant actions; best-constant searches at most {MAX_CONSTANTS}")
        return combos

    def best_constant(self, train_seeds: Sequence[int]) -> tuple[tuple[int, ...], dict[tuple[int, ...], float]]:
        """The constant action with the best mean return on ``train_seeds`` (and every action's mean)."""
        means = {c: self.play(lambda seed, c=c: constant_brain(self.knobs, c), train_seeds).mean
                 for c in self.constants()}
        return max(means, key=lambda c: (means[c], [-i for i in c])), means

    def describe(self, indices: Sequence[int]) -> str:
        return ",".join(f"{k.name}={k.choices[i]}" for k, i in zip(self.knobs, indices, strict=True))

    def evaluate(self, policies: Sequence[str], seeds: int, train_seeds: int = 5,
                 progress: Callable[[str], None] | None = None, trace: bool = False) -> list[PolicyResult]:
        held_out = [HELD_OUT + i for i in range(seeds)]
        results = []
        for spec in policies:
            if progress:
                progress(spec)
            note = ""
            if spec == "best-constant":
                best, _ = self.best_constant(list(range(train_seeds)))
                note = self.describe(best)
                result = self.play(lambda seed, b=best: constant_brain(self.knobs, b), held_out, trace)
            else:
                self.brain(spec, held_out[0])  # fail now, naming the policy
                result = self.play(lambda seed, s=spec: self.brain(s, seed), held_out, trace)
            result.name, result.note = spec, note
            results.append(result)
        return results
