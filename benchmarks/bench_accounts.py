"""The API's per-query cost against the number of accounts (issue 26): flat from 10 to 10^5, and memory per account.

One API per account count, each with the same service (a price, a free quota, a rate limit), identities kept
(every account opened with fresh fingerprints) and the linking defences screening every request
(``metadata-linker``, ``timing-linker``, ``content-linker``; ``--defences`` to change). The victim is a stub (a
softmax of a fixed linear map of the 64 pixels), so what is timed is the API's own path: the account and owner
checks, validation, the rate limit, the query and money budgets, every defence's screen and shape, the output
format, the charge and the ledger entry. Each request goes to a random account among all of them (no locality).

Each repeat sends ``calls`` requests through every API, one request each in turn (rotating which goes first), and
sums each API's time, so load from other processes hits all alike; the figure is the median over repeats of the
per-repeat ratio to the smallest count, and µs per query. Every ``round_calls`` requests a round ends (the defences'
``end_round``, the API's sweep and ``start_round``): its cost is reported apart, per round and per account.
Memory per account (``tracemalloc``, a separate API of ``memory_accounts`` accounts that each sent one request):
the API's books (account, ledger entries, fingerprint) and each defence's state.

    .venv/bin/python benchmarks/bench_accounts.py
    .venv/bin/python benchmarks/bench_accounts.py --accounts 10 1000 100000 --defences none
"""

from __future__ import annotations

import gc
import time
import tracemalloc
from dataclasses import dataclass

import numpy as np
from _common import machine, median, parse_args, print_table, write_json


@dataclass
class Args:
    accounts: tuple[int, ...] = (10, 1000, 100000)
    batch: int = 4
    calls: int = 2000
    """requests per API per repeat"""
    repeats: int = 7
    round_calls: int = 1000
    """requests between two round ends"""
    defences: tuple[str, ...] = ("metadata-linker", "timing-linker", "content-linker")
    memory_accounts: int = 10000
    seed: int = 0
    json: bool = True


class StubVictim:
    """A softmax of a fixed linear map of the pixels of an 8x8 digit: negligible next to the API's path."""

    name = "stub"
    n_classes = 10

    def __init__(self) -> None:
        from extractgym.victims.base import InputSpec

        self.input_spec = InputSpec(kind="image", shape=(1, 8, 8), low=0.0, high=1.0)
        self.w = np.random.default_rng(0).normal(size=(64, 10))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ self.w
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def build(n: int, args: Args):
    """An API with ``n`` accounts of one owner (fresh fingerprints each), the defences bound."""
    from extractgym.agents.registry import DEFENDERS
    from extractgym.agents.registry import build as build_body
    from extractgym.envs.api import Budget, DefenderView, PredictionAPI, Service, ServiceConfig
    from extractgym.envs.identity import Identities, IdentityRequest

    config = ServiceConfig(name="api", price_per_query=0.001, free_quota=5, rate_limit=10**9, output="label",
                           instrument_cost=0.5, proxy_cost=0.2, client_cost=0.1)
    defences = [build_body(DEFENDERS, "defender", d, {}) for d in args.defences if d != "none"]
    api = PredictionAPI([Service(config, StubVictim())], defences, Identities(np.random.default_rng(args.seed)))
    for i, d in enumerate(defences):
        d.bind(DefenderView(api), np.random.default_rng(args.seed + i))
    api.register_owner("campaign", Budget())
    fresh = IdentityRequest(payment=None, network=None, client="unique")
    ids = [api.open_account("campaign", "api", fresh).id for _ in range(n)]
    return api, ids


def end_round(api, round_index: int) -> None:
    for d, knobs in zip(api.defences, api.defence_knobs, strict=True):
        d.end_round(round_index, knobs)
    api.sweep()
    api.start_round(round_index + 1)


def memory(args: Args) -> dict[str, float]:
    """Bytes per account: the API's books, then each defence's state, for accounts that each sent one request."""
    from extractgym.victims.datasets import get_dataset

    x, _ = get_dataset("digits").split("pool")
    out = {}
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    api, ids = build(args.memory_accounts, Args(**{**vars(args), "defences": ("none",)}))
    opened = tracemalloc.get_traced_memory()[0]
    for k, a in enumerate(ids):
        api.query("campaign", a, x[k % len(x)][None], at=(k % 997) / 997)
    queried = tracemalloc.get_traced_memory()[0]
    out["api: account opened (account, open entry, fingerprint)"] = (opened - before) / len(ids)
    out["api: + one request (query entry)"] = (queried - opened) / len(ids)
    del api, ids
    for name in args.defences:
        if name == "none":
            continue
        gc.collect()
        start = tracemalloc.get_traced_memory()[0]
        api, ids = build(args.memory_accounts, Args(**{**vars(args), "defences": (name,)}))
        built = tracemalloc.get_traced_memory()[0]
        for k, a in enumerate(ids):
            api.query("campaign", a, x[k % len(x)][None], at=(k % 997) / 997)
        end_round(api, 0)
        out[f"{name}: state"] = (tracemalloc.get_traced_memory()[0] - built) / len(ids) - (queried - opened) / len(ids)
        del api, ids
        _ = start
    tracemalloc.stop()
    return out


def main() -> None:
    args = parse_args(Args)
    from extractgym.victims.datasets import get_dataset

    x, _ = get_dataset("digits").split("pool")
    rng = np.random.default_rng(args.seed)
    print(f"bench_accounts: defences={','.join(args.defences)} batch={args.batch} calls={args.calls} "
          f"repeats={args.repeats}")
    apis = {}
    for n in args.accounts:
        t0 = time.process_time()
        apis[n] = build(n, args)
        print(f"  {n} accounts opened in {time.process_time() - t0:.1f} CPU s", flush=True)
    counts = list(args.accounts)
    per_query: dict[int, list[float]] = {n: [] for n in counts}
    per_round: dict[int, list[float]] = {n: [] for n in counts}
    rounds = dict.fromkeys(counts, 0)
    for rep in range(args.repeats + 1):  # the first repeat warms up
        # fresh accounts, batches and times every repeat (a schedule replayed round after round is what the
        # timing linker links: two accounts whose requests coincide in every round)
        batches = [x[s:s + args.batch] for s in rng.integers(0, len(x) - args.batch, size=args.calls)]
        times = rng.random(args.calls)
        picks = {n: rng.integers(0, n, size=args.calls) for n in args.accounts}
        spent = dict.fromkeys(counts, 0.0)
        round_spent = dict.fromkeys(counts, 0.0)
        for i in range(args.calls):
            order = counts[i % len(counts):] + counts[:i % len(counts)]
            for n in order:
                api, ids = apis[n]
                t0 = time.perf_counter()
                api.query("campaign", ids[picks[n][i]], batches[i], at=float(times[i]))
                spent[n] += time.perf_counter() - t0
                if (i + 1) % args.round_calls == 0:
                    t0 = time.perf_counter()
                    end_round(api, rounds[n])
                    round_spent[n] += time.perf_counter() - t0
                    rounds[n] += 1
        if rep:
            for n in counts:
                per_query[n].append(1e6 * spent[n] / (args.calls * args.batch))
                per_round[n].append(1e6 * round_spent[n] / max(1, args.calls // args.round_calls))
    base = counts[0]
    ratios = {n: median([q / b for q, b in zip(per_query[n], per_query[base], strict=True)]) for n in counts}
    rows = [[n, median(per_query[n]), ratios[n], median(per_round[n]), median(per_round[n]) / n] for n in counts]
    print_table(f"API path, µs per query (batch {args.batch}; median of {args.repeats} repeats)",
                ["accounts", "µs/query", f"ratio to {base}", "round end µs", "round end µs/account"], rows)
    mem = memory(args)
    print_table(f"memory per account ({args.memory_accounts} accounts, tracemalloc)", ["what", "bytes/account"],
                [[k, v] for k, v in mem.items()])
    print("machine:", machine())
    if args.json:
        write_json("bench_accounts", args, {"per_query_us": per_query, "per_round_us": per_round,
                                            "ratio_to_smallest": ratios, "memory_bytes_per_account": mem})


if __name__ == "__main__":
    main()
