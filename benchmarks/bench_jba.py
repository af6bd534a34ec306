"""Jacobian-based augmentation attacks vs random sampling: seed 003 Tables I-II on digits and MNIST-5k.

Seed 003 §IV-B1 gives every JBA a query budget ``B`` (the victim's training-set size) and a seed set of
``N_seed`` natural samples (1% and 10% of that size), and compares it with random sampling (RS) that spends
``N_seed`` queries (the natural data the JBA starts from, "Baseline" in Tables I-II). We also report RS on the
same budget ``B`` (as many pool samples as the budget buys). Published direction: JBAs beat the baseline when the
seed set is small (up to +6 points at 1%) and the gap shrinks as it grows (+2 at 10%).

Each cell is the referee's extraction accuracy (surrogate on the victim's held-out test split), mean ± std over
``seeds`` episodes of ``rounds`` rounds with hard labels (seed 003's threat model) and the published loop: the
substitute is reinitialised and retrained for ``epochs`` epochs whenever new labels arrive (Algorithm 1). The
last table is issue 3's speed figure: wall time of one whole ``speed_budget``-query JBA campaign on digits.

    .venv/bin/python benchmarks/bench_jba.py
    .venv/bin/python benchmarks/bench_jba.py --victims digits-cnn --seeds 0 1 --attacks jba-pgd jb-top3
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from _common import parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    victims: tuple[str, ...] = ("digits-cnn", "mnist-cnn")
    attacks: tuple[str, ...] = ("jbda", "jb-self", "jb-top3", "jba-pgd", "jba-cw", "jba-bs", "feature-fool")
    seeds: tuple[int, ...] = (0, 1, 2)
    digits_budget: int = 500
    """the digits victim trains on 898 samples; the attacker's digits pool holds 539"""
    digits_seed_sizes: tuple[int, ...] = (10, 90)
    """~1% and ~10% of the victim's training split, as seed 003's 500 and 5,000 of CIFAR-10's 50,000"""
    mnist_budget: int = 1500
    """the MNIST-5k victim trains on 2,500 samples; the attacker's MNIST pool holds 1,500"""
    mnist_seed_sizes: tuple[int, ...] = (25, 250)
    rounds: int = 5
    epochs: int = 30
    surrogate: str = "mlp"
    """substitute architecture for every attacker (``auto`` picks mnist-cnn on MNIST: ~10x slower here)"""
    speed_budget: int = 10_000
    speed_rounds: int = 10
    speed_seed_size: int = 100
    speed_attacks: tuple[str, ...] = ("jba-pgd", "jb-top3", "jbda", "jba-bs", "feature-fool", "jba-cw")
    speed_reinit: tuple[str, ...] = ("jba-pgd",)
    """attacks also timed with the published reinitialise-and-retrain loop (slower: minutes for some)"""
    tables: bool = True
    """false: only the speed figure"""
    torch_threads: int = 0
    json: bool = True


POOL = {"digits-cnn": "digits", "mnist-cnn": "mnist"}


def scenario(victim: str, body: str, budget: int, rounds: int, params: dict) -> dict:
    return {"name": f"bench-jba-{body}", "rounds": rounds,
            "services": [{"name": "api", "victim": victim}],
            "attackers": [{"body": body, "params": {"pool": POOL[victim], "queries_per_round": -(-budget // rounds),
                                                    "labels": "hard", **params},
                           "budget": {"queries": budget}}],
            "defenders": [{"body": "none"}]}


def play(victim: str, body: str, budget: int, rounds: int, seed: int, params: dict) -> dict:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    t = time.perf_counter()
    s = play_episode(make_env(scenario(victim, body, budget, rounds, params)), seed=seed)
    print(f"  {victim} {body} B={budget} seed={seed} {params.get('seed_size', '')}: "
          f"acc {s['attacker_accuracy']:.3f} in {time.perf_counter() - t:.1f} s", flush=True)
    return {"accuracy": s["attacker_accuracy"], "fidelity": s["fidelity"], "queries": s["queries"],
            "seconds": time.perf_counter() - t}


def mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.pstdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * sd:.1f}"


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    results: dict = {"tables": {}, "speed": []}
    for victim in args.victims if args.tables else ():
        budget = args.digits_budget if victim == "digits-cnn" else args.mnist_budget
        sizes = args.digits_seed_sizes if victim == "digits-cnn" else args.mnist_seed_sizes
        common = {"surrogate": args.surrogate, "epochs": args.epochs, "warm_start": False}
        rs_budget = [play(victim, "random", budget, args.rounds, s, common) for s in args.seeds]
        for n_seed in sizes:
            cells: dict[str, list[dict]] = {
                f"RS, {n_seed} queries (seed 003's baseline)": [play(victim, "random", n_seed, 1, s, common)
                                                                for s in args.seeds],
                f"RS, {rs_budget[0]['queries']} queries (same budget)": rs_budget,
            }
            for attack in args.attacks:
                cells[f"{attack}, {budget} queries"] = [
                    play(victim, attack, budget, args.rounds, s, {**common, "seed_size": n_seed}) for s in args.seeds]
            base = statistics.mean(r["accuracy"] for r in next(iter(cells.values())))
            rows = [[name, mean_std([r["accuracy"] for r in runs]),
                     f"{100 * (statistics.mean(r['accuracy'] for r in runs) - base):+.1f}",
                     mean_std([r["fidelity"] for r in runs]), statistics.mean(r["queries"] for r in runs),
                     statistics.mean(r["seconds"] for r in runs)] for name, runs in cells.items()]
            title = (f"{victim}: extraction accuracy (%), N_seed = {n_seed}, JBA budget {budget}, "
                     f"seeds {list(args.seeds)}")
            print_table(title, ["attack", "accuracy", "vs baseline", "fidelity", "queries", "s/episode"], rows)
            results["tables"][f"{victim}/{n_seed}"] = {name: runs for name, runs in cells.items()}

    rows = []
    for attack in args.speed_attacks:
        for warm in (True, False) if attack in args.speed_reinit else (True,):
            params = {"seed_size": args.speed_seed_size, "surrogate": args.surrogate, "epochs": args.epochs,
                      "warm_start": warm}
            r = play("digits-cnn", attack, args.speed_budget, args.speed_rounds, args.seeds[0], params)
            rows.append([attack, "warm start" if warm else "reinit each round", r["queries"], r["seconds"],
                         r["queries"] / r["seconds"], 100 * r["accuracy"]])
            results["speed"].append({"attack": attack, "warm_start": warm, **r})
    print_table(f"digits-cnn: one whole {args.speed_budget}-query JBA campaign ({args.speed_rounds} rounds, "
                f"{args.speed_seed_size} seeds)", ["attack", "substitute", "queries", "wall s", "queries/s",
                                                  "accuracy %"], rows)
    if args.json:
        write_json("bench_jba", args, results)


if __name__ == "__main__":
    main()
