"""Coverage of the league's intervals: how often a nominal 95% interval holds the true value, by simulation.

Each game has a known answer: its true payoff tables ``A`` (attackers') and ``B`` (defenders'), so every ranking's
true score is the ranking of ``(A, B)``. A simulated league draws ``n`` seeds of noisy payoffs around them, with
what makes league noise hard: a common per-seed effect shared by every cell (the seeds are common random
numbers), heavy tails (Student's t with 5 degrees of freedom, standardised), and the defender's noise
correlated with the attacker's. It then computes the intervals exactly as the report does
(:func:`extractgym.league.analysis.rank_scope`; the tables' t intervals) and records which hold the truth.

Games:

* ``digits-league``: the shipped digits league as played (``benchmarks/data/digits-league-payoffs.json``: 7 x 7,
  pooled over its two scenarios, the default payoffs); truth = its mean tables, noise scales = each cell's
  spread over its seeds (shrunk halfway to the mean spread), the common-effect share and the attacker/defender
  correlation as measured there.
* ``random``: a random 6 x 6 general-sum game (``B = -A + 0.2 U``), noise 0.05, common share 0.3.
* ``cyclic``: a 5 x 5 zero-sum cyclic game (a fully mixed equilibrium), noise 0.15.
* ``dominated``: a 5 x 5 game where one row and one column are strictly dominated (weight 0) and one pure
  strategy takes all the weight, noise 0.05.

Also measured, for comparison: the percentile bootstrap the league used before (``mean payoff, percentile``).

    .venv/bin/python benchmarks/bench_coverage.py                         # ~30 min on 2 busy cores
    .venv/bin/python benchmarks/bench_coverage.py --sims 12 --bootstrap 40      # a quick look
    .venv/bin/python benchmarks/bench_coverage.py --write true            # also league/coverage.json

``--write true`` stores the table the report states (``league/coverage.json``): per interval kind and seed
count, the *lowest* coverage over the games (so "90% at 5 seeds" holds for every game above), and each game's.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import machine, parse_args, print_table, write_json

HERE = Path(__file__).resolve().parent
COVERAGE = HERE.parent / "league" / "coverage.json"


@dataclass
class Args:
    sims: int = 50
    bootstrap: int = 80
    seeds: tuple[int, ...] = (2, 3, 5, 10)
    games: tuple[str, ...] = ("digits-league", "random", "cyclic", "dominated")
    workers: int = 2
    seed: int = 0
    write: bool = False
    json: bool = True


@dataclass
class Game:
    name: str
    a: np.ndarray            # true attacker payoffs [att, def]
    b: np.ndarray            # true defender payoffs
    sa: np.ndarray           # per-cell noise scale, attacker
    sb: np.ndarray
    common: float            # share of the noise variance common to every cell of a seed
    corr: float              # correlation of the defender's noise with the attacker's


def _std_t(rng: np.random.Generator, shape: Any, df: int = 5) -> np.ndarray:
    return rng.standard_t(df, size=shape) / math.sqrt(df / (df - 2))


def games(names: tuple[str, ...], seed: int) -> list[Game]:
    rng = np.random.default_rng(seed)
    out = []
    for name in names:
        if name == "digits-league":
            snap = json.loads((HERE / "data" / "digits-league-payoffs.json").read_text())
            pa, pd = np.nanmean(np.array(snap["attacker"]), axis=0), np.nanmean(np.array(snap["defender"]), axis=0)
            a, b = pa.mean(-1), pd.mean(-1)
            ra, rd = pa - a[..., None], pd - b[..., None]
            sa, sd = ra.std(-1, ddof=1), rd.std(-1, ddof=1)
            sa, sd = np.sqrt(0.5 * sa ** 2 + 0.5 * (sa ** 2).mean()), np.sqrt(0.5 * sd ** 2 + 0.5 * (sd ** 2).mean())
            flat = ra.reshape(-1, ra.shape[-1])
            c = np.corrcoef(flat)
            common = float(np.clip(np.nanmean(c[np.triu_indices(len(flat), 1)]), 0.0, 0.9))
            corr = float(np.clip(np.nanmean([np.corrcoef(ra[i, j], rd[i, j])[0, 1] for i in range(a.shape[0])
                                             for j in range(a.shape[1])]), -0.95, 0.95))
            out.append(Game(name, a, b, sa, sd, common, corr))
        elif name == "random":
            a = rng.uniform(0, 1, (6, 6))
            out.append(Game(name, a, -a + 0.2 * rng.uniform(0, 1, (6, 6)), np.full((6, 6), 0.05),
                            np.full((6, 6), 0.05), 0.3, -0.7))
        elif name == "cyclic":
            a = np.array([[((j - i) % 5 in (1, 2)) - ((j - i) % 5 in (3, 4)) for j in range(5)] for i in range(5)],
                         dtype=float) * 0.3 + 0.5
            out.append(Game(name, a, -a, np.full((5, 5), 0.15), np.full((5, 5), 0.15), 0.3, -1.0))
        elif name == "dominated":
            a = rng.uniform(0.3, 0.6, (5, 5))
            a[0] += 0.3                   # row 0 dominates: it takes all the attackers' weight
            a[4] = a[:4].min(axis=0) - 0.1  # row 4 is strictly dominated
            a[:, 4] = a[:, :4].max(axis=1) + 0.1  # column 4 concedes most everywhere: dominated for the defenders
            out.append(Game(name, a, -a, np.full((5, 5), 0.05), np.full((5, 5), 0.05), 0.3, -1.0))
        else:
            raise SystemExit(f"unknown game {name!r}")
    return out


def draw(g: Game, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeds of both sides' payoffs ``[att, def, seed]`` around the truth."""
    shape = (*g.a.shape, n)
    u = math.sqrt(g.common) * _std_t(rng, (1, 1, n)) + math.sqrt(1 - g.common) * _std_t(rng, shape)
    w = math.sqrt(g.common) * _std_t(rng, (1, 1, n)) + math.sqrt(1 - g.common) * _std_t(rng, shape)
    v = g.corr * u + math.sqrt(1 - g.corr ** 2) * w
    return g.a[..., None] + g.sa[..., None] * u, g.b[..., None] + g.sb[..., None] * v


def truth(g: Game) -> dict[str, Any]:
    from extractgym.league import methods as mt

    game = mt.Game(g.a, g.b)
    out = {k: np.concatenate(mt.scores(m, game)) for k, m in mt.RANKINGS.items()}
    out["game value"] = np.array([game.equilibrium.value])
    return out


def one(task: tuple[int, int, int, int, int]) -> dict[str, Any]:
    """One simulated league: which intervals hold the truth, per kind (fractions over entries)."""
    gi, n, sim, bootstrap, seed = task
    import warnings

    from extractgym.league import analysis as an
    from extractgym.league import rankings as rk
    from extractgym.league.spec import RankingSpec

    g = GAMES[gi]
    rng = np.random.default_rng([seed, gi, n, sim])
    pa, pd = draw(g, n, rng)
    cfg = RankingSpec(bootstrap=bootstrap)
    names = ([f"a{i}" for i in range(g.a.shape[0])], [f"d{j}" for j in range(g.a.shape[1])])
    sr = an.rank_scope(cfg, *names, "sim", pa, pd, seed=sim)
    t = TRUTHS[gi]
    hits: dict[str, float] = {}
    for k in sr.attacker.score:
        lo = np.concatenate([sr.attacker.lo[k], sr.defender.lo[k]])
        hi = np.concatenate([sr.attacker.hi[k], sr.defender.hi[k]])
        tol = 1e-9
        ok = np.isfinite(t[k])
        hits[an_title(k)] = float(np.mean((lo[ok] - tol <= t[k][ok]) & (t[k][ok] <= hi[ok] + tol)))
    hits["game value"] = float(sr.value_lo - 1e-9 <= t["game value"][0] <= sr.value_hi + 1e-9)
    _, lo, hi = rk.t_interval(pa, 0.95)
    hits["table cell mean (t)"] = float(np.mean((lo <= g.a) & (g.a <= hi)))
    # the league's old interval: percentile bootstrap of the mean payoff
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        per_seed = np.concatenate([pa.mean(axis=1), pd.mean(axis=0)])       # [contestant, seed]
        true_mean = t["mean"]
        idx = np.random.default_rng([seed, sim, 7]).integers(0, n, (bootstrap, n))
        boots = np.stack([per_seed[:, i].mean(axis=1) for i in idx])
        plo, phi = rk.percentile_interval(boots, 0.95)
    hits["mean payoff, percentile (before)"] = float(np.mean((plo - 1e-12 <= true_mean) & (true_mean <= phi + 1e-12)))
    return {"game": g.name, "seeds": n, "hits": hits}


def an_title(key: str) -> str:
    from extractgym.league import methods as mt

    return mt.RANKINGS[key].title


GAMES: list[Game] = []
TRUTHS: list[dict[str, Any]] = []


def _init(names: tuple[str, ...], seed: int) -> None:
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    GAMES.extend(games(names, seed))
    TRUTHS.extend(truth(g) for g in GAMES)


def main() -> None:
    args = parse_args(Args)
    start, cpu0 = time.perf_counter(), time.process_time()
    tasks = [(gi, n, s, args.bootstrap, args.seed) for gi in range(len(args.games)) for n in args.seeds
             for s in range(args.sims)]
    if args.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_init, initargs=(args.games, args.seed)) as pool:
            results = pool.map(one, tasks, chunksize=4)
    else:
        _init(args.games, args.seed)
        results = [one(t) for t in tasks]
    kinds = list(results[0]["hits"])
    by_game: dict[str, dict[str, dict[str, float]]] = {}
    for r in results:
        for k, v in r["hits"].items():
            by_game.setdefault(r["game"], {}).setdefault(k, {}).setdefault(str(r["seeds"]), []).append(v)
    by_game = {g: {k: {n: float(np.mean(v)) for n, v in d.items()} for k, d in kinds_.items()}
               for g, kinds_ in by_game.items()}
    worst = {k: {str(n): min(by_game[g][k][str(n)] for g in by_game) for n in args.seeds} for k in kinds}
    rows = [[k, *(f"{worst[k][str(n)]:.0%}" for n in args.seeds),
             *(f"{by_game[g][k][str(n)]:.0%}" for g in by_game for n in args.seeds[1:2])] for k in kinds]
    print_table(f"actual coverage of nominal 95% intervals (lowest over {len(by_game)} games; then each game at "
                f"{args.seeds[1]} seeds); {args.sims} simulated leagues per game and seed count",
                ["interval", *(f"{n} seeds" for n in args.seeds), *(f"{g} @{args.seeds[1]}" for g in by_game)], rows)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"\n{len(tasks)} simulated leagues in {wall:.0f} s wall ({cpu:.0f} s CPU in this process; workers: "
          f"{args.workers})")
    command = (f"python benchmarks/bench_coverage.py --sims {args.sims} --bootstrap {args.bootstrap} --seeds "
               f"{' '.join(map(str, args.seeds))} --write true")
    table = {"nominal": 0.95, "command": command, "games": list(by_game), "simulations": args.sims,
             "bootstrap": args.bootstrap, "statistic": "lowest coverage over the games",
             "coverage": {k: v for k, v in worst.items() if "before" not in k},
             "before": {k: v for k, v in worst.items() if "before" in k}, "by_game": by_game}
    if args.write:
        COVERAGE.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {COVERAGE}")
    if args.json:
        write_json("bench_coverage", args, {**table, "machine": machine(), "wall_s": wall})


if __name__ == "__main__":
    main()
