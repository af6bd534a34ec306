"""Stateful detectors in the game: false positives per benign data source, accounts banned, extraction accuracy.

The shape of seed 003 Tables VII-IX (similarity detector) and XIV-XV (VAE detector), for every registered
stateful detector (``prada``, ``similarity``, ``vae``, ``ood``) and ``none`` as the baseline. Each episode puts
one attacker (``random``, and ``jb-top3`` / ``jba-pgd`` when registered) with a query budget and an unlimited
account budget against one detector, with benign customers from several data sources sharing the API: the
victim's own distribution (the ``pool`` split: the detectors tune on the owner's ``train`` split) and the
shifted MNIST-8x8 (``mnist`` for MNIST-size victims). Detectors calibrate themselves at ``bind`` to their
default target FPR (seed 003: 0.01%) on the owner's held-out training data. Printed per detector:

* accounts created / banned and extraction accuracy per attacker (Tables VII, VIII, XIV);
* the false-positive rate per benign data source: benign accounts banned / benign accounts (Tables IX, XV);
* the false-positive rate by account volume, outside the game and on more accounts than the game has: ``streams``
  benign accounts per data source and volume, each sending ``L`` distinct natural images of the source's ``pool``
  split in batches of ``benign_queries``, flagged iff the calibrated threshold would ban it
  (``detector.critical``); ``L`` spans the game's benign volume (``rounds * benign_queries``) up to the
  ``random`` attacker's (the whole digits pool: 539).

    .venv/bin/python benchmarks/bench_detectors.py
    .venv/bin/python benchmarks/bench_detectors.py --victim mnist-cnn --benign mnist --detectors similarity
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from _common import parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    detectors: tuple[str, ...] = ("none", "prada", "similarity", "vae", "ood")
    attackers: tuple[str, ...] = ("random", "jb-top3", "jba-pgd")
    victim: str = "digits-cnn"
    benign: tuple[str, ...] = ("digits", "mnist8x8")
    """benign data sources (each a dataset's ``pool`` split); for MNIST-size victims use ``mnist``"""
    pool: str = ""
    """the attackers' data (default: the victim's dataset)"""
    customers: int = 25
    """benign accounts per data source"""
    benign_queries: int = 10
    """queries per benign account per round"""
    rounds: int = 10
    queries: int = 2000
    """attacker query budget (accounts are unlimited: seed 003 counts the accounts an attack needs)"""
    queries_per_round: int = 200
    volumes: tuple[int, ...] = (100, 150, 300, 539)
    """queries per benign account in the out-of-game FPR table (capped at the source's pool size)"""
    streams: int = 200
    """benign accounts per source and volume in that table"""
    seed: int = 0
    torch_threads: int = 0
    json: bool = True


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    from extractgym.agents import ATTACKERS, DEFENDERS
    from extractgym.agents.registry import parameters
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode
    from extractgym.victims.zoo import victim_dataset

    pool = args.pool or victim_dataset(args.victim)
    attackers = [a for a in args.attackers if a in ATTACKERS]
    for a in args.attackers:
        if a not in ATTACKERS:
            print(f"note: attacker {a!r} is not registered; skipped")
    detectors = [d for d in args.detectors if d in DEFENDERS]
    results: dict[str, dict] = {}
    for det in detectors:
        for att in attackers:
            accepted = parameters(ATTACKERS[att])
            params = {k: v for k, v in {"pool": pool, "queries_per_round": args.queries_per_round}.items() if k in accepted}
            det_params = {"data": victim_dataset(args.victim)} if "data" in parameters(DEFENDERS[det]) else {}
            scenario = {
                "name": f"bench-{det}-{att}", "rounds": args.rounds,
                "services": [{"name": "api", "victim": args.victim}],
                "attackers": [{"body": att, "params": params, "budget": {"queries": args.queries}}],
                "defenders": [{"body": det, "params": det_params}],
                "benign": [{"dataset": b, "split": "pool", "customers": args.customers,
                            "queries_per_round": args.benign_queries} for b in args.benign],
            }
            t0 = time.perf_counter()
            env = make_env(scenario)
            summary = play_episode(env, seed=args.seed)
            per_group = env.game.benign.banned_per_group()
            fpr = {name.split(":")[0]: banned / total for name, (banned, total) in per_group.items()}
            results[f"{det}/{att}"] = {
                "detector": det, "attacker": att, "accounts_created": summary["accounts_created"],
                "accounts_banned": summary["accounts_banned"], "queries": summary["queries"],
                "attacker_accuracy": summary["attacker_accuracy"], "fidelity": summary["fidelity"],
                "victim_accuracy": summary["victim_accuracy"], "fpr": fpr,
                "seconds": time.perf_counter() - t0}
            print(f"  {det:>10} vs {att:<8} done in {time.perf_counter() - t0:.1f} s", flush=True)

    rows = [[r["detector"], r["attacker"], r["accounts_created"], r["accounts_banned"], r["queries"],
             f"{100 * r['attacker_accuracy']:.0f}%", f"{100 * r['fidelity']:.0f}%"] for r in results.values()]
    print_table(f"Detectors vs attackers on {args.victim} (budget {args.queries} queries, accounts unlimited; "
                f"seed 003 Tables VII, VIII, XIV)",
                ["detector", "attacker", "# accounts", "banned", "queries", "ex. acc.", "fidelity"], rows)
    rows = []
    for det in detectors:
        runs = [r for r in results.values() if r["detector"] == det]
        for source in args.benign:
            banned = [r["fpr"].get(source, 0.0) for r in runs]
            rows.append([det, source, args.customers * len(runs), f"{100 * sum(banned) / max(len(banned), 1):.1f}%"])
    print_table("False-positive rate per benign data source (benign accounts banned / accounts, over the episodes "
                "above; seed 003 Tables IX, XV)", ["detector", "benign source", "accounts", "FPR"], rows)
    volume_fpr = fpr_by_volume(args, [d for d in detectors if d != "none"])
    rows = [[det, source, vol, args.streams, f"{100 * fpr:.1f}%"]
            for det, per in volume_fpr.items() for source, by in per.items() for vol, fpr in by.items()]
    print_table(f"False-positive rate by account volume (outside the game: {args.streams} benign accounts per row, "
                f"each sending that many distinct natural images of the source's pool in batches of "
                f"{args.benign_queries}; calibrated thresholds)", ["detector", "benign source", "queries/account",
                                                                   "accounts", "FPR"], rows)
    if args.json:
        write_json("bench_detectors", args, {"results": results, "fpr_by_volume": volume_fpr})


def fpr_by_volume(args: Args, detectors: list[str]) -> dict[str, dict[str, dict[int, float]]]:
    """Per detector, source and volume: the share of ``args.streams`` benign accounts the detector would ban."""
    import numpy as np

    from extractgym.agents import DEFENDERS
    from extractgym.agents.detection.history import tuning_streams
    from extractgym.envs.api import DefenderView, PredictionAPI, Service, ServiceConfig
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import load_victim, victim_dataset

    out: dict[str, dict[str, dict[int, float]]] = {}
    for det in detectors:
        body = DEFENDERS[det](data=victim_dataset(args.victim))
        api = PredictionAPI([Service(ServiceConfig("api"), load_victim(args.victim))], [body])
        body.bind(DefenderView(api), np.random.default_rng(args.seed))  # calibrates as in the game (memoised)
        threshold = body.current("api")
        out[det] = {}
        for source in args.benign:
            x = get_dataset(source).split("pool")[0]
            out[det][source] = {}
            for vol in sorted({min(v, len(x)) for v in args.volumes}):
                streams = tuning_streams(x, args.streams, vol, seed=args.seed + vol)
                crit = np.array([body.critical(s, "api", args.benign_queries) for s in streams])
                flagged = threshold > crit if body.flag_above else threshold < crit
                out[det][source][vol] = float(flagged.mean())
        print(f"  {det:>10} FPR by volume done", flush=True)
    return out


if __name__ == "__main__":
    main()
