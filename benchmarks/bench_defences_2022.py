"""Today's defences against adaptive attackers, in the shape of seed 003's tables (issue 14).

Detectors ``similarity`` (seed 003), ``seat`` (SEAT), ``blacklight``, ``piha`` and the watermark ``dawn`` (``none`` as
the baseline) against the attackers ``random``, ``jb-top3`` and ``jba-pgd``, each plain, with the ``oars`` adaptive
tactic or with seed 003's query blinding (random scaling, its best trade-off), and with and without ``sybil``
accounts (4 in parallel), over several seeds. Every episode: the
digits-cnn victim (probabilities; 0.001 per query, 1.0 per account, rejected queries billed), 1,000 queries in 5
rounds, up to 100 accounts, and benign customers from two sources (the digits pool, in the owner's distribution, and
the shifted MNIST-8x8 pool), each sending 20 queries per round (100 per account: the shipped scenarios' volume).
Detectors calibrate themselves at bind to the false-positive rate their tuning streams certify (0.3% for 1,000
streams at 95% confidence, 1.5% for PRADA's 200). Printed:

1. seed 003 Tables VII/X-XI in shape: per detector, attacker, adaptive scheme and Sybil setting, the accounts burned
   (banned), the attacker queries answered before the first detection (rejection or ban; ``-`` if never), the
   answered queries and the extraction accuracy (mean ± std over seeds);
2. Table IX in shape: per detector and benign source, the benign accounts banned / accounts over all its episodes
   with a Clopper-Pearson 95% interval, the share of the source's queries refused (rejections), and its utility
   (answers whose top class is the undefended one, refused queries counting as not);
3. calibration outside the game: per stateful detector, ``streams`` fresh benign accounts per source drawn the way
   the game's customers draw (20 distinct pool images per round for 5 rounds), flagged iff the calibrated threshold
   would ban them; the realised rate with its 95% interval against the certified bound ("ok" when the interval's
   lower end is within the bound, i.e. the data are consistent with the certified rate; the bound holds for the
   owner's own distribution, so a shifted source is reported, not checked);
4. DAWN: the referee's ownership test on the attacker's surrogate (the default warm-started ones, and ones retrained
   to convergence each round, which memorise their transfer set), and on an independently trained model (the same
   architecture trained on the pool's true labels: the control, which should sit at chance), with the utility cost;
5. per-query latency at histories 10^2..10^5 (``bench_detector_latency.measure``), and the growth from 10^2 to 10^5;
6. the issue's directions, checked against the rows above.

Episodes are cached in ``benchmarks/out/bench_defences_2022.episodes.jsonl`` (keyed by their configuration) so an
interrupted run resumes; ``--fresh true`` ignores the cache. The full grid is 324 episodes plus 27 for DAWN (about
25 minutes on two busy cores, with the calibration table and the latency sweep); ``--seeds 0 --attackers jba-pgd``
for a quick look.

    .venv/bin/python benchmarks/bench_defences_2022.py
    .venv/bin/python benchmarks/bench_defences_2022.py --seeds 0 --detectors blacklight piha --latency false
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass

import numpy as np
from _common import OUT_DIR, parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    detectors: tuple[str, ...] = ("none", "similarity", "seat", "blacklight", "piha", "dawn")
    attackers: tuple[str, ...] = ("random", "jb-top3", "jba-pgd")
    adaptive: tuple[str, ...] = ("none", "oars", "blind")
    """adaptive schemes: none, oars (the OARS-style tactic), blind (seed 003's query blinding: random scaling)"""
    sybil: tuple[str, ...] = ("no", "yes")
    seeds: tuple[int, ...] = (0, 1, 2)
    victim: str = "digits-cnn"
    rounds: int = 5
    queries: int = 1000
    queries_per_round: int = 200
    accounts: int = 100
    sybil_accounts: int = 4
    customers: int = 10
    """benign accounts per source"""
    benign_queries: int = 20
    """queries per benign account per round"""
    benign: tuple[str, ...] = ("digits", "mnist8x8")
    calibration: tuple[str, ...] = ("prada", "similarity", "seat", "vae", "ood", "blacklight", "piha", "text-similarity")
    streams: int = 1000
    """fresh benign accounts per detector and source in the calibration table"""
    dawn_rates: tuple[float, ...] = (0.005, 0.02)
    dawn_epochs: int = 200
    """epochs a converged surrogate is retrained for every round"""
    dawn_queries: int = 2000
    """query budget of the DAWN table's episodes (more answers, more watermarks)"""
    latency: bool = True
    histories: tuple[int, ...] = (100, 1000, 10_000, 100_000)
    fresh: bool = False
    torch_threads: int = 0
    json: bool = True


EPISODES = OUT_DIR / "bench_defences_2022.episodes.jsonl"
VERSION = 2  # of the figures an episode records (older cached rows are recomputed)


def scenario(args: Args, det: str, att: str, adaptive: str, sybil: str, seed: int,
             attacker_params: dict | None = None, defender_params: dict | None = None) -> dict:
    from extractgym.agents import ATTACKERS
    from extractgym.agents.registry import parameters

    accepted = parameters(ATTACKERS[att])
    params = {k: v for k, v in {"pool": "digits", "queries_per_round": args.queries_per_round}.items() if k in accepted}
    tactics: dict = {}
    if adaptive == "oars":
        tactics["oars"] = {}
    elif adaptive == "blind":
        tactics["blinding"] = {"transform": "scale"}
    if sybil == "yes":
        tactics["sybil"] = {"accounts": args.sybil_accounts}
    return {
        "name": f"defences-{det}-{att}-{adaptive}-{sybil}", "rounds": args.rounds, "seed": seed,
        "services": [{"name": "api", "victim": args.victim, "price_per_query": 0.001, "account_price": 1.0,
                      "charge_rejected": True}],
        "attackers": [{"body": att, "params": {**params, **(attacker_params or {})},
                       "budget": {"queries": args.queries, "money": 200.0, "accounts": args.accounts},
                       "tactics": tactics}],
        "defenders": [{"body": det, "params": dict(defender_params or {})}],
        "benign": [{"dataset": b, "split": "pool", "customers": args.customers, "queries_per_round": args.benign_queries}
                   for b in args.benign],
    }


def play(sc: dict, seed: int, cache: dict, fresh: bool, extra=None) -> dict:
    """One episode's figures (cached by the scenario's configuration)."""
    key = hashlib.sha256(json.dumps([VERSION, sc, seed, extra is not None], sort_keys=True).encode()).hexdigest()[:20]
    if key in cache and not fresh:
        return cache[key]
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    t0 = time.perf_counter()
    env = make_env(sc)
    s = play_episode(env, seed=seed)
    mine = [e for e in env.game.api.ledger if e.owner == "attacker_0"]
    caught = next((i for i, e in enumerate(mine) if e.kind in ("reject", "ban")), None)
    answered = sum(e.n for e in mine if e.kind == "query")
    first = None if caught is None else sum(e.n for e in mine[:caught] if e.kind == "query")
    seed_set = int(getattr(env.game.attackers["attacker_0"].seat.body, "seed_size", 0) or 0)  # JBA's natural X_0
    benign = env.game.benign
    out = {"accuracy": s["attacker_accuracy"], "fidelity": s["fidelity"], "accounts_created": s["accounts_created"],
           "accounts_banned": s["accounts_banned"], "answered": answered, "first_detection": first,
           "synthetic_before_detection": None if first is None else max(0, first - seed_set),
           "banned_per_source": {k.split(":")[0]: v for k, v in benign.banned_per_group().items()},
           "per_source": {k.split(":")[0]: {"queries": t.queries, "rejected": t.rejected, "agree": t.agree}
                          for k, t in benign.per_group.items()},
           "benign_queries": benign.total.queries, "benign_rejected": benign.total.rejected, "utility": s["utility"],
           "defended_accuracy": s["defended_accuracy"], "victim_accuracy": s["victim_accuracy"],
           "ownership": (s.get("ownership") or {}).get("attacker_0", {}).get("defender_0"),
           "bound": getattr(env.game.defenders["defender_0"], "fpr_bound", None), "seconds": time.perf_counter() - t0}
    if extra is not None:
        out.update(extra(env))
    cache[key] = out
    with EPISODES.open("a") as f:
        f.write(json.dumps({"key": key, "figures": out}) + "\n")
    return out


def mean_sd(values: list[float], fmt: str = "{:.1f}") -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    m = float(np.mean(v))
    return (fmt.format(m) + (f" ± {fmt.format(float(np.std(v)))}" if len(v) > 1 else "")
            + (f" ({len(v)}/{len(values)})" if len(v) < len(values) else ""))


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    from scipy.stats import beta

    lo = float(beta.ppf(0.025, k, n - k + 1)) if k else 0.0
    hi = float(beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return lo, hi


def calibration_table(args: Args) -> tuple[list[list], dict]:
    """Realised false-positive rates of fresh benign accounts (game-like draws) vs each detector's certified bound."""
    from extractgym.agents import DEFENDERS
    from extractgym.envs.api import DefenderView, PredictionAPI, Service, ServiceConfig
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import load_victim

    rows, out = [], {}
    for det in args.calibration:
        if det not in DEFENDERS:
            continue
        text = det == "text-similarity"
        victim = "minilm-sentiment" if text else args.victim
        sources = ("rotten-tomatoes", "guardian") if text else args.benign
        body = DEFENDERS[det]()
        api = PredictionAPI([Service(ServiceConfig("api"), load_victim(victim))], [body])
        body.bind(DefenderView(api), np.random.default_rng(0))  # calibrates as in the game (memoised)
        threshold, bound = body.current("api"), body.fpr_bound
        owner = get_dataset(body.data).name
        for source in sources:
            x = get_dataset(source).split("pool")[0]
            rng = np.random.default_rng(1)
            flagged = 0
            for _ in range(args.streams):  # the game's benign draw: distinct images per round, repeats across rounds
                stream = np.concatenate([x[rng.choice(len(x), args.benign_queries, replace=False)]
                                         for _ in range(args.rounds)])
                crit = body.critical(stream, "api", args.benign_queries)
                flagged += bool(threshold > crit if body.flag_above else threshold < crit)
            lo, hi = clopper_pearson(flagged, args.streams)
            # the bound is certified for the owner's distribution; a shifted source is reported, not checked
            ok = ("ok" if lo <= bound else "ABOVE") if source == owner else "shifted: not certified"
            out[f"{det}/{source}"] = {"flagged": flagged, "streams": args.streams, "rate": flagged / args.streams,
                                      "ci": [lo, hi], "bound": bound, "ok": ok}
            rows.append([det, source, args.streams, f"{100 * flagged / args.streams:.2f}%",
                         f"[{100 * lo:.2f}%, {100 * hi:.2f}%]", f"{100 * bound:.2f}%", ok])
        print(f"  calibration {det} done", flush=True)
    return rows, out


def independent_model(args: Args, epochs: int):
    """A surrogate of the attacker's architecture trained on the digits pool's true labels (no API answer)."""
    from extractgym.agents.extraction.surrogate import Surrogate
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.training import TrainConfig

    ds = get_dataset("digits")
    x, y = ds.split("pool")
    model = Surrogate(ds.spec, ds.n_classes, "auto", TrainConfig(epochs=epochs), warm_start=False, seed=123)
    model.add(x, np.eye(ds.n_classes, dtype=np.float32)[y])
    model.fit()
    return model.snapshot()


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    cache: dict = {}
    if EPISODES.exists() and not args.fresh:
        for line in EPISODES.read_text().splitlines():
            row = json.loads(line)
            cache[row["key"]] = row["figures"]
    results: dict = {"episodes": {}}

    # -- 1. the grid --------------------------------------------------------------------------------------
    cells = [(d, a, ad, sy) for d in args.detectors for a in args.attackers for ad in args.adaptive for sy in args.sybil]
    for n, (det, att, adaptive, sybil) in enumerate(cells):
        runs = [play(scenario(args, det, att, adaptive, sybil, seed), seed, cache, args.fresh) for seed in args.seeds]
        results["episodes"][f"{det}/{att}/{adaptive}/{sybil}"] = runs
        print(f"  [{n + 1}/{len(cells)}] {det} vs {att} adaptive={adaptive} sybil={sybil}: "
              f"{sum(r['seconds'] for r in runs):.0f} s", flush=True)
    rows = []
    for (det, att, adaptive, sybil) in cells:
        runs = results["episodes"][f"{det}/{att}/{adaptive}/{sybil}"]
        rows.append([det, att, adaptive, sybil, mean_sd([r["accounts_banned"] for r in runs]),
                     mean_sd([r["first_detection"] for r in runs], "{:.0f}"),
                     mean_sd([r["synthetic_before_detection"] for r in runs], "{:.0f}"),
                     mean_sd([r["answered"] for r in runs], "{:.0f}"),
                     mean_sd([100 * r["accuracy"] for r in runs], "{:.1f}")])
    print_table(f"Detectors vs attackers ({args.victim}, {args.queries} queries, <= {args.accounts} accounts, "
                f"mean ± std over seeds {list(args.seeds)}; seed 003 Tables VII, X, XI)",
                ["detector", "attacker", "adaptive", "sybil", "# accounts burned", "answered before 1st detection",
                 "of them after X_0", "answered", "ex. acc. %"], rows)

    # -- 2. benign false positives per source -------------------------------------------------------------
    rows = []
    for det in args.detectors:
        runs = [r for (d, a, ad, sy) in cells if d == det for r in results["episodes"][f"{d}/{a}/{ad}/{sy}"]]
        bound = next((r["bound"] for r in runs if r["bound"] is not None), None)
        for source in args.benign:
            banned = sum(r["banned_per_source"][source][0] for r in runs)
            total = sum(r["banned_per_source"][source][1] for r in runs)
            lo, hi = clopper_pearson(banned, total)
            queries = sum(r["per_source"][source]["queries"] for r in runs)
            refused = sum(r["per_source"][source]["rejected"] for r in runs)
            agree = sum(r["per_source"][source]["agree"] for r in runs)
            rows.append([det, source, total, f"{100 * banned / max(total, 1):.2f}%", f"[{100 * lo:.2f}%, {100 * hi:.2f}%]",
                         "-" if bound is None else f"{100 * bound:.2f}%", f"{100 * refused / max(queries, 1):.2f}%",
                         f"{agree / max(queries, 1):.4f}"])
    print_table("Benign false-positive rate per source in the game (accounts banned / accounts over every episode of "
                "the detector, 95% Clopper-Pearson interval; certified bound; queries refused; utility; "
                "seed 003 Table IX)", ["detector", "benign source", "accounts", "FPR", "95% CI", "certified",
                                       "refused", "utility"], rows)

    # -- 3. calibration outside the game ------------------------------------------------------------------
    rows, results["calibration"] = calibration_table(args)
    print_table(f"Calibration: fresh benign accounts ({args.rounds} rounds x {args.benign_queries} pool images, as the "
                f"game's customers) flagged by the calibrated threshold vs the certified bound",
                ["detector", "source", "accounts", "flagged", "95% CI", "certified", "check"], rows)

    # -- 4. DAWN ---------------------------------------------------------------------------------------------
    dawn_rows = []
    results["dawn"] = {}
    if "dawn" in __import__("extractgym.agents", fromlist=["DEFENDERS"]).DEFENDERS:
        control = independent_model(args, args.dawn_epochs)

        def control_test(env) -> dict:
            d = env.game.defenders["defender_0"]
            ev = d.ownership_evidence("attacker_0", "api")
            return {"control": None if ev is None else env.game.referee.ownership(control, ev)}

        dawn_args = Args(**{**vars(args), "queries": args.dawn_queries,
                            "queries_per_round": args.dawn_queries // args.rounds})
        variants = [(False, min(args.dawn_rates))] + [(True, r) for r in args.dawn_rates]
        for att in args.attackers:
            for converged, rate in variants:
                # converged: the surrogate retrained from scratch to convergence on its transfer set every round
                ap = ({"epochs": args.dawn_epochs} | ({"warm_start": False} if att == "random" else {})) if converged else {}
                runs = [play(scenario(dawn_args, "dawn", att, "none", "no", seed, ap, {"rate": rate}), seed, cache,
                             args.fresh, control_test) for seed in args.seeds]
                results["dawn"][f"{att}/{converged}/{rate}"] = runs
                own = [r["ownership"] or {} for r in runs]
                ctl = [r.get("control") or {} for r in runs]
                dawn_rows.append([
                    att, "converged" if converged else "default", f"{100 * rate:.1f}%",
                    mean_sd([o.get("watermarks", 0) for o in own], "{:.0f}"),
                    mean_sd([o.get("matches", 0) for o in own], "{:.1f}"),
                    mean_sd([o.get("p_value", 1.0) for o in own], "{:.2g}"),
                    f"{sum(bool(o.get('attributed')) for o in own)}/{len(own)}",
                    mean_sd([c.get("p_value", 1.0) for c in ctl], "{:.2g}"),
                    f"{sum(bool(c.get('attributed')) for c in ctl)}/{len(ctl)}",
                    mean_sd([100 * r["accuracy"] for r in runs], "{:.1f}"),
                    mean_sd([100 * (1 - r["utility"]) for r in runs], "{:.2f}"),
                    mean_sd([100 * (r["victim_accuracy"] - r["defended_accuracy"]) for r in runs], "{:.2f}")])
                print(f"  dawn {att} converged={converged} rate={rate} done", flush=True)
        print_table(f"DAWN ({args.dawn_queries} queries): the referee's ownership test on the attacker's surrogate "
                    f"(stolen) and on an independently trained model (control); watermarks: the attacker's "
                    f"watermarked answers",
                    ["attacker", "surrogate", "rate", "watermarks", "matches", "p (stolen)", "attributed",
                     "p (control)", "control attributed", "ex. acc. %", "benign utility loss %", "test acc. loss %"],
                    dawn_rows)

    # -- 5. latency --------------------------------------------------------------------------------------
    if args.latency:
        from bench_detector_latency import Args as LatencyArgs
        from bench_detector_latency import measure

        names = tuple(d for d in args.detectors if d not in ("none", "dawn"))
        lat_rows, growth_rows, results["latency"] = measure(LatencyArgs(detectors=names, histories=args.histories,
                                                                        growing=False, json=False))
        print_table("Per-query detector latency vs history (bench_detector_latency)",
                    ["detector", "cap", "history", "batch", "detector µs/query", "victim µs/query", "detector/victim",
                     "state/account"], lat_rows)
        print_table(f"Growth from history {min(args.histories)} to {max(args.histories)}",
                    ["detector", "cap", "batch", "growth", "bytes per stored query"], growth_rows)

    # -- 6. directions -----------------------------------------------------------------------------------
    checks = directions(args, results)
    print_table("The issue's directions, checked against the rows above", ["direction", "figures", "holds"], checks)
    results["directions"] = checks
    if args.json:
        write_json("bench_defences_2022", args, results)


def directions(args: Args, results: dict) -> list[list]:
    ep = results["episodes"]

    def runs(det: str, att: str, adaptive: str = "none", sybil: str = "no") -> list[dict]:
        return ep.get(f"{det}/{att}/{adaptive}/{sybil}", [])

    out = []
    jba = [a for a in ("jb-top3", "jba-pgd") if a in args.attackers]
    if "blacklight" in args.detectors and jba:
        firsts = {a: [r["synthetic_before_detection"] for r in runs("blacklight", a)] for a in jba}
        fpr = results["calibration"].get("blacklight/digits", {}).get("rate")
        game = [r for k, rs in ep.items() if k.startswith("blacklight/") for r in rs]
        banned = sum(r["banned_per_source"]["digits"][0] for r in game)
        total = sum(r["banned_per_source"]["digits"][1] for r in game)
        handful = all(f is not None and f <= 10 for fs in firsts.values() for f in fs)
        out.append(["Blacklight catches JBA within a handful of queries at a low benign FPR",
                    "; ".join(f"{a}: synthetic queries answered before the first detection {fs}"
                              for a, fs in firsts.items())
                    + (f"; benign digits FPR {100 * fpr:.2f}% per account (certified scope)" if fpr is not None else "")
                    + f", {100 * banned / max(total, 1):.2f}% in the game (global scope)",
                    "yes" if handful else "no"])
    if "oars" in args.adaptive:
        for det in ("blacklight", "piha"):
            if det not in args.detectors:
                continue
            for a in args.attackers:
                plain, adapt = runs(det, a), runs(det, a, "oars")
                if plain and adapt:
                    acc0, acc1 = np.mean([r["accuracy"] for r in plain]), np.mean([r["accuracy"] for r in adapt])
                    q0, q1 = np.mean([r["answered"] for r in plain]), np.mean([r["answered"] for r in adapt])
                    out.append([f"the oars tactic raises {a}'s success against {det}",
                                f"ex. acc. {100 * acc0:.1f}% -> {100 * acc1:.1f}%, answered {q0:.0f} -> {q1:.0f}",
                                "yes" if acc1 > acc0 else "no"])
    if {"seat", "similarity"} <= set(args.detectors):
        for adaptive in args.adaptive:
            s = [np.mean([r["accounts_banned"] for r in runs("seat", a, adaptive)] or [0]) for a in args.attackers]
            m = [np.mean([r["accounts_banned"] for r in runs("similarity", a, adaptive)] or [0]) for a in args.attackers]
            out.append([f"SEAT needs more accounts than the similarity detector (adaptive={adaptive})",
                        ", ".join(f"{a}: {x:.1f} vs {y:.1f}" for a, x, y in zip(args.attackers, s, m, strict=True)),
                        "yes" if sum(s) > sum(m) else "no"])
    for key, rs in results.get("dawn", {}).items():
        att, converged, rate = key.split("/")
        if float(rate) <= 0.005 and converged == "True":
            att_ok = sum(bool((r["ownership"] or {}).get("attributed")) for r in rs)
            ctl = sum(bool((r.get("control") or {}).get("attributed")) for r in rs)
            loss = np.mean([100 * (1 - r["utility"]) for r in rs])
            out.append([f"DAWN attributes {att}'s converged surrogate at < 0.5% utility cost (rate {rate})",
                        f"attributed {att_ok}/{len(rs)}, control {ctl}/{len(rs)}, benign utility loss {loss:.2f}%",
                        "yes" if att_ok == len(rs) and ctl == 0 and loss < 0.5 else "no"])
    return out


if __name__ == "__main__":
    main()
