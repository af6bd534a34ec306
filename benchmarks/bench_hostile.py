"""An honest client's latency while hostile clients flood the served API (``extractgym serve``).

An honest client sends single-query predict requests back to back, first alone (``unloaded``), then while
``attackers`` processes each send, in a loop, a 16 MiB body of 4 million one-element rows without a key
(``unauthenticated``), or with a valid account key (``oversized``: counted while it streams and refused), each on a
new connection, as fast as the server lets them. The server runs as its own process on 127.0.0.1. Reported: the
honest client's p50/p99 latency per phase and its ratio to the unloaded p99 (within one run), the hostile requests
answered, and the server's resident memory before and after.

    .venv/bin/python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from _common import parse_args, print_table, quantile, write_json


@dataclass
class Args:
    seconds: float = 20.0
    """length of each phase"""
    attackers: int = 1
    """hostile client processes (each its own process: a thread would share the honest client's interpreter)"""
    body_mb: int = 16
    json: bool = True


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def hostile(url: str, body: bytes, headers: dict[str, str], stop: Any, counts: Any) -> None:
    host, port = url.removeprefix("http://").split(":")
    head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, "Content-Type": "application/json",
                                                 "Content-Length": str(len(body)), **headers}.items())
    request = f"POST /v1/services/api/predict HTTP/1.1\r\n{head}\r\n".encode()
    while not stop.is_set():
        try:
            with socket.create_connection((host, int(port)), timeout=30) as s:
                s.sendall(request)
                try:
                    s.sendall(body)
                except OSError:
                    pass  # the server answered and closed without reading it
                status = s.recv(64).split(b" ")[1:2]
                key = status[0].decode() if status else "none"
        except OSError:
            key = "error"
        with counts.get_lock():
            counts[{"401": 0, "413": 1}.get(key, 2)] += 1


def main() -> None:
    args = parse_args(Args)
    import httpx

    from extractgym.serve.launch import in_process
    from extractgym.victims.datasets import get_dataset

    tmp = Path(tempfile.mkdtemp(prefix="bench-hostile-"))
    path = tmp / "hostile.yaml"
    path.write_text(yaml.safe_dump({"name": "bench-hostile", "description": "bench_hostile",
                                    "services": [{"name": "api", "victim": "digits-cnn"}],
                                    "attackers": [{"body": "random"}]}))
    x = get_dataset("digits").split("pool")[0][:1].tolist()
    rows = b"[0]," * (args.body_mb * 2**20 // 4 - 8)
    body = b'{"inputs": [' + rows + b"[0]]}"
    results, table = {}, []
    with in_process([str(path), "--db", str(tmp / "books.db")], env={"EXTRACTGYM_ADMIN_KEY": "bench-admin-key"},
                    log=tmp / "serve.log") as (url, proc):
        admin = {"X-Admin-Key": "bench-admin-key"}
        owner = httpx.post(url + "/v1/admin/owners", json={"owner": "honest"}, headers=admin).json()["owner_key"]
        key = httpx.post(url + "/v1/accounts", json={"service": "api"},
                         headers={"X-Owner-Key": owner}).json()["api_key"]
        rss0 = rss_mib(proc.pid)
        for phase, headers in (("unloaded", None), ("unauthenticated", {}), ("oversized", {"X-API-Key": key})):
            stop, counts = mp.Event(), mp.Array("i", 3)
            threads = [mp.Process(target=hostile, args=(url, body, headers, stop, counts), daemon=True)
                       for _ in range(args.attackers if headers is not None else 0)]
            for t in threads:
                t.start()
            lat = []
            with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as c:
                end = time.monotonic() + args.seconds
                while time.monotonic() < end:
                    t = time.perf_counter()
                    r = c.post("/v1/services/api/predict", json={"inputs": x})
                    lat.append(time.perf_counter() - t)
                    assert r.status_code == 200, r.text
            stop.set()
            for t in threads:
                t.join()
            hostile_counts = {k: v for k, v in zip(("401", "413", "other"), counts[:], strict=True) if v}
            results[phase] = {"requests": len(lat), "p50_ms": 1000 * quantile(lat, 0.5),
                              "p99_ms": 1000 * quantile(lat, 0.99), "hostile": hostile_counts,
                              "rss_mib": rss_mib(proc.pid)}
        base = results["unloaded"]["p99_ms"]
        for phase, r in results.items():
            r["p99_ratio"] = r["p99_ms"] / base
            table.append([phase, r["requests"], r["p50_ms"], r["p99_ms"], r["p99_ratio"],
                          ", ".join(f"{k}: {v}" for k, v in sorted(r["hostile"].items())) or "-", r["rss_mib"]])
    print(f"server memory at the start: {rss0:.0f} MiB; machine load: {os.getloadavg()[0]:.2f}")
    print_table(f"honest single-query client vs {args.attackers} hostile client(s) sending {args.body_mb} MiB bodies",
                ["phase", "honest requests", "p50 ms", "p99 ms", "p99 / unloaded", "hostile answers", "RSS MiB"],
                table)
    if args.json:
        write_json("bench_hostile", args, {"phases": results, "rss_start_mib": rss0})


if __name__ == "__main__":
    main()
