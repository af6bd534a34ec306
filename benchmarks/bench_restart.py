"""Restart time of a served scenario (``extractgym serve``) vs the number of stored queries.

For each size N, a database of N (+ ``tail``) stored query requests (batch 1, one account) is made through the
server's own code path (``PredictionAPI.query`` writing entries and batches into the books, a snapshot every
``snapshot_every`` entries as the running server takes them), with the victim's forward pass stubbed out while
filling only (the rows are the same; filling 10^6 requests for real would take the forward pass 10^6 times). Then
the server is constructed on that database ``repeats`` times, as a restart does (build the game, load the newest
snapshot, replay the entries after it), and its wall and CPU seconds (of the restarting thread: the ledger's
digest is hashed by a thread of its own, after the server is up) are reported; ``--full-replay-upto`` also times
the restart without snapshots (``snapshot_every=0``: every entry replayed) for the sizes up to it.

    .venv/bin/python benchmarks/bench_restart.py
    .venv/bin/python benchmarks/bench_restart.py --sizes 10000 100000 --guard similarity
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _common import median, parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    guard: str = "none"
    """none: no defender; similarity: seed 003's similarity detector (ban_pairs so high that nobody is banned)"""
    snapshot_every: int = 5000
    tail: int = 2500
    """requests stored after the newest snapshot (what a restart replays; at most snapshot_every - 1)"""
    repeats: int = 3
    full_replay_upto: int = 10_000
    torch_threads: int = 1
    json: bool = True


def scenario(guard: str) -> dict:
    defenders = [] if guard == "none" else [{"body": "similarity", "params": {"ban_pairs": 10**9}}]
    return {"name": f"bench-restart-{guard}", "description": "bench_restart",
            "services": [{"name": "api", "victim": "digits-cnn"}], "attackers": [{"body": "random"}],
            "defenders": defenders}


def fill(db: Path, guard: str, n: int, every: int, tail: int) -> None:
    from extractgym.serve import ServerConfig, ServiceServer
    from extractgym.victims.datasets import get_dataset

    server = ServiceServer(ServerConfig(scenario(guard), db, snapshot_every=every))
    x = get_dataset("digits").split("pool")[0][:1]
    acc = server.open_account("attacker_0", "api")["account"]
    victim = server.api.services["api"].victim
    row, real = victim.predict_proba(x), type(victim).predict_proba
    type(victim).predict_proba = lambda self, q: np.repeat(row, len(q), axis=0)  # filling only
    done, chunk = 0, every or 5000
    with server.lock:
        while done < n + tail:
            with server.store.transaction():
                for _ in range(min(chunk, n + tail - done)):
                    server.api.query("attacker_0", acc, x)
            done = min(n + tail, done + chunk)
            server.requests[acc] = done
            if every and done <= n and len(server.api.ledger) - server.snapshot_at >= every:
                server._snapshot()
    type(victim).predict_proba = real  # restarts use the real forward pass
    assert not every or server.shared is not None, "snapshots failed"
    server.store.durable()
    server.close()


def restart(db: Path, guard: str, every: int) -> tuple[float, float, int]:
    from extractgym.serve import ServerConfig, ServiceServer

    t0, c0 = time.perf_counter(), time.thread_time()  # this thread's CPU: the ledger's digest thread runs apart
    server = ServiceServer(ServerConfig(scenario(guard), db, snapshot_every=every))
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    replayed = server.replayed
    server.close()
    return wall, cpu, replayed


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-restart-"))
    rows, results = [], []
    restart(tmp / "warm.db", args.guard, args.snapshot_every)  # victims and encoders loaded once in this process
    for n in args.sizes:
        db = tmp / f"{n}.db"
        t0 = time.perf_counter()
        fill(db, args.guard, n, args.snapshot_every, args.tail)
        print(f"filled {n:,} stored queries in {time.perf_counter() - t0:.1f} s ({db.stat().st_size / 2**20:.0f} MiB)")
        modes = [("snapshot", args.snapshot_every)] + ([("full replay", 0)] if n <= args.full_replay_upto else [])
        for mode, every in modes:
            copy = tmp / f"{n}-{mode}.db"
            runs = []
            for _ in range(args.repeats):
                shutil.copy(db, copy)  # each restart from the same books (a restart may write a snapshot)
                runs.append(restart(copy, args.guard, every))
            wall, cpu = median([r[0] for r in runs]), median([r[1] for r in runs])
            results.append({"stored_queries": n, "mode": mode, "wall_s": wall, "cpu_s": cpu, "replayed": runs[0][2]})
            rows.append([n, mode, runs[0][2], wall, cpu])
        db.unlink()
    base = next(r for r in results if r["mode"] == "snapshot")
    for r in results:
        r["cpu_ratio_to_smallest"] = r["cpu_s"] / base["cpu_s"]
    print_table(f"restart of a served scenario ({args.guard} guard; medians of {args.repeats})",
                ["stored queries", "mode", "entries replayed", "wall s", "CPU s"], rows)
    for r in results:
        print(f"{r['stored_queries']:>9,} {r['mode']:<12} CPU {r['cpu_ratio_to_smallest']:.2f}x the smallest "
              f"snapshot restart")
    if args.json:
        write_json(f"bench_restart_{args.guard}", args, {"rows": results})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
