"""Per-query latency of each stateful detector as an account's history grows, vs the victim's own forward pass.

For each detector and each history size H (10^2 .. 10^5 earlier queries on the account), an account state holding
H queries is built directly (natural pool images with faint noise, so the history is realistic and nothing
bans), then ``detector.update`` -- all a detector does per request besides the ban bookkeeping -- is timed on
fresh batches of new queries, interleaved with the victim's ``predict_proba`` on the same batch. Reported: µs
per query (median of repeats) and the ratio to the victim's µs per query measured in the same repeat.
``max_history`` is set above the largest H so that nothing is evicted.

    .venv/bin/python benchmarks/bench_detector_latency.py
    .venv/bin/python benchmarks/bench_detector_latency.py --detectors similarity --batches 1 64 256
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np

from _common import median, parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    detectors: tuple[str, ...] = ("prada", "similarity", "vae", "ood")
    histories: tuple[int, ...] = (100, 1000, 10_000, 100_000)
    batches: tuple[int, ...] = (1, 64)
    victim: str = "digits-cnn"
    repeats: int = 7
    seed: int = 0
    torch_threads: int = 0
    json: bool = True


def filled_state(body, service: str, h: int, x: np.ndarray):
    """An account state that has seen the ``h`` queries ``x`` (built directly: fast for h = 10^5)."""
    from extractgym.agents.detection import History

    state = body.new_state(service)
    name = type(body).registry_name
    if name == "similarity":
        state.history.append(body.encode(x))
    elif name == "prada":
        cls = body.view.victim_proba(service, x).argmax(axis=1)
        rng = np.random.default_rng(0)
        d = np.abs(rng.normal(2.0, 0.5, size=h))
        state.growing = History(body.max_history, state.growing.dim)
        state.growing.append(x.reshape(h, -1).astype(np.float64), cls, d)
        state.sums = np.stack([np.bincount(cls, minlength=len(state.sums)), np.bincount(cls, d, len(state.sums)),
                               np.bincount(cls, d * d, len(state.sums))], axis=1).astype(np.float64)
        state.dists = History(body.max_history, 0)
        state.dists.append(np.empty((h, 0)), values=d)
    else:  # vae, ood: a few running counters, whatever the history
        for i in range(0, h, 5000):
            body.update(state, x[i:i + 5000], service)
    return state


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    from extractgym.agents import DEFENDERS
    from extractgym.envs.api import DefenderView, PredictionAPI, Service, ServiceConfig
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import load_victim, victim_dataset

    victim = load_victim(args.victim)
    data = victim_dataset(args.victim)
    pool = get_dataset(data).split("pool")[0]
    rng = np.random.default_rng(args.seed)
    top = max(args.histories)
    history_x = np.clip(pool[rng.integers(0, len(pool), top)] + rng.normal(0, 0.02, (top, *pool.shape[1:])), 0, 1)
    history_x = history_x.astype(np.float32)
    results: dict[str, dict] = {}
    rows = []
    for name in args.detectors:
        # thresholds given (no calibration needed to time the per-query work); the level keeps nothing banned
        body = DEFENDERS[name](data=data, max_history=top + 10_000, threshold=0.5)
        api = PredictionAPI([Service(ServiceConfig("api"), victim)], [body])
        body.bind(DefenderView(api), np.random.default_rng(args.seed))
        for h in args.histories:
            base = filled_state(body, "api", h, history_x[:h])
            for b in args.batches:
                per_det, per_vic, ratio = [], [], []
                for r in range(args.repeats):
                    x = np.clip(pool[rng.integers(0, len(pool), b)] + rng.normal(0, 0.02, (b, *pool.shape[1:])), 0, 1)
                    x = x.astype(np.float32)
                    state = copy.deepcopy(base)
                    t0 = time.perf_counter()
                    victim.predict_proba(x)
                    t1 = time.perf_counter()
                    body.update(state, x, "api")
                    t2 = time.perf_counter()
                    per_vic.append((t1 - t0) / b * 1e6)
                    per_det.append((t2 - t1) / b * 1e6)
                    ratio.append((t2 - t1) / (t1 - t0))
                results[f"{name}/H={h}/b={b}"] = {"detector_us": median(per_det), "victim_us": median(per_vic),
                                                   "ratio": median(ratio)}
                rows.append([name, h, b, f"{median(per_det):.1f}", f"{median(per_vic):.1f}", f"{median(ratio):.1f}x"])
            print(f"  {name} H={h} done", flush=True)
    print_table(f"Per-query detector latency vs history size ({args.victim}; medians of {args.repeats} repeats)",
                ["detector", "history", "batch", "detector µs/query", "victim µs/query", "detector/victim"], rows)
    if args.json:
        write_json("bench_detector_latency", args, {"results": results})


if __name__ == "__main__":
    main()
