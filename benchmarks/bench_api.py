"""Queries/s of a raw victim forward pass vs the whole prediction-API path, interleaved in one run.

Three paths over the same pre-sliced batches of the victim's ``pool`` split:

* ``raw``:    ``victim.predict_proba(x)``;
* ``api``:    ``PredictionAPI.query`` on one account of an owner with an unlimited budget: account checks,
              validation, rate-limit / budget checks, a stateless defence (screen + shape), the output format,
              the charge after the free quota, the ledger entry (with its blake2b digest of the batch);
* ``client``: ``Client.query`` (what attackers call): ``api`` plus the client's running output statistics.

Each repeat sends ``calls`` batches, each one through every path back to back (rotating which goes first), and
sums each path's time, so load from other processes hits all paths alike; ``calls`` is calibrated so the raw
path's share of a repeat takes about ``block_seconds``. Ratios are computed within a repeat and the median
over repeats is reported (other processes share the 2 cores, so absolute figures drift; ratios much less).
If the API/raw ratio at the largest batch is below ``target`` (or ``--profile always``), the API path is
profiled with cProfile and the heaviest functions are printed with their share of the time.

    .venv/bin/python benchmarks/bench_api.py
    .venv/bin/python benchmarks/bench_api.py --victims digits-cnn --batches 1 64 256 --defence gaussian-noise
"""

from __future__ import annotations

import cProfile
import time
from dataclasses import dataclass

import numpy as np

from _common import callees, machine, median, parse_args, print_table, set_torch_threads, top_functions, write_json


@dataclass
class Args:
    victims: tuple[str, ...] = ("digits-cnn", "mnist-cnn")
    """registered victims to serve (``mnist-cnn`` trains ~15 s the first time, then loads from the cache)"""
    batches: tuple[int, ...] = (1, 64)
    defence: str = "rounding"
    """a registered stateless defender (``rounding``, ``gaussian-noise``, ``top-k``, ``hard-label``, ``none``)"""
    output: str = "probs"
    repeats: int = 7
    block_seconds: float = 0.3
    torch_threads: int = 0
    """process-wide torch intra-op threads; 0 leaves torch's default (the library runs its small models under
    ``EXTRACTGYM_TORCH_THREADS``, default 1, either way: see README)"""
    target: float = 0.8
    profile: str = "auto"
    """auto (only if the API/raw ratio at ``profile_batch`` is below ``target``), always, never"""
    profile_batch: int = 0
    """batch size to profile (0: the largest of ``batches``); the victim with the lowest ratio there is profiled"""
    profile_seconds: float = 2.0
    top: int = 15
    seed: int = 0
    json: bool = True


def build_api(victim, args: Args):
    """One service, one stateless defence bound to a DefenderView, one owner with an unlimited budget."""
    from extractgym.agents.registry import DEFENDERS, build
    from extractgym.envs.api import Budget, Client, DefenderView, PredictionAPI, Service, ServiceConfig

    config = ServiceConfig(name="api", price_per_query=0.01, account_price=1.0, free_quota=20, output=args.output)
    defence = build(DEFENDERS, "defender", args.defence, {})
    api = PredictionAPI([Service(config, victim)], [defence])
    defence.bind(DefenderView(api), np.random.default_rng(args.seed))
    api.register_owner("bench", Budget())
    client = Client(api, "bench")
    account = client.open_account("api")
    return api, client, account


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)

    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import VICTIMS, load_victim

    print(f"bench_api: defence={args.defence} output={args.output} torch_threads={threads} repeats={args.repeats}")
    results: dict[str, dict] = {}
    rows = []
    profile_batch = args.profile_batch or max(args.batches)
    worst_case = None  # (ratio, victim, batch, paths, batches) at profile_batch
    for name in args.victims:
        victim = load_victim(name, args.seed)
        x_pool, _ = get_dataset(VICTIMS[name].dataset).split("pool")
        api, client, account = build_api(victim, args)
        for b in args.batches:
            starts = np.arange(0, len(x_pool) - b + 1, max(b, 1))
            batches = [x_pool[s:s + b] for s in starts]  # the same array objects for every path
            paths = {
                "raw": lambda xb, v=victim: v.predict_proba(xb),
                "api": lambda xb, a=api, acc=account: a.query("bench", acc.id, xb),
                "client": lambda xb, c=client, acc=account: c.query(acc, xb),
            }

            def block(fn, calls: int, batches=batches) -> float:
                t0 = time.perf_counter()
                for i in range(calls):
                    fn(batches[i % len(batches)])
                return time.perf_counter() - t0

            def interleaved(calls: int, order: list[str], batches=batches, paths=paths) -> dict[str, float]:
                """Each batch goes through every path back to back (rotating order): load drift hits all alike."""
                total = dict.fromkeys(order, 0.0)
                for i in range(calls):
                    xb = batches[i % len(batches)]
                    for p in order[i % len(order):] + order[:i % len(order)]:
                        t0 = time.perf_counter()
                        paths[p](xb)
                        total[p] += time.perf_counter() - t0
                return total

            for fn in paths.values():  # warm-up (allocators, torch kernels, caches)
                block(fn, 10)
            calls = 10
            while (dt := block(paths["raw"], calls)) < args.block_seconds / 4:
                calls *= 4
            calls = max(10, int(calls * args.block_seconds / max(dt, 1e-9)))

            qps: dict[str, list[float]] = {p: [] for p in paths}
            ratios: dict[str, list[float]] = {"api": [], "client": []}
            for r in range(args.repeats):
                dt = interleaved(calls, list(paths))
                for p in paths:
                    qps[p].append(calls * b / dt[p])
                ratios["api"].append(dt["raw"] / dt["api"])
                ratios["client"].append(dt["raw"] / dt["client"])
            med = {p: median(v) for p, v in qps.items()}
            rat = {p: median(v) for p, v in ratios.items()}
            us = {p: 1e6 * b / med[p] for p in paths}
            rows.append([name, b, calls, med["raw"], med["api"], med["client"], rat["api"], rat["client"],
                         us["api"] - us["raw"]])
            results[f"{name}/batch{b}"] = {"victim": name, "batch": b, "calls_per_block": calls,
                                           "qps_samples": qps, "ratio_samples": ratios, "qps_median": med,
                                           "ratio_median": rat, "overhead_us_per_call": us["api"] - us["raw"]}
            if b == profile_batch and (worst_case is None or rat["api"] < worst_case[0]):
                worst_case = (rat["api"], name, b, paths, batches)

    print_table("queries/s (median of repeats; ratio = median of per-repeat ratios)",
                ["victim", "batch", "calls/block", "raw q/s", "api q/s", "client q/s", "api/raw", "client/raw",
                 "api overhead us/call"], rows)

    profile_rows = []
    wanted = args.profile == "always" or (args.profile == "auto" and worst_case and worst_case[0] < args.target)
    if worst_case is not None and wanted:
        ratio, name, b, paths, batches = worst_case
        print(f"\nAPI/raw at batch {b} on {name} is {ratio:.3f} (target >= {args.target}): cProfile of the api path, "
              f"{args.profile_seconds:.1f} s of calls (profiler overhead inflates Python-heavy frames)")
        prof = cProfile.Profile()
        t_end = time.perf_counter() + args.profile_seconds
        i = 0
        prof.enable()
        while time.perf_counter() < t_end:
            paths["api"](batches[i % len(batches)])
            i += 1
        prof.disable()
        profile_rows = top_functions(prof, args.top, "tottime")
        print_table(f"api path, top {args.top} functions by own time ({i} calls)",
                    ["function", "calls", "tottime %", "cumtime %"],
                    [[r["function"], r["calls"], r["tottime_pct"], r["cumtime_pct"]] for r in profile_rows])
        total, steps = callees(prof, "envs/api.py", "query")
        print_table("PredictionAPI.query, its direct callees (% of query's cumulative time; victim forward included)",
                    ["function", "calls", "cumtime %", "us/call"],
                    [[r["function"], r["calls"], r["cumtime_pct"], 1e6 * r["cumtime_s"] / max(i, 1)] for r in steps])
        profile_rows = {"calls": i, "query_cumtime_s": total, "by_tottime": profile_rows, "query_callees": steps}
    elif worst_case is not None:
        print(f"\nAPI/raw at batch {profile_batch}: {worst_case[0]:.3f} >= target {args.target} (no profile; "
              f"--profile always to see one)")

    print("machine:", machine())
    if args.json:
        write_json("bench_api", args, {"results": results, "profile": profile_rows})


if __name__ == "__main__":
    main()
