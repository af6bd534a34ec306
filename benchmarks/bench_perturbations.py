"""Output perturbations in the game: victim utility vs extraction accuracy of soft-label and label-only attackers.

The shape of seed 000 Table 5 / App. C Table 8 and seed 002 Table 7: one row per perturbation and strength, with
the victim's utility under it and the accuracy of the models extracted through it. Each episode is built as a
scenario dict (``make_env``) and played with the scenario's preset brains (``play_episode``): one service (the
``digits-cnn`` victim, probabilities out), the defence under test with its strength as the preset, benign customers
on the victim's own distribution, and two ``random`` attackers with the same pool and query budget, one training
on the probabilities it buys (``labels: soft``) and one on their arg-max (``labels: hard``, label-only). Columns:

* ``def acc``: accuracy of the defended outputs on the referee's held-out test set (seed 002's "Utility");
* ``agree``: benign customers' top-class agreement between defended and undefended answers;
* ``soft`` / ``hard``: the attackers' accuracy on the same test set (seed 002's "MEA", seed 000's "Attack");
* ``us/q``: the defence's own time per query (its ``shape`` on a batch of ``queries_per_round`` test images),
  and ``x victim``: that time over the victim's forward on the same batch.

Every figure is the mean +- std over ``seeds`` episodes (the seed drives the attackers' pools and surrogates and the
defence's noise; the victim is fixed). The findings the papers report are checked at the end against these rows.

    .venv/bin/python benchmarks/bench_perturbations.py
    .venv/bin/python benchmarks/bench_perturbations.py --seeds 5 --rounds 10 --pool mnist8x8
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from _common import parse_args, print_table, set_torch_threads, write_json

# (row label, registered defender, fixed params, strength parameter, strengths)
DEFENCES: tuple[tuple[str, str, dict[str, Any], str, tuple[float, ...]], ...] = (
    ("none", "none", {}, "", ()),
    ("temperature", "temperature", {}, "temperature", (0.0, 0.5, 5.0)),
    ("gaussian-noise", "gaussian-noise", {}, "sigma", (0.1, 0.2, 0.5)),
    ("label-preserving-noise", "label-preserving-noise", {}, "sigma", (0.1, 0.2, 0.5)),
    ("reverse-sigmoid", "reverse-sigmoid", {}, "beta", (0.1, 0.3, 1.0)),
    ("mad", "mad", {}, "epsilon", (0.1, 0.5, 0.9)),
    ("mad-argmax", "mad", {"oracle": "argmax"}, "epsilon", (0.5, 1.0, 2.0)),
    ("adaptive-misinformation", "adaptive-misinformation", {}, "tau", (0.5, 0.9, 0.99)),
)


@dataclass
class Args:
    defences: tuple[str, ...] = tuple(d[0] for d in DEFENCES)
    victim: str = "digits-cnn"
    pool: str = "digits"
    """the attackers' data (``mnist8x8``: a shifted domain, where adaptive misinformation is meant to act)"""
    rounds: int = 8
    queries_per_round: int = 40
    seeds: int = 3
    """episodes per row (seeds 0..seeds-1)"""
    customers: int = 4
    benign_queries: int = 10
    torch_threads: int = 0
    json: bool = True


def scenario(args: Args, body: str, params: dict[str, Any], data: str) -> dict[str, Any]:
    """One episode's scenario: the victim behind ``body`` (strength preset in ``params``), both attackers, benign
    customers on the victim's dataset ``data``."""
    attacker = {"body": "random", "budget": {"queries": args.rounds * args.queries_per_round}}
    return {
        "name": f"perturbation-{body}",
        "rounds": args.rounds,
        "services": [{"name": "api", "victim": args.victim}],
        "attackers": [{**attacker, "params": {"pool": args.pool, "queries_per_round": args.queries_per_round,
                                              "labels": labels}} for labels in ("soft", "hard")],
        "defenders": [{"body": body, "params": params}],
        "benign": [{"dataset": data, "split": "pool", "customers": args.customers,
                    "queries_per_round": args.benign_queries}],
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values: list[float]) -> str:
    m, s = mean_std(values)
    return f"{m:.3f} +- {s:.3f}"


def shape_cost(body_name: str, params: dict[str, Any], args: Args, data: str) -> tuple[float, float]:
    """``(defence us/query, victim us/query)`` on one batch of test images, best of 5, after a warm-up call."""
    import numpy as np

    from extractgym.agents.registry import DEFENDERS, build
    from extractgym.envs.api import DefenderView, PredictionAPI, Service, ServiceConfig
    from extractgym.envs.protocols import preset_values
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import load_victim

    victim = load_victim(args.victim)
    api = PredictionAPI([Service(ServiceConfig("api"), victim)])
    body = build(DEFENDERS, "defender", body_name, params)
    body.bind(DefenderView(api), np.random.default_rng(0))
    x = get_dataset(data).x_test[:args.queries_per_round]
    probs = victim.predict_proba(x)
    body.shape(probs, None, x, preset_values(body.knobs))

    def best(f) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        return 1e6 * min(times) / len(x)

    return best(lambda: body.shape(probs, None, x, preset_values(body.knobs))), best(lambda: victim.predict_proba(x))


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode
    from extractgym.victims.zoo import victim_dataset

    data = victim_dataset(args.victim)
    known = {d[0]: d for d in DEFENCES}
    unknown = [d for d in args.defences if d not in known]
    if unknown:
        raise SystemExit(f"unknown defence(s) {unknown}; known: {', '.join(known)}")
    print(f"bench_perturbations: victim={args.victim} pool={args.pool} rounds={args.rounds} "
          f"queries={args.rounds * args.queries_per_round} per attacker, seeds={args.seeds}")

    results: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for label in args.defences:
        _, body, fixed, knob, strengths = known[label]
        for strength in strengths or (None,):
            params = {**fixed, **({knob: strength} if knob else {})}
            env = make_env(scenario(args, body, params, data))
            runs = [play_episode(env, seed=s) for s in range(args.seeds)]
            cost, victim_cost = shape_cost(body, params, args, data)
            row = {"defence": label, "strength": f"{knob}={strength:g}" if knob else "-", "params": params,
                   "victim_accuracy": runs[0]["victim_accuracy"],
                   "defended_accuracy": [r["defended_accuracy"] for r in runs],
                   "agreement": [r["utility"] for r in runs],
                   "soft": [r["attackers"]["attacker_0"]["accuracy"] for r in runs],
                   "hard": [r["attackers"]["attacker_1"]["accuracy"] for r in runs],
                   "soft_fidelity": [r["attackers"]["attacker_0"]["fidelity"] for r in runs],
                   "hard_fidelity": [r["attackers"]["attacker_1"]["fidelity"] for r in runs],
                   "us_per_query": cost, "victim_us_per_query": victim_cost}
            results.append(row)
            print(f"  {label:24s} {row['strength']:16s} def acc {pm(row['defended_accuracy'])}  "
                  f"soft {pm(row['soft'])}  hard {pm(row['hard'])}  ({time.perf_counter() - t_start:.0f} s)")

    victim_acc = results[0]["victim_accuracy"]
    print_table(f"victim utility vs extraction accuracy (mean +- std over {args.seeds} seeds; undefended victim "
                f"accuracy {victim_acc:.3f}; {args.rounds * args.queries_per_round} queries per attacker, "
                f"pool {args.pool})",
                ["defence", "strength", "def acc", "agree", "soft", "hard", "us/q", "x victim"],
                [[r["defence"], r["strength"], pm(r["defended_accuracy"]), pm(r["agreement"]), pm(r["soft"]),
                  pm(r["hard"]), r["us_per_query"], r["us_per_query"] / max(r["victim_us_per_query"], 1e-9)]
                 for r in results])
    findings = check_findings(results)
    for line in findings:
        print(line)
    if args.json:
        write_json("bench_perturbations", args, {"rows": results, "findings": findings,
                                                 "wall_seconds": time.perf_counter() - t_start})


def check_findings(results: list[dict[str, Any]]) -> list[str]:
    """The published findings, checked on the rows' means as changes from the undefended row (accuracy points)."""
    base = next((r for r in results if r["defence"] == "none"), None)
    if base is None:
        return ["(no 'none' row: the findings need the undefended baseline)"]
    mean = statistics.fmean
    for r in results:
        r["change"] = {k: mean(r[col]) - mean(base[col])
                       for k, col in (("victim", "defended_accuracy"), ("soft", "soft"), ("hard", "hard"))}

    def changes(r: dict[str, Any]) -> str:
        c = r["change"]
        return (f"    {r['defence']:24s} {r['strength']:14s} victim {100 * c['victim']:+5.1f}  soft attacker "
                f"{100 * c['soft']:+5.1f}  label-only attacker {100 * c['hard']:+5.1f}")

    lines = ["", "findings (changes from the undefended row in accuracy points, means over seeds):"]
    rows = [r for r in results if r["defence"] == "reverse-sigmoid"]
    if rows:
        lines.append("* reverse sigmoid stops attackers that train on probabilities but barely touches label-only ones "
                     "(holds: the soft attacker loses over 2 pts and over twice what the label-only one loses)")
        for r in rows:
            c = r["change"]
            holds = -c["soft"] > max(2 * -c["hard"], 0.02)
            lines.append(changes(r) + ("  -> holds" if holds else "  -> does not hold"))
    rows = [r for r in results if r["defence"] == "gaussian-noise"]
    if rows:
        lines.append("* noise large enough to hurt the attacker hurts the victim's utility more (seed 000 Table 5, "
                     "seed 002 Table 7; checked where an attacker loses over 1 pt)")
        for r in rows:
            c = r["change"]
            hurt = -min(c["soft"], c["hard"])
            verdict = ("attackers not hurt" if hurt <= 0.01
                       else "holds" if -c["victim"] > hurt else "does not hold")
            lines.append(changes(r) + f"  -> {verdict}")
    rows = [r for r in results if r["defence"] == "label-preserving-noise"]
    if rows:
        lines.append("* label-preserving noise keeps the victim's utility and the label-only attacker's accuracy "
                     "(seed 000 App. C, Table 8: between hard and soft labels); only the soft attacker can lose")
        for r in rows:
            c = r["change"]
            holds = c["victim"] == 0 and abs(c["hard"]) < 0.005
            lines.append(changes(r) + ("  -> holds" if holds else "  -> does not hold"))
    rows = [r for r in results if r["defence"] not in ("none", "reverse-sigmoid", "gaussian-noise",
                                                        "label-preserving-noise")]
    if rows:
        lines.append("* the other perturbations, for comparison")
        lines.extend(changes(r) for r in rows)
    return lines


if __name__ == "__main__":
    main()
