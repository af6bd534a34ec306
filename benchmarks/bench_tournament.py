"""Tournament throughput: cells per minute by backend, and the runner's overhead per cell against a bare episode.

The first ``--cells`` cells of a league (spec order) are played, each way in a fresh output folder:

* ``bare``: ``make_env(cell.config)`` + ``play_episode(env, seed=cell.seed)`` in this process, after one untimed
  warm-up cell (victims loaded, first torch kernels): the episodes themselves.
* ``runner, in-process``: ``run_league(..., workers=0)``: the same episodes through the runner (curve recording,
  the row, JSON, fsync per row). Its ratio to ``bare`` is the runner's own overhead per cell (target <= 1.1).
* ``local, N workers``: the process pool ('spawn'): includes starting the workers (interpreter, torch and the
  victims per worker), amortised over the cells.
* ``ray, N workers``: the same cells as Ray tasks on a local ``ray.init()`` (skipped without Ray), including
  Ray's start-up.

``bare`` and the in-process runner alternate ``--repeats`` times (medians), so machine load hits both alike.

    .venv/bin/python benchmarks/bench_tournament.py
    .venv/bin/python benchmarks/bench_tournament.py --cells 96 --workers 1 2 --ray true
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import median, parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    league: str = "digits-league"
    cells: int = 48
    repeats: int = 3
    workers: tuple[int, ...] = (1, 2)
    ray: bool = True
    torch_threads: int = 1
    json: bool = True


def bare(cells: list) -> float:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    start = time.perf_counter()
    for c in cells:
        play_episode(make_env(c.config), seed=c.seed)
    return time.perf_counter() - start


def through_runner(cells: list, workers: int, backend: str = "local") -> float:
    from extractgym.league.runner import run_league

    out = Path(tempfile.mkdtemp(prefix="bench-tournament-"))
    try:
        stats = run_league(cells, out, workers=workers, backend=backend)
        assert stats.ran == len(cells) and stats.failed == 0, stats
        return stats.wall_seconds
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    from extractgym.league.tournament import prepare

    spec, _, _, all_cells = prepare(args.league)
    cells = sorted(all_cells, key=lambda c: c.order)[: args.cells]
    bare(cells[:1])                                                        # warm-up, untimed
    bare_s, inline_s = [], []
    for _ in range(args.repeats):
        bare_s.append(bare(cells))
        inline_s.append(through_runner(cells, 0))
    n = len(cells)
    base = median(bare_s)
    rows = [["bare play_episode", n, base, 60 * n / base, base / n, 1.0],
            ["runner, in-process", n, median(inline_s), 60 * n / median(inline_s), median(inline_s) / n,
             median(inline_s) / base]]
    for w in args.workers:
        t = through_runner(cells, w)
        rows.append([f"local, {w} worker(s)", n, t, 60 * n / t, t / n, t / base])
    if args.ray:
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray not installed: pip install -e '.[ray]' (skipped)")
        else:
            w = max(args.workers)
            t = through_runner(cells, w, "ray")
            rows.append([f"ray, {w} worker(s)", n, t, 60 * n / t, t / n, t / base])
    print_table(f"{args.league}: first {n} cells ({spec.scenarios[0].label}), wall time incl. start-up",
                ["mode", "cells", "wall s", "cells/min", "s/cell", "ratio to bare"], rows)
    one = next((r for r in rows if r[0] == "local, 1 worker(s)"), None)
    if one is not None:
        print(f"\nstart-up of a 1-worker pool (spawn, imports, victims, first kernels): "
              f"{one[2] - median(inline_s):.1f} s, paid once per league run")
    print(f"runner overhead per cell (in-process runner / bare, median of {args.repeats}): "
          f"{median(inline_s) / base:.3f}  (bare runs: {', '.join(f'{t:.1f}' for t in bare_s)} s; "
          f"runner: {', '.join(f'{t:.1f}' for t in inline_s)} s)")
    if args.json:
        write_json("bench_tournament", args, {"rows": [dict(zip(["mode", "cells", "wall_s", "cells_per_min",
                                                                  "s_per_cell", "ratio_to_bare"], r))
                                                        for r in rows],
                                               "bare_runs_s": bare_s, "runner_inline_runs_s": inline_s})


if __name__ == "__main__":
    main()
