"""Per-query latency and memory of each stateful detector as an account's history grows, vs the victim's forward.

For each detector and each history size H (10^2 .. 10^5 earlier queries on the account; for ``blacklight`` and ``piha``
the cache a query is looked up in, the account's or the global one), an account state holding
H queries is built directly (natural pool images with faint noise, so the history is realistic and nothing
bans), then ``detector.update`` -- all a detector does per request besides the ban bookkeeping -- is timed on
fresh batches of new queries (``min_queries // batch`` batches in a row per sample, on one copy of the state),
next to the victim's ``predict_proba`` on the same batches. Reported: µs
per query (median of repeats), the ratio to the victim's µs per query measured in the same repeat, and the
account state's bytes (:func:`extractgym.agents.detection.history.state_nbytes`). A second table gives each detector's growth
from the smallest to the largest history (µs per query at 10^5 / at 10^2, per batch size; issue 14 asks Blacklight for
at most 1.5x) and its state bytes per stored query at the largest history.

Two cap settings (column ``cap``):

* ``=H``: ``max_history = H``, the account is full -- the steady state of any account that lives long enough
  (each new entry evicts the oldest; PRADA's Shapiro-Wilk coefficients are those of the same length every time).
* ``>H`` (PRADA only, ``--growing true``): ``max_history`` above H, the account still growing: every test is on
  a new length, so its coefficients are computed afresh (their cache is cleared before each timed batch).

The library pins numpy's BLAS to ``EXTRACTGYM_TORCH_THREADS`` threads inside the detectors
(:func:`extractgym.agents.detection.distances.blas_threads`), whatever ``OPENBLAS_NUM_THREADS`` says.

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
    detectors: tuple[str, ...] = ("prada", "similarity", "seat", "vae", "ood", "blacklight", "piha")
    histories: tuple[int, ...] = (100, 1000, 10_000, 100_000)
    batches: tuple[int, ...] = (1, 64)
    growing: bool = True
    """also time PRADA on accounts below their cap (fresh Shapiro-Wilk coefficients for every test)"""
    victim: str = "digits-cnn"
    repeats: int = 7
    min_queries: int = 64
    """each timed sample runs batches in a row until it covers this many queries (batch 1: 64 calls)"""
    seed: int = 0
    torch_threads: int = 0
    json: bool = True


def filled_state(body, service: str, h: int, x: np.ndarray):
    """An account state that has seen the ``h`` queries ``x`` (built directly: fast for h = 10^5)."""
    state = body.new_state(service)
    name = type(body).registry_name
    if name in ("similarity", "seat"):
        state.history.append(body.encode(x))
    elif name in ("blacklight", "piha"):  # query caches: the stored features and the answered queries' digests
        from extractgym.agents.detection.hashindex import input_digests

        for i in range(0, h, 5000):
            body.store(state.store, body.features(x[i:i + 5000]))
            state.digests.add(input_digests(x[i:i + 5000]))
    elif name == "prada":
        cls = body.view.victim_proba(service, x).argmax(axis=1)
        rng = np.random.default_rng(0)
        d = np.abs(rng.normal(2.0, 0.5, size=h))
        rows = x.reshape(h, -1).astype(np.float64)
        for i in range(0, h, 1000):  # in chunks, so buffers grow (and keep slack) as an account's would
            state.growing.append(rows[i:i + 1000], cls[i:i + 1000], d[i:i + 1000])
        state.sums = np.stack([np.bincount(cls, minlength=len(state.sums)), np.bincount(cls, d, len(state.sums)),
                               np.bincount(cls, d * d, len(state.sums))], axis=1).astype(np.float64)
        state.dists.extend(d)
    else:  # vae, ood: a few running counters, whatever the history
        for i in range(0, h, 5000):
            body.update(state, x[i:i + 5000], service, body.current(service))
    return state


def human(nbytes: int) -> str:
    return f"{nbytes / 2 ** 20:.1f} MiB" if nbytes >= 2 ** 20 else f"{nbytes / 2 ** 10:.1f} KiB" if nbytes >= 2 ** 10 \
        else f"{nbytes} B"


def measure(args: Args) -> tuple[list[list], list[list], dict[str, dict]]:
    """The latency rows, the growth rows and the JSON results for ``args`` (also used by bench_defences_2022)."""
    from extractgym.agents import DEFENDERS
    from extractgym.agents.defenders.prada import swilk_coefficients
    from extractgym.agents.detection.history import state_nbytes
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
    runs = [(name, full) for name in args.detectors for full in ((True, False) if name == "prada" and args.growing
                                                                  else (True,))]
    for name, full in runs:
        cap_label = "=H" if full else ">H"
        for h in args.histories:
            # thresholds given (no calibration needed to time the per-query work) and low enough that nothing bans
            body = DEFENDERS[name](data=data, max_history=h if full else top + 10_000, threshold=0.5)
            api = PredictionAPI([Service(ServiceConfig("api"), victim)], [body])
            body.bind(DefenderView(api), np.random.default_rng(args.seed))
            base = filled_state(body, "api", h, history_x[:h])
            body.update(base, pool[:1], "api", body.current("api"))  # one real update, so buffers hold their usual growth slack
            nbytes = state_nbytes(base)
            for b in args.batches:
                per_det, per_vic, ratio = [], [], []
                calls = max(1, args.min_queries // b)  # batches timed in a row per sample (small batches are noisy)
                for _ in range(args.repeats):
                    xs = [np.clip(pool[rng.integers(0, len(pool), b)] + rng.normal(0, 0.02, (b, *pool.shape[1:])), 0, 1)
                          .astype(np.float32) for _ in range(calls)]
                    state = copy.deepcopy(base)
                    if not full:
                        swilk_coefficients.cache_clear()
                    t0 = time.perf_counter()
                    for x in xs:
                        victim.predict_proba(x)
                    t1 = time.perf_counter()
                    for x in xs:
                        body.update(state, x, "api", body.current("api"))
                    t2 = time.perf_counter()
                    per_vic.append((t1 - t0) / (b * calls) * 1e6)
                    per_det.append((t2 - t1) / (b * calls) * 1e6)
                    ratio.append((t2 - t1) / (t1 - t0))
                results[f"{name}/cap{cap_label}/H={h}/b={b}"] = {
                    "detector_us": median(per_det), "victim_us": median(per_vic), "ratio": median(ratio),
                    "state_bytes": nbytes}
                rows.append([name, cap_label, h, b, f"{median(per_det):.1f}", f"{median(per_vic):.1f}",
                             f"{median(ratio):.1f}x", human(nbytes)])
            print(f"  {name} cap{cap_label} H={h} done", flush=True)
    growth_rows = []
    lo, hi = min(args.histories), max(args.histories)
    for name, full in runs:
        cap_label = "=H" if full else ">H"
        for b in args.batches:
            small, large = results[f"{name}/cap{cap_label}/H={lo}/b={b}"], results[f"{name}/cap{cap_label}/H={hi}/b={b}"]
            growth = large["detector_us"] / small["detector_us"]
            results[f"{name}/cap{cap_label}/growth/b={b}"] = {"growth": growth,
                                                              "bytes_per_query": large["state_bytes"] / hi}
            growth_rows.append([name, cap_label, b, f"{growth:.2f}x", f"{large['state_bytes'] / hi:.0f}"])
    return rows, growth_rows, results


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    rows, growth_rows, results = measure(args)
    lo, hi = min(args.histories), max(args.histories)
    print_table(f"Per-query detector latency and memory per account vs history size ({args.victim}; "
                f"medians of {args.repeats} repeats)",
                ["detector", "cap", "history", "batch", "detector µs/query", "victim µs/query", "detector/victim",
                 "state/account"], rows)
    print_table(f"Growth of the per-query cost from history {lo} to {hi}, and state bytes per stored query at {hi}",
                ["detector", "cap", "batch", f"µs/query at {hi} / at {lo}", "bytes per stored query"], growth_rows)
    if args.json:
        write_json("bench_detector_latency", args, {"results": results})


if __name__ == "__main__":
    main()
