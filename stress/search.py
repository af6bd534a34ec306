"""The budgeted search for the strongest adaptive attacker against a scenario's defence (``extractgym stress``).

Every candidate plays the attacker seat on the same *search* seeds (training seeds of the evaluation harness,
``0, 1, ...``; each candidate meets the same opponents, benign customers and victims), in this order, while the CPU
budget lasts (this process and its workers, :func:`~extractgym.training.callbacks.cpu_seconds`):

1. **Variants of the seat**: as the scenario composes it, then with each attacker tactic it lacks added (``sybil``,
   ``blinding``, ``oars``: seed 003 §VII, seed 001 §3, OARS), then pairs of them, then all three (the tactics
   combinations that fit the seat's target: a variant that fails validation is skipped, with the reason).
2. In each variant: its preset, every registered observation-reading script that fits the seat
   (``agents/brains/scripts.py``, default parameters), ``random``, and the **best constant action** (every one
   when there are at most :data:`~extractgym.scenarios.evaluate.MAX_CONSTANTS`, else coordinate ascent from the
   preset: :func:`~extractgym.scenarios.evaluate.coordinate_ascent`).
3. **RL** in the best variant so far: maskable PPO with memory (the last ``stack`` observations) from a random
   network, and from a clone of the best script (``--imitate``), each for its share of the budget.

The **adaptive attacker** is the candidate with the best mean on the search seeds, the scenario's preset (the
*passive* attacker) included: the search never reports a candidate it did not prefer to the preset on seeds it may
look at. Then the passive and the adaptive attacker (and the runners-up) play the **held-out** seeds
(``HELD_OUT + i``, never searched on): the gap is their paired difference there, with a 95% t-interval, so the
winner's luck on the search seeds does not inflate it.

Then the passive and the adaptive attacker replay the same held-out seeds with the scenario's defence removed (its
``defenders:`` emptied; the API's own terms, output format, prices, rate limits, stay: they are the interface, not
the defence). The **erosion** is the per-seed difference in differences, (adaptive - passive) defended minus
(adaptive - passive) undefended: what the defence gives away to adaptation beyond what the preset leaves on the
table anyway. On a scenario with no defence (every defender ``none``) the two games are the same and the replay is
skipped: the erosion is 0 by construction.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TACTICS = ("sybil", "blinding", "oars")  # the attacker tactics a variant may add (the filter needs a detector choice)
FINALISTS = 5  # candidates (besides the passive one) replayed on the held-out seeds


class BudgetSpent(Exception):
    """The CPU budget of a phase ran out."""


@dataclass
class StressConfig:
    """A stress test. ``scenario``: shipped name, YAML path or dict; ``seat``: an attacker seat (default the first);
    ``cpu_minutes``: the search's budget (the held-out comparison comes on top, about ``seeds`` episodes per
    finalist); ``seeds``: held-out seeds of the final comparison; ``search_seeds``: seeds candidates are ranked on;
    ``rl``: train RL attackers; ``stack``: their memory; ``variants``: try tactic combinations; ``undefended``:
    replay the passive and the adaptive attacker on the held-out seeds with the defence removed (the erosion)."""

    scenario: Any
    seat: str | None = None
    cpu_minutes: float = 10.0
    seeds: int = 20
    search_seeds: int = 6
    out: Path = Path("runs/stress")
    rl: bool = True
    stack: int = 4
    variants: bool = True
    seed: int = 0
    rl_share: float = 0.5  # of the budget left after the scripts and constants of the seat as composed
    undefended: bool = True  # replay the passive and the adaptive attacker with the defence removed (erosion)


@dataclass
class Candidate:
    """One attacker tried: the seat variant (tactics added), the policy spec the evaluator plays, what kind of
    candidate it is, and its returns on the search seeds."""

    name: str
    variant: tuple[str, ...]
    policy: str
    kind: str  # passive | preset | script | random | constant | rl-scratch | rl-imitate
    search: np.ndarray
    cpu: float  # CPU-seconds into the search when it was scored

    @property
    def mean(self) -> float:
        return float(self.search.mean())

    def row(self) -> dict[str, Any]:
        return {"name": self.name, "variant": list(self.variant), "policy": self.policy, "kind": self.kind,
                "search_mean": self.mean, "cpu_seconds": self.cpu}


@dataclass
class StressResult:
    config: StressConfig
    scenario: str
    seat: str
    threat_model: dict[str, Any]
    candidates: list[Candidate]
    passive: Any  # PolicyResult on the held-out seeds
    adaptive: Any
    adaptive_candidate: Candidate
    finalists: list[tuple[Candidate, Any]]
    curve: list[dict[str, Any]]
    rl_runs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    undefended: Undefended | None = None


@dataclass
class Undefended:
    """The held-out replay with the scenario's defence removed. ``status``: ``replayed`` (``passive`` and
    ``adaptive`` hold the results), ``undefended scenario`` (no defence to remove: the same game, not replayed),
    ``skipped`` (``--no-undefended``) or ``not replayable`` (``note`` says why)."""

    status: str
    passive: Any = None  # PolicyResult on the held-out seeds, defence removed
    adaptive: Any = None
    note: str = ""
    cpu_seconds: float = 0.0


def scenario_dict(scenario: Any) -> dict[str, Any]:
    """The scenario as a plain dict (policy paths resolved), to derive variants from."""
    from extractgym.scenarios import load_scenario

    return load_scenario(scenario).model_dump(mode="json")


def variants(data: dict[str, Any], index: int, enabled: bool = True) -> list[tuple[tuple[str, ...], dict[str, Any]]]:
    """The seat as composed, then with each missing tactic, each pair, and all of them added (defaults)."""
    have = set((data["attackers"][index].get("tactics") or {}))
    missing = [t for t in TACTICS if t not in have]
    out = [((), data)]
    if not enabled:
        return out
    for r in range(1, len(missing) + 1):
        for combo in itertools.combinations(missing, r):
            d = copy.deepcopy(data)
            d["attackers"][index]["tactics"] = {**(d["attackers"][index].get("tactics") or {}), **{t: {} for t in combo}}
            out.append((combo, d))
    return out


def undefended(data: dict[str, Any]) -> bool:
    """Whether the scenario has no defence: no defender seats, or only the ``none`` body."""
    return all(d["body"] == "none" for d in data.get("defenders", []))


def without_defence(data: dict[str, Any]) -> dict[str, Any]:
    """The scenario with its defence removed: ``defenders:`` emptied. The services' terms (output format, prices,
    account terms, rate limits) stay: they are the API's interface, part of the threat model, not the defence. The
    attacker seats are unchanged, so their knobs and observations are too (an attacker's observation does not
    depend on the defender seats): a policy trained against the defence replays without it."""
    d = copy.deepcopy(data)
    d["defenders"] = []
    return d


def threat_model(data: dict[str, Any], index: int) -> dict[str, Any]:
    """What the attacker may spend, what data it holds and what interface it meets (the card's first section)."""
    seat = data["attackers"][index]
    params = seat.get("params") or {}
    data_keys = {k: v for k, v in params.items() if k in ("pool", "pool_split", "pool_size", "data", "seed_size")}
    services = [{k: s.get(k) for k in ("name", "victim", "output", "price_per_query", "account_price", "account_credit",
                                         "identity_cost", "free_quota", "rate_limit", "ban_delay", "charge_rejected")}
                for s in data["services"]]
    return {"budget": seat.get("budget") or {}, "data": data_keys or {"pool": "(the body's default)"},
            "interface": {"services": services, "rounds": data.get("rounds")},
            "attacker": {"body": seat["body"], "params": params, "tactics": seat.get("tactics") or {}},
            "defenders": [{"body": d["body"], "params": d.get("params") or {}, "brain": d.get("brain") or {}}
                          for d in data.get("defenders", [])]}


def scripts_for(evaluator: Any) -> list[str]:
    """Registered observation-reading scripts that can drive the seat's knobs (default parameters)."""
    from extractgym.agents.brains import BRAINS
    from extractgym.envs.game import ATTACKER_OBS

    out = []
    for name, entry in BRAINS.items():
        if getattr(entry, "features", None) is not ATTACKER_OBS:
            continue
        try:
            entry(evaluator.knobs, {}, np.random.default_rng(0))
        except (ValueError, TypeError):
            continue
        out.append(name)
    return out


class Search:
    """The search of one stress test (module docstring)."""

    def __init__(self, cfg: StressConfig, log: Callable[[str], None] | None = None) -> None:
        from extractgym.scenarios.evaluate import Evaluator
        from extractgym.training.callbacks import cpu_seconds

        if not cfg.cpu_minutes > 0:
            raise ValueError(f"cpu minutes must be positive, got {cfg.cpu_minutes}")
        if cfg.seeds < 2 or cfg.search_seeds < 1:
            raise ValueError("seeds must be at least 2 and search seeds at least 1")
        self.cfg, self.say = cfg, log or (lambda _m: None)
        self.data = scenario_dict(cfg.scenario)
        base = Evaluator(self.data, cfg.seat)
        if base.env.seat_info[base.seat].role != "attacker":
            raise ValueError(f"stress searches attackers: {base.seat} is a {base.env.seat_info[base.seat].role} seat; "
                             f"name an attacker seat (attacker_0, ...)")
        self.seat = base.seat
        self.index = int(self.seat.split("_")[1])
        self.base = base
        self.cpu0, self.wall0 = cpu_seconds(), time.perf_counter()
        self.budget = cfg.cpu_minutes * 60.0
        self.search_seeds = list(range(cfg.search_seeds))
        self.candidates: list[Candidate] = []
        self.curve: list[dict[str, Any]] = []
        self.skipped: list[str] = []
        self.evaluators: dict[tuple[str, ...], Any] = {}
        self.variant_data: dict[tuple[str, ...], dict[str, Any]] = {(): self.data}
        self.rl_runs: list[dict[str, Any]] = []

    # -- bookkeeping ----------------------------------------------------------------------------------
    def spent(self) -> float:
        from extractgym.training.callbacks import cpu_seconds

        return cpu_seconds() - self.cpu0

    def check(self, limit: float) -> None:
        if self.spent() >= limit:
            raise BudgetSpent()

    def add(self, cand: Candidate) -> Candidate:
        self.candidates.append(cand)
        best = max(self.candidates, key=lambda c: c.mean)
        self.curve.append({"cpu_seconds": cand.cpu, "candidate": cand.name, "search_mean": cand.mean,
                           "best_so_far": best.mean, "best": best.name})
        self.say(f"[{cand.cpu:7.0f} CPU-s] {cand.name}: {cand.mean:.4f} (best {best.name}: {best.mean:.4f})")
        return cand

    def evaluator(self, variant: tuple[str, ...], data: dict[str, Any]) -> Any:
        from extractgym.scenarios.evaluate import Evaluator

        if variant not in self.evaluators:
            self.evaluators[variant] = self.base if not variant else Evaluator(data, self.seat)
            self.variant_data[variant] = data
        return self.evaluators[variant]

    def score(self, ev: Any, variant: tuple[str, ...], name: str, policy: str, kind: str,
              brain: Callable[[int], Any] | None = None) -> Candidate:
        res = ev.play(brain or (lambda seed: ev.brain(policy, seed)), self.search_seeds)
        return self.add(Candidate(name, variant, policy, kind, res.returns, self.spent()))

    @staticmethod
    def label(variant: tuple[str, ...], name: str) -> str:
        return name if not variant else f"+{'+'.join(variant)}: {name}"

    # -- the phases -------------------------------------------------------------------------------------
    def run(self) -> StressResult:
        cfg = self.cfg
        ev0 = self.base
        passive = self.score(ev0, (), "preset (passive)", "preset", "passive")
        found = variants(self.data, self.index, cfg.variants)
        script_limit = self.budget * (1.0 - (cfg.rl_share if cfg.rl else 0.0))
        try:
            for variant, data in found:
                self.check(script_limit)
                try:
                    ev = self.evaluator(variant, data)
                except ValueError as e:  # a tactic that cannot work on this target (e.g. blinding text)
                    self.skipped.append(f"+{'+'.join(variant)}: {str(e).splitlines()[-1].strip()}")
                    continue
                self.explore(ev, variant, script_limit)
        except BudgetSpent:
            self.say(f"scripts and constants: budget share spent after {self.spent():.0f} CPU-s")
        if cfg.rl:
            self.reinforce()
        return self.compare(passive)

    def explore(self, ev: Any, variant: tuple[str, ...], limit: float) -> None:
        from extractgym.scenarios.evaluate import MAX_CONSTANTS, constant_brain, coordinate_ascent

        if variant:
            self.score(ev, variant, self.label(variant, "preset"), "preset", "preset")
        for name in (*scripts_for(ev), "random"):
            self.check(limit)
            self.score(ev, variant, self.label(variant, name), name, "script" if name != "random" else "random")
        means: dict[tuple[int, ...], float] = {}

        def score(c: tuple[int, ...]) -> float:
            if c not in means:
                self.check(limit)
                res = ev.play(lambda seed: constant_brain(ev.knobs, c), self.search_seeds)
                means[c] = float(res.returns.mean())
                spec = "constant:" + ev.describe(c)
                self.add(Candidate(self.label(variant, spec), variant, spec, "constant", res.returns, self.spent()))
            return means[c]

        preset = tuple(k.default for k in ev.knobs)
        try:
            if ev.n_constants() <= MAX_CONSTANTS:
                for c in ev.constants():
                    score(c)
            else:
                coordinate_ascent(score, [len(k.choices) for k in ev.knobs], [preset])
        finally:
            if means:  # keep only the best constant of the variant among the candidates shown as such
                best = max(means, key=lambda c: means[c])
                keep = "constant:" + ev.describe(best)
                self.candidates = [c for c in self.candidates if c.kind != "constant" or c.variant != variant
                                   or c.policy == keep]

    def reinforce(self) -> None:
        """RL from scratch and from a clone of the best script, in the best variant so far, sharing what is left."""
        from extractgym.training.train import TrainConfig, train

        best = max((c for c in self.candidates if c.kind != "passive"), key=lambda c: c.mean, default=None)
        variant = best.variant if best is not None else ()
        data = dict(variants(self.data, self.index, True))[variant] if variant else self.data
        ev = self.evaluator(variant, data)
        scripts = [c for c in self.candidates if c.kind == "script" and c.variant == variant]
        teacher = max(scripts, key=lambda c: c.mean).policy if scripts else None
        runs = [("rl-scratch", None), *([("rl-imitate", teacher)] if teacher else [])]
        for i, (kind, imitate) in enumerate(runs):
            left = self.budget - self.spent()
            share = left / (len(runs) - i) - self._eval_cost(ev)
            if share < 5.0:
                self.say(f"{kind}: no budget left ({left:.0f} CPU-s)")
                continue
            out = Path(self.cfg.out) / "rl" / kind
            self.say(f"{kind}: {share:.0f} CPU-s of maskable PPO (stack {self.cfg.stack})"
                     + (f" from a clone of {imitate}" if imitate else " from a random network"))
            result = train(TrainConfig(data, self.seat, "maskable-ppo", timesteps=10**8, n_envs=1, seed=self.cfg.seed,
                                       out=out, vec="dummy", eval_seeds=0, tensorboard=False, progress=False,
                                       imitate=imitate, imitate_episodes=16, imitate_rounds=2, stack=self.cfg.stack,
                                       cpu_minutes=share / 60.0))
            self.rl_runs.append({"kind": kind, "teacher": imitate, "variant": list(variant), "policy": str(result.policy),
                                 "steps": int(result.config.get("steps_done", 0)),
                                 "training_cpu_seconds": result.training_cpu_seconds, "episodes": result.episodes})
            name = self.label(variant, f"{kind}" + (f" ({imitate})" if imitate else ""))
            self.score(ev, variant, name, str(result.policy), kind)

    def _eval_cost(self, ev: Any) -> float:
        """CPU-seconds one candidate's search seeds cost, on average so far (kept back for scoring an RL policy)."""
        return self.spent() / len(self.curve) if self.curve else 0.0

    def compare(self, passive: Candidate) -> StressResult:
        """The passive attacker and the finalists on the held-out seeds (paired)."""
        from extractgym.scenarios.evaluate import HELD_OUT

        winner = max(self.candidates, key=lambda c: c.mean)
        others = sorted((c for c in self.candidates if c is not winner and c is not passive),
                        key=lambda c: -c.mean)[:FINALISTS - 1]
        held = [HELD_OUT + i for i in range(self.cfg.seeds)]
        self.say(f"held-out comparison on {len(held)} seeds: passive, {winner.name}"
                 + (f" and {len(others)} runners-up" if others else ""))
        results: dict[int, Any] = {}
        for cand in [passive, winner, *others]:
            if id(cand) in results:
                continue
            ev = self.evaluators[cand.variant]
            res = ev.play(lambda seed, c=cand, e=ev: e.brain(c.policy, seed), held, trace=True, keep=True)
            res.name = cand.name
            if len(set(ev.episode_type(s) for s in held[:40])) > 1:
                res.types = [ev.episode_type(s) for s in held]
            results[id(cand)] = res
        bare = self.replay_undefended(passive, winner, held)
        return StressResult(self.cfg, self.base.env.factory.name, self.seat, threat_model(self.data, self.index),
                            self.candidates, results[id(passive)], results[id(winner)], winner,
                            [(c, results[id(c)]) for c in others], self.curve, self.rl_runs, self.skipped,
                            self.spent(), time.perf_counter() - self.wall0, bare)

    def replay_undefended(self, passive: Candidate, winner: Candidate, held: list[int]) -> Undefended:
        """The passive and the adaptive attacker on the held-out seeds ``held`` with the defence removed (each in
        its own seat variant), or why not."""
        from extractgym.agents.brains.learned import PolicyError
        from extractgym.scenarios.evaluate import EvalError, Evaluator

        if undefended(self.data):
            return Undefended("undefended scenario", note="the scenario has no defence: without it the game is the "
                                                          "same, so the erosion is 0 by construction (not replayed)")
        if not self.cfg.undefended:
            return Undefended("skipped", note="the undefended replay was skipped (--no-undefended)")
        self.say(f"undefended replay on {len(held)} seeds: passive and {winner.name} with the defence removed")
        cpu0 = self.spent()
        out: dict[int, Any] = {}
        for cand in (passive, winner):
            if id(cand) in out:
                continue
            try:
                ev = Evaluator(without_defence(self.variant_data[cand.variant]), self.seat)
                res = ev.play(lambda seed, c=cand, e=ev: e.brain(c.policy, seed), held, keep=True)
            except (EvalError, PolicyError, ValueError) as e:  # e.g. a learned policy whose seat no longer fits
                reason = str(e).splitlines()[-1].strip() if str(e).strip() else type(e).__name__
                self.say(f"undefended replay: {cand.name} cannot be replayed without the defence: {reason}")
                return Undefended("not replayable", note=f"{cand.name} cannot be replayed without the defence: "
                                                         f"{reason}", cpu_seconds=self.spent() - cpu0)
            res.name = cand.name
            out[id(cand)] = res
        return Undefended("replayed", out[id(passive)], out[id(winner)], cpu_seconds=self.spent() - cpu0)


def gap_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float, float]:
    """Paired ``a - b``: mean, SE and the two-sided ``level`` t-interval (0-width when ``a`` and ``b`` are equal)."""
    from scipy.stats import t

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    half = float(t.ppf(0.5 + level / 2, n - 1) * se) if n > 1 and se > 0 else 0.0
    return float(d.mean()), se, float(d.mean() - half), float(d.mean() + half)


def stress(cfg: StressConfig, log: Callable[[str], None] | None = None) -> StressResult:
    """Run a stress test and write its card into ``cfg.out`` (``card.json``, ``card.html``)."""
    from extractgym.stress.card import write_card
    from extractgym.training.envs import one_thread

    one_thread()
    result = Search(cfg, log).run()
    write_card(result, Path(cfg.out))
    return result
