"""Active-learning and data-free extraction vs random sampling on the same query budget (seed 003 §III-B/C).

Extraction accuracy (the referee's: the surrogate's accuracy on the victim's held-out test split) by strategy and
budget, mean ± std over seeds, for random sampling (CopyCat / KnockoffNets-random), KnockoffNets adaptive with each
reward (certainty, diversity, loss, all), and ActiveThief's uncertainty, K-center, DFAL and DFAL+K-center, all
drawing from the same unlabelled pool, with the same surrogate, training schedule and number of rounds. A second
table gives each strategy's paired difference to random (same seed, same budget) and on how many seeds it won.
Then DFME (data-free: no pool) at larger budgets, with its queries split into gradient estimation and substitute
training, checked against the API's ledger.

    .venv/bin/python benchmarks/bench_active.py
    .venv/bin/python benchmarks/bench_active.py --datasets digits mnist --seeds 0 1 2 --budgets 100 200 400
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from _common import parse_args, print_table, set_torch_threads, write_json

STRATEGIES = {
    "random": ("random", {}),
    "knockoff-certainty": ("knockoff-adaptive", {"reward": "certainty"}),
    "knockoff-diversity": ("knockoff-adaptive", {"reward": "diversity"}),
    "knockoff-loss": ("knockoff-adaptive", {"reward": "loss"}),
    "knockoff-all": ("knockoff-adaptive", {"reward": "all"}),
    "uncertainty": ("uncertainty", {}),
    "k-center": ("k-center", {}),
    "dfal": ("dfal", {}),
    "dfal-k-center": ("dfal-k-center", {}),
}
VICTIM = {"digits": "digits-cnn", "mnist": "mnist-cnn"}


@dataclass
class Args:
    datasets: tuple[str, ...] = ("digits",)
    """victim and pool: ``digits`` (digits-cnn, 539-sample pool) and/or ``mnist`` (mnist-cnn, 1,500-sample pool)"""
    strategies: tuple[str, ...] = tuple(STRATEGIES)
    budgets: tuple[int, ...] = (100, 200, 400)
    rounds: int = 5
    """rounds per episode: the budget is bought in ``rounds`` equal batches (the first one random for every strategy)"""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    labels: str = "soft"
    dfme_budgets: tuple[int, ...] = (10_000, 40_000)
    """DFME query budgets on digits (0 to skip)"""
    dfme_seeds: tuple[int, ...] = (0, 1, 2)
    torch_threads: int = 1
    json: bool = True


def scenario(dataset: str, body: str, params: dict, budget: int, rounds: int) -> dict:
    return {"name": f"bench-active-{body}", "rounds": rounds,
            "services": [{"name": "api", "victim": VICTIM[dataset]}],
            "attackers": [{"body": body, "params": params, "budget": {"queries": budget}}],
            "defenders": [{"body": "none"}]}


def mean_std(v: list[float]) -> str:
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    print(f"bench_active: datasets={args.datasets} budgets={args.budgets} rounds={args.rounds} seeds={args.seeds} "
          f"labels={args.labels} torch_threads={threads}")
    results: dict = {"active": {}, "dfme": []}
    for ds in args.datasets:
        acc: dict[str, dict[int, list[float]]] = {s: {b: [] for b in args.budgets} for s in args.strategies}
        t0 = time.perf_counter()
        for name in args.strategies:
            body, extra = STRATEGIES[name]
            for b in args.budgets:
                params = {"pool": ds, "queries_per_round": -(-b // args.rounds), "labels": args.labels, **extra}
                for seed in args.seeds:
                    s = play_episode(make_env(scenario(ds, body, params, b, args.rounds)), seed=seed)
                    assert s["queries"] == b, (name, b, s["queries"])
                    acc[name][b].append(s["attacker_accuracy"])
            print(f"  {ds} {name}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
        print_table(f"{ds}: extraction accuracy, mean ± std over {len(args.seeds)} seeds "
                    f"({time.perf_counter() - t0:.0f} s)", ["strategy", *[f"{b} queries" for b in args.budgets]],
                    [[n, *[mean_std(acc[n][b]) for b in args.budgets]] for n in args.strategies])
        if "random" in acc:
            rows = []
            for n in args.strategies:
                if n == "random":
                    continue
                cells = []
                for b in args.budgets:
                    d = [x - r for x, r in zip(acc[n][b], acc["random"][b], strict=True)]
                    cells.append(f"{mean_std(d)} ({sum(x > 0 for x in d)}/{len(d)})")
                rows.append([n, *cells])
            print_table(f"{ds}: paired difference to random (same seed and budget), mean ± std (seeds won)",
                        ["strategy", *[f"{b} queries" for b in args.budgets]], rows)
        results["active"][ds] = acc

    for b in (x for x in args.dfme_budgets if x > 0):
        for seed in args.dfme_seeds:
            env = make_env(scenario("digits", "dfme", {"queries_per_round": -(-b // args.rounds)}, b, args.rounds))
            t0 = time.perf_counter()
            s = play_episode(env, seed=seed)
            att = env.game.attackers["attacker_0"].seat.body
            ledger = sum(e.n for e in env.game.api.ledger if e.owner == "attacker_0")
            results["dfme"].append({"budget": b, "seed": seed, "accuracy": s["attacker_accuracy"],
                                    "initial": s["initial_attacker_accuracy"], "ledger": ledger,
                                    "generator_steps": len(att.generator_step_queries),
                                    **att.query_counts, "seconds": time.perf_counter() - t0})
    if results["dfme"]:
        rows = []
        for b in sorted({r["budget"] for r in results["dfme"]}):
            rs = [r for r in results["dfme"] if r["budget"] == b]
            rows.append([b, mean_std([r["accuracy"] for r in rs]), mean_std([r["initial"] for r in rs]),
                         statistics.mean(r["gradient"] for r in rs), statistics.mean(r["student"] for r in rs),
                         statistics.mean(r["generator_steps"] for r in rs),
                         all(r["ledger"] == r["gradient"] + r["student"] == b for r in rs),
                         statistics.mean(r["seconds"] for r in rs)])
        print_table(f"DFME on digits-cnn (no pool), {len(args.dfme_seeds)} seeds: accuracy and query accounting "
                    "(chance 0.1)", ["budget", "accuracy", "untrained", "gradient q", "substitute q", "G steps",
                                     "ledger == budget", "s/episode"], rows)
    if args.json:
        write_json("bench_active_" + "-".join(args.datasets), args, results)


if __name__ == "__main__":
    main()
