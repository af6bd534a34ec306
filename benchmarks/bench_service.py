"""Requests/s and latency of the served API (``extractgym serve``) vs in-process queries, guarded and unguarded.

For each guard (``none``: no defender; ``similarity``: seed 003's similarity detector, with ``ban_pairs`` so high
that nobody is banned, so every request pays the detector's full cost) and each batch size, three paths answer
the same natural digits from the pool, each on a fresh account:

* ``in-process``: ``PredictionAPI.query`` on the game the scenario builds (what an attacker body calls);
* ``books``: ``ServiceServer.predict`` in this process: the same, plus the lock, the SQLite transaction with its
  ledger row and stored batch, ``COMMIT`` and the wait until the log holding it is flushed (group commit: one
  ``fsync`` serves every request committed before it began; one caller here, so one flush per request);
* ``books xN``: the same from N threads of this process at once, each on its own account: the requests that
  commit while a flush runs share the next one (commits per fsync are printed);
* ``http``: a bounded loop of ``clients`` threads, each with its own ``httpx.Client`` (keep-alive), posting to an
  ``extractgym serve`` process on 127.0.0.1 (loopback only): the books plus JSON, HTTP and uvicorn. The server
  process's CPU seconds per request are reported too (``/proc``): what a request costs the server whatever else
  runs on the machine (the clients share its two cores here).

A bare SQLite commit with ``synchronous=FULL`` is timed too: one fsync per request, the floor the server had
before group commit.

Each repeat runs every path for ``requests`` requests (fewer at batch 64), rotating their order, and ratios are
taken within a repeat (median over repeats): queries/s of each path / in-process queries/s. Latency p50/p99 is
per request as the client sees it (``http``) or per call (the others).

    .venv/bin/python benchmarks/bench_service.py
    .venv/bin/python benchmarks/bench_service.py --batches 1 --clients 1 4 --requests 500
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import yaml
from _common import median, parse_args, print_table, quantile, set_torch_threads, write_json


@dataclass
class Args:
    guards: tuple[str, ...] = ("none", "similarity")
    batches: tuple[int, ...] = (1, 64)
    clients: tuple[int, ...] = (1, 8)
    """concurrent HTTP clients (threads with one keep-alive connection each)"""
    requests: int = 300
    """requests per path and repeat at batch 1 (scaled down to at least 40 for larger batches)"""
    repeats: int = 3
    torch_threads: int = 0
    json: bool = True


def scenario(guard: str) -> dict:
    defenders = [] if guard == "none" else [{"body": "similarity", "params": {"ban_pairs": 10**9}}]
    return {"name": f"bench-service-{guard}", "description": "bench_service",
            "services": [{"name": "api", "victim": "digits-cnn"}], "attackers": [{"body": "random"}],
            "defenders": defenders}


def timed(call, items: list) -> tuple[float, list[float]]:
    """(total seconds, per-call seconds) of ``call(item)`` for each item."""
    lat = []
    t0 = time.perf_counter()
    for item in items:
        t = time.perf_counter()
        call(item)
        lat.append(time.perf_counter() - t)
    return time.perf_counter() - t0, lat


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_run(url: str, key: str, batches: list[list], clients: int) -> tuple[float, list[float]]:
    import httpx

    lat: list[float] = []
    lock = threading.Lock()
    shares = [batches[i::clients] for i in range(clients)]

    def client(share: list[list]) -> None:
        with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
            mine = []
            for inputs in share:
                t = time.perf_counter()
                r = c.post("/v1/services/api/predict", json={"inputs": inputs})
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(r.text)
            with lock:
                lat.extend(mine)

    return run_threads([threading.Thread(target=client, args=(s,)) for s in shares]), lat


def run_threads(threads: list[threading.Thread]) -> float:
    """Start ``threads`` together and wait for all; the seconds from the first start to the last end."""
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def books_run(server, batches: list[list], callers: int) -> tuple[float, list[float]]:
    """``callers`` threads calling ``ServiceServer.predict`` at once, each on its own account."""
    lat: list[float] = []
    lock = threading.Lock()
    accounts = [server.open_account("attacker_0", "api")["account"] for _ in range(callers)]

    def caller(acc: str, share: list[list]) -> None:
        mine = []
        for inputs in share:
            t = time.perf_counter()
            server.predict(acc, "attacker_0", "api", inputs)
            mine.append(time.perf_counter() - t)
        with lock:
            lat.extend(mine)

    return run_threads([threading.Thread(target=caller, args=(a, batches[i::callers]))
                        for i, a in enumerate(accounts)]), lat


def commit_latency(folder: Path, n: int = 200) -> list[float]:
    """Seconds per bare SQLite transaction (one small row) in WAL mode with ``synchronous=FULL`` in ``folder``:
    the disk's fsync, the floor under every answered request."""
    import sqlite3

    db = sqlite3.connect(folder / "fsync.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (x BLOB)")
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?)", (b"x" * 300,))
        db.execute("COMMIT")
        lat.append(time.perf_counter() - t)
    db.close()
    return lat


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)

    import httpx

    from extractgym.envs.api import Budget
    from extractgym.scenarios import ScenarioFactory, load_scenario
    from extractgym.serve import ServerConfig, ServiceServer
    from extractgym.serve.launch import in_process
    from extractgym.victims.datasets import get_dataset

    pool = get_dataset("digits").split("pool")[0]
    print(f"bench_service: guards={args.guards} batches={args.batches} clients={args.clients} "
          f"requests={args.requests} repeats={args.repeats} torch_threads={threads}")
    rows, results = [], []
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    fsync_start = commit_latency(tmp)
    for guard in args.guards:
        path = tmp / f"{guard}.yaml"
        path.write_text(yaml.safe_dump(scenario(guard)))
        local = ServiceServer(ServerConfig(str(path), tmp / f"{guard}-local.db"))
        api = ScenarioFactory(load_scenario(str(path))).build(0).api  # the same game, no books
        with in_process([str(path), "--db", str(tmp / f"{guard}.db")], env={"EXTRACTGYM_ADMIN_KEY": "bench-admin-key"},
                        log=tmp / f"{guard}.log") as (url, proc):
            admin = {"X-Admin-Key": "bench-admin-key"}
            owner = httpx.post(url + "/v1/admin/owners", json={"owner": "bench"}, headers=admin).json()["owner_key"]
            api.register_owner("bench", Budget())
            for batch in args.batches:
                n = max(40, args.requests // max(1, batch // 8)) if batch > 1 else args.requests
                inputs = [pool[(i * batch) % (len(pool) - batch):][:batch] for i in range(n)]
                as_lists = [x.tolist() for x in inputs]
                per: dict[str, list[tuple[float, list[float]]]] = {}
                server_cpu: dict[str, list[float]] = {}
                shared: dict[str, list[float]] = {}
                for rep in range(args.repeats):
                    paths = ["in-process", "books", *[f"books x{c}" for c in args.clients if c > 1],
                             *[f"http x{c}" for c in args.clients]]
                    paths = paths[rep % len(paths):] + paths[:rep % len(paths)]
                    for p in paths:
                        if p == "in-process":
                            acc = api.open_account("bench", "api").id
                            run = timed(partial(api.query, "bench", acc), inputs)
                        elif p == "books":
                            acc = local.open_account("attacker_0", "api")["account"]
                            run = timed(partial(local.predict, acc, "attacker_0", "api"), as_lists)
                        elif p.startswith("books x"):  # concurrent callers in this process: flushes shared
                            f0, c0 = local.store.flushes, local.store.committed
                            run = books_run(local, as_lists, int(p.split("x")[1]))
                            commits, flushes = local.store.committed - c0, local.store.flushes - f0
                            shared.setdefault(p, []).append(commits / max(1, flushes))
                        else:
                            key = httpx.post(url + "/v1/accounts", json={"service": "api"},
                                             headers={"X-Owner-Key": owner}).json()["api_key"]
                            c0 = cpu_seconds(proc.pid)
                            run = http_run(url, key, as_lists, int(p.split("x")[1]))
                            server_cpu.setdefault(p, []).append((cpu_seconds(proc.pid) - c0) / n)
                        per.setdefault(p, []).append(run)
                base = [n * batch / total for total, _ in per["in-process"]]
                for p, runs in per.items():
                    qps = [n * batch / total for total, _ in runs]
                    lat = [v for _, lats in runs for v in lats]
                    ratio = median([q / b for q, b in zip(qps, base, strict=True)])
                    cpu = median(server_cpu[p]) * 1000 if p in server_cpu else None
                    if p in shared:
                        print(f"{guard} batch {batch} {p}: {median(shared[p]):.2f} commits per fsync")
                    row = {"guard": guard, "batch": batch, "path": p, "requests_per_s": median(qps) / batch,
                           "queries_per_s": median(qps), "ratio_to_in_process": ratio,
                           "p50_ms": 1000 * quantile(lat, 0.5), "p99_ms": 1000 * quantile(lat, 0.99),
                           "server_cpu_ms_per_request": cpu}
                    results.append(row)
                    rows.append([guard, batch, p, row["requests_per_s"], row["queries_per_s"], ratio,
                                 row["p50_ms"], row["p99_ms"], "-" if cpu is None else f"{cpu:.2f}"])
        local.close()
    fsync = commit_latency(tmp)
    for when, lat in (("start", fsync_start), ("end", fsync)):
        print(f"bare SQLite COMMIT (WAL, synchronous=FULL) at the {when}: p50 {1000 * quantile(lat, 0.5):.2f} ms, "
              f"p99 {1000 * quantile(lat, 0.99):.2f} ms (at most {1 / quantile(lat, 0.5):,.0f} commits/s)")
    print_table("served API vs in-process (queries/s ratios within a repeat, medians)",
                ["guard", "batch", "path", "req/s", "queries/s", "/ in-process", "p50 ms", "p99 ms",
                 "server CPU ms/req"], rows)
    print(f"machine load at the end: {os.getloadavg()[0]:.2f} (2 cores)")
    if args.json:
        write_json("bench_service", args, {"rows": results,
                                           "commit_p50_ms": {"start": 1000 * quantile(fsync_start, 0.5),
                                                             "end": 1000 * quantile(fsync, 0.5)}})


if __name__ == "__main__":
    main()
