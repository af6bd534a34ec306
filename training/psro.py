"""Alternating training of both sides: Policy-Space Response Oracles (PSRO; Lanctot et al. 2017, "A Unified
Game-Theoretic Approach to Multiagent Reinforcement Learning", https://arxiv.org/abs/1711.00832; the shape of
OpenSpiel's ``open_spiel/python/algorithms/psro_v2``).

``extractgym psro SCENARIO --iterations K --out DIR`` plays attacker seat 0 against defender seat 0 of a scenario
(other seats keep the scenario's brains):

1. **Populations** start from scripted brains: the scenario's own brain for each seat, the body's preset and the
   registered observation-reading scripts that fit the seat (``agents/brains/scripts.py``), at most ``initial`` per side.
2. **Payoff matrix.** Every attacker x defender pair plays ``episodes`` paired seeds through the tournament runner
   (:mod:`extractgym.league`: process pool, results in ``DIR/league/results.jsonl``, cells keyed by what they play
   including the digest of every policy file, so each iteration plays only the new row and column). ``M_A`` and
   ``M_D`` are the mean episode returns of the attacker and the defender seat.
3. **Meta-strategy.** The zero-sum Nash equilibrium (linear programming, :func:`extractgym.league.rankings.
   zero_sum_nash`) of the game's zero-sum part ``(M_A - M_D) / 2`` (:func:`~extractgym.league.rankings.
   competitive_part`; it is ``M_A`` when the rewards are exactly zero-sum), or ``uniform``.
4. **Best responses.** A new attacker policy is trained (``extractgym train``'s :func:`~extractgym.training.train.
   train`, PPO or MaskablePPO) against the defender mixture, the defender's policy drawn afresh each episode with
   the meta-strategy's weights; likewise a new defender against the attacker mixture. Both join the populations.
5. **Best-response gain** (the exploitability proxy) of iteration ``k``: how much the new policy earns against the
   opponent's meta-strategy beyond what the current meta-strategy earns,
   ``gain_A = M_A[BR_A] . sigma_D - sigma_A . M_A . sigma_D`` (and ``gain_D`` alike, on ``M_D``), measured on the
   next iteration's matrix (the same paired seeds for every cell). Near an equilibrium no best response gains.

Output (``DIR``): ``psro.json`` (populations, matrices, meta-strategies, gains per iteration), ``gains.csv``,
``psro.png`` (gains and best-response learning curves), ``final_payoffs.csv`` / ``final_payoffs.md`` (the final
meta-strategy's payoff table: each pair's ``M_A`` and ``M_D`` with both sides' weights), the best responses'
training folders ``iter_K/attacker`` and ``iter_K/defender`` (policies, curves) and the league folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.training.train import TrainConfig, train

META_SOLVERS = ("nash", "uniform")
SCENARIO_LABEL = "game"


@dataclass
class Member:
    """A population member: a name and the ``brain:`` it plays with (a scenario brain spec)."""

    name: str
    brain: Any
    iteration: int = -1  # -1: an initial scripted brain; k: the best response of iteration k


@dataclass
class PsroConfig:
    scenario: str
    iterations: int = 3
    out: Path = Path("runs/psro")
    algo: str = "maskable-ppo"
    timesteps: int = 2000
    n_envs: int = 2
    episodes: int = 6
    meta_solver: str = "nash"
    initial: int = 3
    seed: int = 0
    workers: int | None = None
    vec: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    stack: int = 1  # the best responses' memory (observations read at once)


@dataclass
class Iteration:
    iteration: int
    attackers: list[str]
    defenders: list[str]
    m_a: np.ndarray
    m_d: np.ndarray
    sigma_a: np.ndarray
    sigma_d: np.ndarray

    @property
    def value_a(self) -> float:
        return float(self.sigma_a @ self.m_a @ self.sigma_d)

    @property
    def value_d(self) -> float:
        return float(self.sigma_a @ self.m_d @ self.sigma_d)

    def record(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "attackers": self.attackers, "defenders": self.defenders,
                "attacker_payoffs": self.m_a.tolist(), "defender_payoffs": self.m_d.tolist(),
                "attacker_meta_strategy": self.sigma_a.tolist(), "defender_meta_strategy": self.sigma_d.tolist(),
                "attacker_value": self.value_a, "defender_value": self.value_d}


def meta_strategy(m_a: np.ndarray, m_d: np.ndarray, solver: str) -> tuple[np.ndarray, np.ndarray]:
    """The meta-strategies of both sides for payoff matrices ``[attacker, defender]``."""
    from extractgym.league.rankings import competitive_part, zero_sum_nash

    if solver == "uniform":
        return np.full(m_a.shape[0], 1.0 / m_a.shape[0]), np.full(m_a.shape[1], 1.0 / m_a.shape[1])
    if solver != "nash":
        raise ValueError(f"unknown meta-solver {solver!r}; known: {', '.join(META_SOLVERS)}")
    eq = zero_sum_nash(competitive_part(m_a, m_d))
    return eq.row, eq.col


def gains(prev: Iteration, now: Iteration) -> dict[str, float]:
    """The best-response gains of the policies added after ``prev`` (the last row / column of ``now``)."""
    na, nd = len(prev.attackers), len(prev.defenders)
    if len(now.attackers) != na + 1 or len(now.defenders) != nd + 1:
        raise ValueError("expected one new policy per side")
    ga = float(now.m_a[na, :nd] @ prev.sigma_d) - prev.value_a
    gd = float(prev.sigma_a @ now.m_d[:na, nd]) - prev.value_d
    return {"iteration": prev.iteration, "attacker_gain": ga, "defender_gain": gd, "total_gain": ga + gd}


def scripted(role: str, knobs: tuple, own: dict[str, Any]) -> list[Member]:
    """The scenario's own brain for the seat, the preset and the scripts that fit the seat (in registry order)."""
    from extractgym.agents.brains import BRAINS
    from extractgym.envs.game import ATTACKER_OBS, DEFENDER_OBS

    features = ATTACKER_OBS if role == "attacker" else DEFENDER_OBS
    out = [Member(own["kind"] if set(own) == {"kind"} else "scenario", own)]
    seen = [own]
    if {"kind": "preset"} not in seen:
        out.append(Member("preset", {"kind": "preset"}))
        seen.append({"kind": "preset"})
    for name, entry in BRAINS.items():
        if getattr(entry, "features", None) is not features or {"kind": name} in seen or own.get("kind") == name:
            continue
        try:
            entry(knobs, {}, np.random.default_rng(0))
        except (ValueError, TypeError):
            continue
        out.append(Member(name, {"kind": name}))
    return out


class Psro:
    """The PSRO loop (module docstring). ``log`` receives one line per step; ``console`` the progress bars."""

    def __init__(self, cfg: PsroConfig, log: Callable[[str], None] | None = None, console: Any = None) -> None:
        from extractgym.scenarios import load_scenario, make_env

        if cfg.iterations < 1:
            raise ValueError("iterations must be at least 1")
        if cfg.meta_solver not in META_SOLVERS:
            raise ValueError(f"unknown meta-solver {cfg.meta_solver!r}; known: {', '.join(META_SOLVERS)}")
        self.cfg, self.log, self.console = cfg, log or (lambda _m: None), console
        self.scenario = load_scenario(cfg.scenario, **cfg.overrides)
        if not self.scenario.attackers or not self.scenario.defenders:
            raise ValueError(f"PSRO needs an attacker and a defender seat; {self.scenario.name!r} has "
                             f"{len(self.scenario.attackers)} and {len(self.scenario.defenders)}")
        env = make_env(self.scenario, action_space="multi")
        self.out = Path(cfg.out)
        dump = self.scenario.model_dump(mode="json")
        self.seats = {"attacker": dump["attackers"][0], "defender": dump["defenders"][0]}
        self.populations: dict[str, list[Member]] = {}
        for role, seat in (("attacker", "attacker_0"), ("defender", "defender_0")):
            own = self.seats[role]["brain"]
            own = {k: v for k, v in own.items() if v not in ({}, None, False)}
            members = scripted(role, env.knobs(seat), own)[:max(1, cfg.initial)]
            self.populations[role] = members
        self.history: list[Iteration] = []
        self.gains: list[dict[str, float]] = []
        self.curves: dict[str, list[dict[str, float]]] = {}

    # -- the payoff matrix through the tournament runner ----------------------------------------------
    def league_spec(self) -> dict[str, Any]:
        scenario = self.cfg.scenario
        path = Path(scenario)
        if path.exists():
            scenario = str(path.resolve())

        def contestant(role: str, m: Member) -> dict[str, Any]:
            seat = self.seats[role]
            c = {"name": m.name, "body": seat["body"], "params": seat["params"], "brain": m.brain}
            if role == "attacker":
                c["tactics"] = seat.get("tactics") or {}
            return c

        return {"name": "psro", "seed": self.cfg.seed, "seeds": self.cfg.episodes,
                "scenarios": [{"scenario": scenario, "name": SCENARIO_LABEL, "overrides": self.cfg.overrides}],
                "attackers": [contestant("attacker", m) for m in self.populations["attacker"]],
                "defenders": [contestant("defender", m) for m in self.populations["defender"]],
                "payoff": {"attacker": "return", "defender": "return"}, "rankings": {"bootstrap": 0}}

    def payoffs(self) -> tuple[np.ndarray, np.ndarray]:
        from extractgym.league import tournament
        from extractgym.league.analysis import collect
        from extractgym.league.runner import RESULTS, ResultsFile

        spec, raw, base, cells = tournament.prepare(self.league_spec(), self.out)
        folder = self.out / "league"
        stats = tournament.play(spec, raw, base, cells, folder, workers=self.cfg.workers)
        if stats.failed:
            rows, _ = ResultsFile(folder / RESULTS).load(repair=False)
            errors = [r.get("error") for r in rows.values() if r.get("status") != "ok"]
            raise RuntimeError(f"{stats.failed} payoff episodes failed, e.g. {errors[:1]}")
        rows, _ = ResultsFile(folder / RESULTS).load(repair=False)
        data = collect(spec, cells, rows)
        m_a = np.nanmean(data.values["attacker payoff"][0], axis=-1)
        m_d = np.nanmean(data.values["defender payoff"][0], axis=-1)
        self.log(f"payoff matrix {m_a.shape[0]} x {m_a.shape[1]}: {stats.ran} new episodes "
                 f"({stats.wall_seconds:.0f} s), {stats.skipped} already played")
        return m_a, m_d

    # -- best responses ---------------------------------------------------------------------------
    def best_response(self, role: str, it: Iteration) -> Member:
        other = "defender" if role == "attacker" else "attacker"
        seat = f"{role}_0"
        weights = it.sigma_d if role == "attacker" else it.sigma_a
        folder = self.out / f"iter_{it.iteration}" / role
        cfg = TrainConfig(self.cfg.scenario, seat, self.cfg.algo, self.cfg.timesteps, self.cfg.n_envs,
                          self.cfg.seed + 1000 * (it.iteration + 1) + (0 if role == "attacker" else 1), folder,
                          self.cfg.vec, eval_seeds=0, params=self.cfg.params, overrides=self.cfg.overrides,
                          progress=self.console is not None, stack=self.cfg.stack)
        members = self.populations[other]
        mix = MixtureOpponents(self.scenario.model_dump(mode="json"), f"{other}_0", f"{other}s",
                               [m.brain for m in members], [float(w) for w in weights])
        shown = ", ".join(f"{m.name} {w:.2f}" for m, w in zip(members, weights, strict=True) if w > 1e-9)
        self.log(f"iteration {it.iteration}: training a {role} best response ({self.cfg.algo}, "
                 f"{self.cfg.timesteps} steps) against {shown}")
        result = train(cfg, opponents=mix, console=self.console)
        name = f"br{it.iteration}"
        self.curves[f"{role} {name}"] = result.episodes
        return Member(name, {"policy": str(result.policy.resolve())}, it.iteration)

    # -- the loop ---------------------------------------------------------------------------------
    def solve(self, iteration: int) -> Iteration:
        m_a, m_d = self.payoffs()
        sa, sd = meta_strategy(m_a, m_d, self.cfg.meta_solver)
        it = Iteration(iteration, [m.name for m in self.populations["attacker"]],
                       [m.name for m in self.populations["defender"]], m_a, m_d, sa, sd)
        self.history.append(it)
        return it

    def run(self) -> list[dict[str, float]]:
        self.out.mkdir(parents=True, exist_ok=True)
        it = self.solve(0)
        for k in range(self.cfg.iterations):
            self.log(f"iteration {k}: attacker value {it.value_a:+.4f}, defender value {it.value_d:+.4f}")
            new_a = self.best_response("attacker", it)
            new_d = self.best_response("defender", it)
            self.populations["attacker"].append(new_a)
            self.populations["defender"].append(new_d)
            nxt = self.solve(k + 1)
            g = gains(it, nxt)
            self.gains.append(g)
            self.log(f"iteration {k}: best-response gains: attacker {g['attacker_gain']:+.4f}, defender "
                     f"{g['defender_gain']:+.4f}, total {g['total_gain']:+.4f}")
            it = nxt
            self.write()
        return self.gains

    # -- output -----------------------------------------------------------------------------------
    def write(self) -> None:
        from extractgym.training.callbacks import write_rows
        from extractgym.training.plots import psro_figure

        final = self.history[-1]
        record = {"scenario": self.scenario.name, "config": {k: (str(v) if isinstance(v, Path) else v)
                                                             for k, v in vars(self.cfg).items()},
                  "populations": {r: [vars(m) for m in ms] for r, ms in self.populations.items()},
                  "iterations": [h.record() for h in self.history], "gains": self.gains}
        (self.out / "psro.json").write_text(json.dumps(record, indent=1, default=float) + "\n")
        if self.gains:
            write_rows(self.out / "gains.csv", self.gains)
        psro_figure(self.out / "psro.png", self.gains, self.curves,
                    f"PSRO on {self.scenario.name} ({self.cfg.algo}, meta-solver {self.cfg.meta_solver})")
        rows = []
        for i, a in enumerate(final.attackers):
            for j, d in enumerate(final.defenders):
                rows.append({"attacker": a, "attacker_weight": float(final.sigma_a[i]), "defender": d,
                             "defender_weight": float(final.sigma_d[j]), "attacker_payoff": float(final.m_a[i, j]),
                             "defender_payoff": float(final.m_d[i, j])})
        write_rows(self.out / "final_payoffs.csv", rows)
        (self.out / "final_payoffs.md").write_text(payoff_table(final))


def payoff_table(it: Iteration) -> str:
    """The meta-strategy's payoff table as Markdown: attacker payoff / defender payoff per pair, with weights."""
    head = "| attacker (weight) \\ defender (weight) | " + " | ".join(
        f"{d} ({w:.2f})" for d, w in zip(it.defenders, it.sigma_d, strict=True)) + " |"
    lines = [f"PSRO iteration {it.iteration}: meta-strategy values: attacker {it.value_a:+.4f}, "
             f"defender {it.value_d:+.4f}. Cells: attacker return / defender return (mean over the paired seeds).",
             "", head, "|" + "---|" * (len(it.defenders) + 1)]
    for i, a in enumerate(it.attackers):
        cells = " | ".join(f"{it.m_a[i, j]:+.4f} / {it.m_d[i, j]:+.4f}" for j in range(len(it.defenders)))
        lines.append(f"| {a} ({it.sigma_a[i]:.2f}) | {cells} |")
    return "\n".join(lines) + "\n"


class MixtureOpponents:
    """Picklable: given the training env's factory, the brains function of the episode seed, in which the other
    side's seat follows one population member drawn per episode with the meta-strategy's weights."""

    def __init__(self, scenario: dict[str, Any], seat: str, field_name: str, brains: Sequence[Any],
                 weights: Sequence[float]) -> None:
        self.scenario, self.seat, self.field, self.brains, self.weights = scenario, seat, field_name, brains, weights

    def __call__(self, factory: Any) -> Callable[[int | None], dict[str, Any]]:
        from extractgym.scenarios import ScenarioFactory, load_scenario
        from extractgym.training.envs import Opponents

        factories = []
        for brain in self.brains:
            data = json.loads(json.dumps(self.scenario))
            data[self.field][0]["brain"] = brain
            factories.append(ScenarioFactory(load_scenario(data)))
        choices = [lambda seed, f=f: f.brains(seed)[self.seat] for f in factories]
        return Opponents(factory, {self.seat: choices}, {self.seat: self.weights})
