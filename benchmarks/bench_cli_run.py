"""Wall time of ``extractgym run`` (the console script, in a subprocess) vs ``play_episode`` in-process.

* ``import``: a fresh interpreter importing the CLI's modules (``extractgym.scenarios``, the agents, torch):
  the start-up every CLI call pays before its first round.
* ``cli run``: ``.venv/bin/extractgym run SCENARIO --out TMP`` end to end (start-up, victim from the disk
  cache, the episode, the table, ``summary.json``); ``summary.json``'s own ``wall_seconds`` is reported too.
* ``in-process``: ``make_env`` + ``play_episode`` in this process: the first call (cold: victim load, first torch
  kernels) and then warm calls, interleaved with the CLI runs.

``--torch-threads N`` (N > 0) pins torch's intra-op threads to N here and sets ``OMP_NUM_THREADS=N`` for the
subprocesses; 0 (default) leaves both as a user gets them (see README on threads).

    .venv/bin/python benchmarks/bench_cli_run.py
    .venv/bin/python benchmarks/bench_cli_run.py --repeats 3 --torch-threads 0
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import machine, median, parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    scenario: str = "digits-basic"
    repeats: int = 3
    torch_threads: int = 0
    """process-wide torch threads here and, via OMP_NUM_THREADS, in the subprocesses; 0 leaves the default"""
    profile_cold: bool = True
    """also profile one cold ``play_episode`` in a fresh interpreter (where the CLI's extra seconds go)"""
    top: int = 14
    json: bool = True


COLD_PROFILE = """
import cProfile, sys
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
env = make_env(sys.argv[1])
prof = cProfile.Profile()
prof.enable()
play_episode(env)
prof.disable()
prof.dump_stats(sys.argv[2])
"""
IMPORT_MACHINERY = ("<frozen importlib", "(<built-in method builtins.exec>)", "(<built-in method builtins.__import__>)",
                    "_handle_fromlist")


def cold_profile(stats_path: str, top: int) -> list[dict]:
    """Heaviest functions by cumulative time of a cold episode, leaving out import machinery and wrappers."""
    from _common import top_functions

    rows = top_functions(stats_path, 400, "cumtime")
    keep = [r for r in rows if not any(m in r["function"] for m in IMPORT_MACHINERY)
            and not r["function"].endswith("(<module>)")]  # module bodies: the imports themselves
    episode = next((r["cumtime_s"] for r in keep if r["function"].endswith("(play_episode)")), None) or 1e-12
    for r in keep:
        r["episode_pct"] = 100 * r["cumtime_s"] / episode
    return keep[:top]


def timed_subprocess(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return dt, proc


PACKAGES = ("torch", "numpy", "sklearn", "scipy", "pandas", "gymnasium", "pettingzoo", "stable_baselines3", "pydantic",
            "yaml", "typer", "rich", "transformers", "matplotlib", "mlxtend")


def import_breakdown(stderr: str) -> list[list]:
    """From ``python -X importtime`` output: each heavy package's cumulative import time (its modules imported
    from outside the package, with everything they pull in) and the innermost extractgym module that imported it."""
    entries = []  # (name, depth, cumulative us); children are listed before their parent
    for line in stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cum, name = line.split("|")
        if cum.strip().isdigit():
            entries.append((name.strip(), (len(name) - len(name.lstrip()) - 1) // 2, int(cum)))
    parent = [next((j for j in range(k + 1, len(entries)) if entries[j][1] < entries[k][1]), None)
              for k in range(len(entries))]

    def within(name: str, pkg: str) -> bool:
        return name == pkg or name.startswith(pkg + ".")

    rows = []
    for pkg in PACKAGES:
        roots = [k for k, e in enumerate(entries) if within(e[0], pkg)
                 and (parent[k] is None or not within(entries[parent[k]][0], pkg))]
        if not roots:
            rows.append([pkg, 0.0, "(not imported)"])
            continue
        k, via = max(roots, key=lambda r: entries[r][2]), "(top level)"
        while (k := parent[k]) is not None:
            if within(entries[k][0], "extractgym"):
                via = entries[k][0]
                break
        rows.append([pkg, sum(entries[r][2] for r in roots) / 1e6, via])
    rows.sort(key=lambda r: r[1], reverse=True)
    return rows


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)
    env = dict(os.environ)
    if args.torch_threads > 0:
        env["OMP_NUM_THREADS"] = str(args.torch_threads)
    bin_dir = Path(sys.executable).parent
    cli = bin_dir / "extractgym"
    if not cli.exists():
        raise SystemExit(f"no console script at {cli}: install the package (pip install -e .) into this venv")
    print(f"bench_cli_run: scenario={args.scenario} repeats={args.repeats} torch_threads={threads} cli={cli}")

    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    def in_process() -> tuple[float, float]:
        t0 = time.perf_counter()
        summary = play_episode(make_env(args.scenario))
        return time.perf_counter() - t0, summary["wall_seconds"]

    cold, _ = in_process()
    imports, runs, runs_inner, warm, warm_inner = [], [], [], [], []
    check = "import extractgym.scenarios, extractgym.agents, extractgym.cli"  # what `run` imports
    for _ in range(args.repeats):
        dt, _ = timed_subprocess([sys.executable, "-c", check], env)
        imports.append(dt)
        with tempfile.TemporaryDirectory() as tmp:
            dt, _ = timed_subprocess([str(cli), "run", args.scenario, "--out", tmp], env)
            runs.append(dt)
            runs_inner.append(json.loads((Path(tmp) / "summary.json").read_text())["wall_seconds"])
        dt, inner = in_process()
        warm.append(dt)
        warm_inner.append(inner)

    _, proc = timed_subprocess([sys.executable, "-X", "importtime", "-c", check], env)
    imp_rows = import_breakdown(proc.stderr)
    cold_rows: list[dict] = []
    if args.profile_cold:
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "cold.prof")
            timed_subprocess([sys.executable, "-c", COLD_PROFILE, args.scenario, path], env)
            cold_rows = cold_profile(path, args.top)

    rows = [["import (fresh interpreter)", len(imports), median(imports), min(imports), max(imports)],
            ["extractgym run (subprocess)", len(runs), median(runs), min(runs), max(runs)],
            ["  its summary wall_seconds", len(runs_inner), median(runs_inner), min(runs_inner), max(runs_inner)],
            ["in-process make_env+play_episode, cold", 1, cold, cold, cold],
            ["in-process make_env+play_episode, warm", len(warm), median(warm), min(warm), max(warm)],
            ["  its summary wall_seconds", len(warm_inner), median(warm_inner), min(warm_inner), max(warm_inner)]]
    print_table("wall time, seconds", ["what", "n", "median s", "min s", "max s"], rows)
    print_table("what the import costs (python -X importtime, one run; cumulative, first importer in extractgym)",
                ["package", "import s", "imported by"], imp_rows)
    if cold_rows:
        print_table("cold play_episode in a fresh interpreter, cProfile: heaviest functions by cumulative time "
                    "(import machinery and module bodies left out)",
                    ["function", "calls", "cumtime s", "% of episode"],
                    [[r["function"], r["calls"], r["cumtime_s"], r["episode_pct"]] for r in cold_rows])
    cli_over = median(runs) - median(warm)
    print(f"\nCLI run / warm in-process episode: {median(runs) / median(warm):.2f}x "
          f"(CLI pays {cli_over:.2f} s more; import alone {median(imports):.2f} s)")

    print("machine:", machine())
    if args.json:
        write_json("bench_cli_run", args, {"import_s": imports, "cli_run_s": runs, "cli_summary_wall_s": runs_inner,
                                           "in_process_cold_s": cold, "in_process_warm_s": warm,
                                           "in_process_summary_wall_s": warm_inner,
                                           "import_breakdown": imp_rows, "cold_profile": cold_rows})


if __name__ == "__main__":
    main()
