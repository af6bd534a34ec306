"""Sybil campaigns against account linking (issue 26): what each hygiene choice buys, paired over seeds; the
per-account detectors on a 10^4-account campaign; and the scale episode (10^4 campaign accounts, 10^3 customers,
10^6 queries).

Part 1 (``--grid``): the ``sybil-campaign`` scenario, each campaign (fingerprint reuse, pacing, cover) against each
defence (none, one linker, all three), the same seeds for every cell. Per cell: campaign accounts opened and banned
(by the linkers' cluster bans), queries answered, money spent (of which on fresh fingerprints), extraction accuracy,
the attacker's return; customers banned or throttled (false positives per customer) and the benign utility. Then
the paired differences the issue asks about, mean ± standard error over seeds.

Part 2 (``--per-account``): a campaign of ``per_account_accounts`` accounts, each retired after 25 answered queries
(a handful per account), against the per-account detectors of seed 003 and Li et al. (``similarity``, ``prada``,
``blacklight`` with its per-account index) and against the metadata linker: the share of campaign accounts each
bans.

Part 3 (``--rl``): the value of each seat's choices in ``rl-sybil-campaign`` (the numbers its header states): the
attacker's return under constant hygiene settings, paired against the preset over the seeds, and each linker's
return under its threshold settings against the preset campaign and a fresh-fingerprint one.

Part 4 (``--scale``): one episode with 10^4 campaign accounts and 10^3 customers, 10^6 queries in all, the three
linkers on: CPU seconds, peak memory (``ru_maxrss``), queries, accounts.

    .venv/bin/python benchmarks/bench_sybil.py                                  # parts 1 and 2 (~30 CPU min)
    .venv/bin/python benchmarks/bench_sybil.py --grid false --per-account false --scale true
    .venv/bin/python benchmarks/bench_sybil.py --seeds 0 1 --campaigns reuse fresh --defences none metadata
"""

from __future__ import annotations

import copy
import math
import resource
import time
from dataclasses import dataclass

import numpy as np
from _common import machine, parse_args, print_table, write_json

CAMPAIGNS = {  # the sybil tactic's hygiene presets
    "reuse": {"payment_reuse": 100, "proxy_reuse": 100, "pacing": "burst", "cover": 0.0},
    "fresh": {"payment_reuse": 1, "proxy_reuse": 1, "pacing": "burst", "cover": 0.0},
    # a human-paced account sends at most 20 queries a round: twice the live accounts keep the volume (and cover
    # of half the traffic twice as many again)
    "fresh-human": {"payment_reuse": 1, "proxy_reuse": 1, "pacing": "human", "cover": 0.0, "accounts": 100},
    "fresh-human-cover": {"payment_reuse": 1, "proxy_reuse": 1, "pacing": "human", "cover": 0.5, "accounts": 200},
    # what customers send: the digits pool (in-domain, 539 images, then passes shifted by a pixel, no noise)
    "fresh-human-natural": {"payment_reuse": 1, "proxy_reuse": 1, "pacing": "human", "cover": 0.0, "accounts": 100,
                            "params": {"pool": "digits", "recycle": 0.0}},
}
DEFENCES = {
    "none": [],
    "metadata": [{"body": "metadata-linker"}],
    "timing": [{"body": "timing-linker"}],
    "content": [{"body": "content-linker"}],
    "all": [{"body": "metadata-linker"}, {"body": "timing-linker"}, {"body": "content-linker"}],
    "similarity": [{"body": "similarity"}],
    "prada": [{"body": "prada"}],
    "blacklight": [{"body": "blacklight", "params": {"scope": "account"}}],
}


@dataclass
class Args:
    scenario: str = "sybil-campaign"
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    campaigns: tuple[str, ...] = ("reuse", "fresh", "fresh-human", "fresh-human-cover", "fresh-human-natural")
    defences: tuple[str, ...] = ("none", "metadata", "timing", "content")
    cells: tuple[str, ...] = ()
    """only these ``campaign/defence`` cells of the grid (all when empty)"""
    grid: bool = True
    per_account: bool = True
    per_account_accounts: int = 10000
    per_account_defences: tuple[str, ...] = ("similarity", "prada", "blacklight", "metadata")
    per_account_seeds: int = 2
    rl: bool = False
    scale: bool = False
    json: bool = True


def scenario(args: Args, campaign: str, defence: str, **changes) -> dict:
    """The scenario's data with the campaign's hygiene presets and the defence's seats."""
    from extractgym.scenarios.schema import read_yaml, shipped_scenarios

    data = copy.deepcopy(read_yaml(shipped_scenarios()[args.scenario]))
    attacker = data["attackers"][0]
    hygiene = dict(CAMPAIGNS[campaign])
    attacker["params"].update(hygiene.pop("params", {}))
    attacker["tactics"]["sybil"].update(hygiene)
    attacker["params"].update(changes.pop("params", {}))
    attacker["tactics"]["sybil"].update(changes.pop("sybil", {}))
    attacker["budget"].update(changes.pop("budget", {}))
    data["defenders"] = copy.deepcopy(DEFENCES[defence])
    data.update(changes)
    return data


def play(data: dict, seed: int) -> dict:
    """One episode: the figures of one cell."""
    from extractgym.envs.benign import OWNER
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    env = make_env(data, seed=seed)
    t0 = time.process_time()
    s = play_episode(env, seed=seed)
    cpu = time.process_time() - t0
    game = env.game
    ledger = tuple(game.api.ledger)
    opens = [e for e in ledger if e.kind == "open" and e.owner == "attacker_0"]
    cfg = game.api.services["api"].config
    fingerprints = sum(e.charge - cfg.opening_charge for e in opens)
    a = s["attackers"]["attacker_0"]
    answered = {e.account for e in ledger if e.kind == "query" and e.owner == "attacker_0" and e.n > 0}
    benign = {acc.id for _, acc in game.benign.customers}
    banned_benign = sum(game.api.accounts[b].banned for b in benign)
    hit = s.get("benign_customers_hit", banned_benign)
    return {"accounts": a["accounts_created"], "answering": len(answered), "banned": a["accounts_banned"],
            "banned_share": a["accounts_banned"] / a["accounts_created"] if a["accounts_created"] else 0.0,
            "queries": a["queries"], "cost": a["cost"], "fingerprints": fingerprints, "accuracy": a["accuracy"],
            "return": s["returns"]["attacker_0"], "benign_hit": hit, "benign_hit_rate": hit / len(benign),
            "benign_banned": banned_benign, "utility": s["utility"], "cpu": cpu,
            "cover": a.get("tactics", {}).get("sybil_cover", 0), "owner": OWNER}


def mean_se(values: list[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")


def fmt_ms(values: list[float], digits: int = 3) -> str:
    m, se = mean_se(values)
    return f"{m:.{digits}f} ± {se:.{digits}f}"


def grid(args: Args) -> dict:
    cells: dict[str, dict[str, list[dict]]] = {}
    for campaign in args.campaigns:
        for defence in args.defences:
            if args.cells and f"{campaign}/{defence}" not in args.cells:
                continue
            runs = []
            for seed in args.seeds:
                runs.append(play(scenario(args, campaign, defence), seed))
                print(f"  {campaign} vs {defence} seed {seed}: {runs[-1]['banned']}/{runs[-1]['accounts']} banned, "
                      f"{runs[-1]['queries']} answered, accuracy {runs[-1]['accuracy']:.3f}, "
                      f"money {runs[-1]['cost']:.1f}, "
                      f"return {runs[-1]['return']:.3f}, benign hit {runs[-1]['benign_hit']} "
                      f"({runs[-1]['cpu']:.1f} CPU s)", flush=True)
            cells.setdefault(campaign, {})[defence] = runs
    rows = []
    for campaign, by_defence in cells.items():
        for defence, runs in by_defence.items():
            col = {k: [r[k] for r in runs] for k in runs[0] if k != "owner"}
            rows.append([campaign, defence, fmt_ms(col["accounts"], 0), fmt_ms(col["banned_share"]),
                         fmt_ms(col["queries"], 0), fmt_ms(col["cost"], 1), fmt_ms(col["fingerprints"], 1),
                         fmt_ms(col["accuracy"]), fmt_ms(col["return"]), fmt_ms(col["benign_hit_rate"], 4),
                         fmt_ms(col["utility"])])
    print_table(f"{args.scenario}: campaign x defence, mean ± SE over seeds {list(args.seeds)}",
                ["campaign", "defence", "accounts", "banned share", "answered", "money", "on fingerprints",
                 "accuracy", "attacker return", "benign hit rate", "utility"], rows)
    paired = []

    def diff(c1: str, d1: str, c2: str, d2: str, key: str, what: str) -> None:
        if c1 in cells and c2 in cells and d1 in cells[c1] and d2 in cells[c2]:
            a = [r[key] for r in cells[c1][d1]]
            b = [r[key] for r in cells[c2][d2]]
            d = [x - y for x, y in zip(a, b, strict=True)]
            m, se = mean_se(d)
            paired.append([what, f"{c1}/{d1} - {c2}/{d2}", key, m, se, sum(x > 0 for x in d), len(d)])

    for c in args.campaigns:
        for d in args.defences:
            if d != "none":
                diff(c, d, c, "none", "banned_share", f"{d} linker bans ({c})")
                diff(c, d, c, "none", "return", f"{d} linker vs the {c} campaign's return")
    diff("fresh", "none", "reuse", "none", "cost", "what fresh fingerprints cost")
    diff("fresh", "metadata", "reuse", "metadata", "banned_share", "fresh fingerprints vs metadata linking")
    diff("fresh", "metadata", "reuse", "metadata", "return", "fresh vs reuse against the metadata linker (return)")
    diff("fresh-human", "timing", "fresh", "timing", "return",
         "human pacing vs burst against the timing linker (return)")
    diff("fresh-human-cover", "content", "fresh-human", "content", "return",
         "cover 0.5 vs none against the content linker (return)")
    diff("fresh-human-natural", "content", "fresh-human", "content", "banned_share",
         "customers' own data vs the attacker's against the content linker")
    diff("fresh-human", "timing", "fresh", "timing", "banned_share", "human pacing vs the timing linker")
    diff("fresh-human-cover", "content", "fresh-human", "content", "banned_share", "cover vs the content linker")
    print_table("paired differences (mean, SE, seeds where > 0)",
                ["what", "cells", "figure", "mean", "SE", "> 0", "seeds"], paired)
    return {"cells": cells, "paired": paired}


def per_account(args: Args) -> dict:
    """A campaign of ``per_account_accounts`` accounts, 25 answered queries each, against per-account detectors."""
    n = args.per_account_accounts
    rounds, live = 5, max(1, n // 5)
    changes = {"rounds": rounds, "params": {"queries_per_round": live * 25},
               "sybil": {"accounts": live, "rotate_every": 25}, "budget": {"accounts": n, "money": 1e6}}
    out = {}
    rows = []
    for defence in args.per_account_defences:
        runs = [play(scenario(args, "reuse", defence, **copy.deepcopy(changes)), seed)
                for seed in args.seeds[:args.per_account_seeds]]
        out[defence] = runs
        col = {k: [r[k] for r in runs] for k in runs[0] if k != "owner"}
        rows.append([defence, fmt_ms(col["accounts"], 0), fmt_ms(col["banned_share"], 4), fmt_ms(col["queries"], 0),
                     fmt_ms(col["benign_hit_rate"], 4), fmt_ms(col["cpu"], 0)])
        print(f"  per-account: {defence} done", flush=True)
    print_table(f"a campaign of {n} accounts x 25 queries (fingerprints reused per 100 accounts), seeds "
                f"{list(args.seeds[:args.per_account_seeds])}",
                ["defence", "accounts", "banned share", "answered", "benign hit rate",
                                            "CPU s"], rows)
    return out


RL_ATTACKER = {  # constant settings of rl-sybil-campaign's attacker knobs (payment, proxy, pacing, cover)
    "preset: reuse 100/100, burst": {},
    "reuse 10/10, burst": {"payment_reuse": 10, "proxy_reuse": 10},
    "fresh cards only": {"payment_reuse": 1},
    "fresh proxies only": {"proxy_reuse": 1},
    "fresh 1/1, burst": {"payment_reuse": 1, "proxy_reuse": 1},
    "fresh 1/1, human": {"payment_reuse": 1, "proxy_reuse": 1, "pacing": "human"},
    "fresh 1/1, human, cover 0.5": {"payment_reuse": 1, "proxy_reuse": 1, "pacing": "human", "cover": 0.5},
    "reuse 100/100, human": {"pacing": "human"},
}


def rl(args: Args) -> dict:
    """The attacker's constant settings and the linkers' thresholds in rl-sybil-campaign, paired over seeds."""
    from extractgym.scenarios.schema import read_yaml, shipped_scenarios

    base = read_yaml(shipped_scenarios()["rl-sybil-campaign"])

    def returns(attacker: dict, defender: int | None = None, knobs: dict | None = None) -> list[dict]:
        data = copy.deepcopy(base)
        data["attackers"][0]["brain"] = {"kind": "preset", "knobs": attacker}
        if defender is not None:
            data["defenders"][defender]["brain"] = {"kind": "preset", "knobs": knobs}
        out = []
        for seed in args.seeds:
            from extractgym.scenarios import make_env
            from extractgym.scenarios.runner import play_episode

            env = make_env(data, seed=seed)
            s = play_episode(env, seed=seed)
            a = s["attackers"]["attacker_0"]
            out.append({"attacker": s["returns"]["attacker_0"], **{f"defender_{i}": s["returns"][f"defender_{i}"]
                                                                 for i in range(3)},
                        "banned_share": a["accounts_banned"] / max(1, a["accounts_created"]), "cost": a["cost"],
                        "accuracy": a["accuracy"], "queries": a["queries"], "benign_hit": s["benign_customers_hit"]})
        return out

    results: dict = {"attacker": {}, "defenders": {}}
    preset = None
    rows = []
    for name, knobs in RL_ATTACKER.items():
        runs = returns(knobs)
        results["attacker"][name] = runs
        preset = preset or runs
        diff = [r["attacker"] - p["attacker"] for r, p in zip(runs, preset, strict=True)]
        col = {k: [r[k] for r in runs] for k in runs[0]}
        rows.append([name, fmt_ms(col["attacker"]), fmt_ms(diff), fmt_ms(col["banned_share"]), fmt_ms(col["cost"], 1),
                     fmt_ms(col["queries"], 0), fmt_ms(col["accuracy"])])
        print(f"  rl attacker: {name} done", flush=True)
    print_table(f"rl-sybil-campaign: the attacker's constant settings, seeds {list(args.seeds)}",
                ["setting", "attacker return", "minus preset", "banned share", "money", "answered", "accuracy"], rows)
    rows = []
    for seat, body, settings, attackers in (
            (0, "metadata-linker", [{"min_cluster": m} for m in (10, 3, 50)], ("preset: reuse 100/100, burst",
                                                                               "reuse 10/10, burst")),
            (1, "timing-linker", [{"min_cluster": m} for m in (10, 3, 50)], ("fresh 1/1, burst",)),
            (2, "content-linker", [{"level": v} for v in (1.0, 0.75, 1.5)], ("fresh 1/1, human",))):
        for attacker in attackers:
            runs = {repr(k): returns(RL_ATTACKER[attacker], seat, k) for k in settings}
            results["defenders"][f"{body} vs {attacker}"] = runs
            first = next(iter(runs.values()))
            for k, r in runs.items():
                diff = [a[f"defender_{seat}"] - b[f"defender_{seat}"] for a, b in zip(r, first, strict=True)]
                rows.append([body, attacker, k, fmt_ms([x[f"defender_{seat}"] for x in r]), fmt_ms(diff),
                             fmt_ms([x["banned_share"] for x in r]), fmt_ms([x["benign_hit"] for x in r], 1)])
            print(f"  rl defender: {body} vs {attacker} done", flush=True)
    print_table("rl-sybil-campaign: each linker's setting (others at their presets), defender return paired against "
                "the first setting", ["linker", "attacker", "setting", "its return", "minus first", "banned share",
                                      "customers hit"], rows)
    return results


def scale(args: Args) -> dict:
    """One episode: 10^4 campaign accounts (fresh fingerprints), 10^3 customers, 10^6 queries, all linkers."""
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    data = scenario(args, "fresh", "all", rounds=10, params={"queries_per_round": 80_000},
                    sybil={"accounts": 1000, "rotate_every": 80}, budget={"accounts": 10_000, "money": 1e6},
                    benign=[{"dataset": "digits", "split": "pool", "customers": 1000, "queries_per_round": 20}])
    env = make_env(data, seed=args.seeds[0])
    env.reset(seed=args.seeds[0])  # victims, encoders and datasets loaded: the baseline of the memory figure
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.process_time()
    s = play_episode(env, seed=args.seeds[0])
    cpu = time.process_time() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ledger = tuple(env.game.api.ledger)
    queries = {o: sum(e.n for e in ledger if e.kind == "query" and e.owner == o) for o in ("attacker_0", "benign")}
    a = s["attackers"]["attacker_0"]
    row = [a["accounts_created"], s["benign_accounts"], queries["attacker_0"], queries["benign"], len(ledger),
           a["accounts_banned"], s["benign_customers_hit"], cpu, before, peak]
    print_table("scale episode (10 rounds, fresh fingerprints, burst pacing, all three linkers)",
                ["campaign accounts", "customers", "campaign queries", "customers' queries", "ledger entries",
                 "campaign banned", "customers hit", "CPU s", "RSS before MiB", "peak RSS MiB"], [row])
    return {"row": row, "summary": {k: v for k, v in s.items() if k != "attackers"}}


def main() -> None:
    args = parse_args(Args)
    out = {}
    if args.grid:
        out["grid"] = grid(args)
    if args.per_account:
        out["per_account"] = per_account(args)
    if args.rl:
        out["rl"] = rl(args)
    if args.scale:
        out["scale"] = scale(args)
    print("machine:", machine())
    if args.json:
        write_json("bench_sybil", args, out)


if __name__ == "__main__":
    main()
