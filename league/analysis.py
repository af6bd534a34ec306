"""From rows to payoff tables and rankings: per scenario and pooled, with intervals over seeds and tested ranks.

Payoffs are computed here from the stored figures, not in the workers, so changing a spec's ``payoff`` needs no
episode: ``extractgym tournament-report DIR`` recomputes everything from ``results.jsonl``.

Every registered ranking (:mod:`extractgym.league.methods`) is computed per scope (each scenario, and ``pooled``:
the scenarios' mean, replicate by replicate). Intervals are over seeds, which every attacker/defender pair shares
(common random numbers, so comparisons are paired): Student's t on the per-seed values for means (the tables and
the mean payoff), and for the rankings that re-solve a game (equilibria, alpha-Rank, worst case, regret) t on the
standard error of a bootstrap that resamples the seeds and re-solves (:func:`~extractgym.league.rankings.
bootstrap_interval`). Their actual coverage, measured by simulation on games with a known answer, ships in
``league/coverage.json`` (``benchmarks/bench_coverage.py`` writes it) and is stated in the report.

The rank rule (:func:`~extractgym.league.rankings.ranks_by_score`): order by score; a contestant shares its
predecessor's rank only if a paired test between the two (per-seed differences, or the bootstrap's) does not
reject equality at ``1 - confidence`` after Holm's correction over the neighbour pairs.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from extractgym.league import methods as mt
from extractgym.league import rankings as rk
from extractgym.league.cells import Cell
from extractgym.league.spec import LeagueError, LeagueSpec, RankingSpec

POOLED = "pooled"
SIDES = ("attacker", "defender")
# the figures of the report's tables: label -> (where, key); "seat" reads attacker seat 0's own figure first
FIGURES: dict[str, tuple[str, str]] = {
    "accuracy": ("seat", "accuracy"),
    "fidelity": ("seat", "fidelity"),
    "queries": ("seat", "queries"),
    "money": ("seat", "cost"),
    "accounts burned": ("seat", "accounts_banned"),
    "benign value share": ("episode", "benign_value_share"),
    "benign utility (top-1)": ("episode", "utility"),
    "false-positive rate": ("episode", "false_positive_rate"),
}
PAYOFFS = {"attacker": "attacker payoff", "defender": "defender payoff"}
VALUE, UTILITY = "benign value share", "benign utility (top-1)"
COVERAGE_TARGET = 0.90


def method_keys() -> list[str]:
    """The registered rankings' keys, in registration order."""
    return list(mt.RANKINGS)


# -- figures of one row --------------------------------------------------------------------------
def flatten(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number of a summary under its dotted path (``attackers.attacker_0.accuracy``)."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def figure(summary: dict[str, Any], side: str, name: str) -> float:
    """A figure of ``side``'s seat 0: ``return``, its own figure (``attackers.attacker_0.<name>``), the episode's,
    or any dotted path. ``KeyError`` when none exists."""
    seat = f"{side}_0"
    if name == "return":
        return float(summary["returns"][seat])
    own = (summary.get(f"{side}s") or {}).get(seat)
    if isinstance(own, dict) and isinstance(own.get(name), (int, float)) and not isinstance(own.get(name), bool):
        return float(own[name])
    value = summary.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    flat = flatten(summary)
    if name in flat:
        return flat[name]
    raise KeyError(name)


def payoff(summary: dict[str, Any], spec: LeagueSpec, side: str) -> float:
    how = getattr(spec.payoff, side)
    if how == "zero-sum":
        return -payoff(summary, spec, "attacker")
    if how == "return":
        return figure(summary, side, "return")
    return float(sum(w * figure(summary, side, name) for name, w in how.items()))


def check_payoffs(spec: LeagueSpec, summaries: list[dict[str, Any]]) -> None:
    """Every figure a linear payoff names exists in the rows; else :class:`LeagueError` naming ``payoff.SIDE.NAME``."""
    if not summaries:
        return
    problems = []
    for side in SIDES:
        how = getattr(spec.payoff, side)
        if not isinstance(how, dict):
            continue
        for name in how:
            if not any(_has(s, side, name) for s in summaries):
                known = sorted({"return", *flatten(summaries[0]),
                                *((summaries[0].get(f"{side}s") or {}).get(f"{side}_0") or {})})
                problems.append(f"payoff.{side}.{name}: no such figure in the results; known: {', '.join(known)}")
    if problems:
        raise LeagueError(f"league {spec.name!r} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


def _has(summary: dict[str, Any], side: str, name: str) -> bool:
    try:
        figure(summary, side, name)
    except (KeyError, TypeError):
        return False
    return True


# -- the league's arrays -------------------------------------------------------------------------
@dataclass
class LeagueData:
    """Figures as arrays ``[scenario, attacker, defender, replicate]`` (NaN where a cell failed or is missing)."""

    spec: LeagueSpec
    scenarios: list[str]
    attackers: list[str]
    defenders: list[str]
    values: dict[str, np.ndarray]                      # FIGURES labels and payoff labels
    raw: dict[str, np.ndarray]                         # every number of the summaries, by dotted path
    curves: dict[str, dict[str, np.ndarray]]           # scenario -> attacker -> [defender, replicate, key, round]
    curve_keys: tuple[str, ...]
    status: np.ndarray                                 # "ok" | "failed" | "missing"
    errors: list[dict[str, Any]] = field(default_factory=list)
    fingerprints: dict[str, int] = field(default_factory=dict)   # code fingerprint -> rows of the league

    def with_pooled(self, name: str) -> dict[str, np.ndarray]:
        """``values[name]`` per scenario label, plus ``pooled`` (the scenarios' mean, replicate by replicate)."""
        v = self.values[name] if name in self.values else self.raw[name]
        out = {s: v[i] for i, s in enumerate(self.scenarios)}
        if len(self.scenarios) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[POOLED] = np.nanmean(v, axis=0)
        return out

    @property
    def seeds(self) -> int:
        """Replicates with a finished episode in every scope's weakest pair (what intervals rest on)."""
        ok = (self.status == "ok").sum(axis=-1)
        return int(ok.min()) if ok.size else 0


CURVE_KEYS = ("queries", "accuracy", "fidelity", "cost")


def collect(spec: LeagueSpec, cells: list[Cell], rows: dict[str, dict[str, Any]]) -> LeagueData:
    """Arrange the rows of the league's cells (by id) into arrays; payoffs from the spec."""
    scen = [s.label for s in spec.scenarios]
    att = [a.name for a in spec.attackers]
    dfn = [d.name for d in spec.defenders]
    shape = (len(scen), len(att), len(dfn), spec.seeds)
    summaries = [rows[c.id]["summary"] for c in cells if c.id in rows and rows[c.id].get("status") == "ok"]
    check_payoffs(spec, summaries)
    extra = sorted({k for s in summaries for k in flatten(s)})
    values = {name: np.full(shape, np.nan) for name in [*FIGURES, *PAYOFFS.values()]}
    raw = {name: np.full(shape, np.nan) for name in extra}
    status = np.full(shape, "missing", dtype=object)
    rounds = max((len(((rows[c.id].get("curves") or {}).get("attacker_0") or {}).get("round", []))
                  for c in cells if c.id in rows), default=0)
    curve_arr = np.full((*shape, len(CURVE_KEYS), max(rounds, 1)), np.nan)
    errors = []
    prints: dict[str, int] = {}
    for c in cells:
        idx = c.order
        row = rows.get(c.id)
        if row is None:
            continue
        prints[row.get("fingerprint") or ""] = prints.get(row.get("fingerprint") or "", 0) + 1
        status[idx] = row.get("status", "failed")
        if row.get("status") != "ok":
            errors.append({"scenario": c.scenario, "attacker": c.attacker, "defender": c.defender,
                           "replicate": c.replicate, "error": row.get("error")})
            continue
        summary = row["summary"]
        for label, (where, key) in FIGURES.items():
            with_seat = where == "seat"
            try:
                values[label][idx] = figure(summary, "attacker", key) if with_seat else float(summary[key])
            except (KeyError, TypeError, ValueError):
                pass
        for side, label in PAYOFFS.items():
            values[label][idx] = payoff(summary, spec, side)
        for k, v in flatten(summary).items():
            raw[k][idx] = v
        seat_curves = (row.get("curves") or {}).get("attacker_0") or {}
        for ki, key in enumerate(CURVE_KEYS):
            series = [x if x is not None else math.nan for x in seat_curves.get(key, [])]
            curve_arr[(*idx, ki, slice(0, len(series)))] = series
    curves = {s: {a: curve_arr[i, j] for j, a in enumerate(att)} for i, s in enumerate(scen)}
    return LeagueData(spec, scen, att, dfn, values, raw, curves, CURVE_KEYS, status, errors, prints)


# -- tables --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """Mean and interval of one figure per (attacker, defender) in one scope (a scenario or ``pooled``)."""

    figure: str
    scope: str
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def tables(data: LeagueData, names: list[str] | None = None) -> list[Table]:
    """Mean and Student's t interval over replicates, per (attacker, defender), per scope, for each figure."""
    cfg = data.spec.rankings
    out = []
    for name in names or [*FIGURES, *PAYOFFS.values()]:
        for scope, v in data.with_pooled(name).items():
            mean, lo, hi = rk.t_interval(v, cfg.confidence)
            out.append(Table(name, scope, mean, lo, hi))
    return out


def _scope_key(scope: str) -> int:
    import hashlib

    return int(hashlib.sha256(scope.encode()).hexdigest()[:8], 16)


# -- rankings ------------------------------------------------------------------------------------
@dataclass
class Ranking:
    """One side's rankings in one scope: per method, point scores, intervals, ranks (ties share a rank) and the
    Holm-adjusted p-values of the paired tests between every two contestants (``p_pairs[k][i, j]``)."""

    side: str
    scope: str
    names: list[str]
    score: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    rank: dict[str, np.ndarray]
    p_pairs: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class HeadToHead:
    """Paired comparisons of one side's contestants on shared seeds: ``diff[i, j]`` is i's mean payoff minus j's
    (over the other side and the seeds), ``p[i, j]`` its two-sided paired-t p-value, Holm-adjusted over the pairs."""

    side: str
    names: list[str]
    diff: np.ndarray
    p: np.ndarray
    seeds: int


@dataclass
class ScopeRankings:
    scope: str
    attacker: Ranking
    defender: Ranking
    value: float                      # the zero-sum (competitive) game's value, attackers' side
    value_lo: float
    value_hi: float
    alpha_used: float | None
    exploitability: float = math.nan  # NashConv of the reported equilibrium in the general-sum game
    exploitability_lo: float = math.nan
    exploitability_hi: float = math.nan
    seeds: int = 0
    head_to_head: dict[str, HeadToHead] = field(default_factory=dict)
    sweep: dict[str, np.ndarray] = field(default_factory=dict)   # "alphas", "attacker", "defender"
    notes: list[str] = field(default_factory=list)

    def side(self, name: str) -> Ranking:
        return self.attacker if name == "attacker" else self.defender


def _game(pa: np.ndarray, pd: np.ndarray, cfg: Any, alpha: float | None = None) -> mt.Game:
    return mt.Game(pa, pd, cfg.alpha if alpha is None else alpha, cfg.population)


def _nanmean(v: np.ndarray, axis: int = -1) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(v, axis=axis)


def _solved(game: mt.Game, keys: list[str]) -> tuple[dict[str, np.ndarray], float, float]:
    """Every listed ranking's scores on ``game`` (attackers then defenders), the competitive value and the
    exploitability (NaN where the game has holes)."""
    out = {k: np.concatenate(mt.scores(mt.RANKINGS[k], game)) for k in keys}
    complete = np.isfinite(game.attacker).all() and np.isfinite(game.defender).all()
    value = game.equilibrium.value if complete else math.nan
    return out, value, mt.exploitability(game) if complete else math.nan


def rank_scope(cfg: RankingSpec, attackers: list[str], defenders: list[str], scope: str, pa_reps: np.ndarray,
               pd_reps: np.ndarray, seed: int = 0, progress: Callable[[int], None] | None = None) -> ScopeRankings:
    """Rankings of both sides from payoff arrays ``[attacker, defender, replicate]`` (module docstring);
    ``progress`` is called with 1 after each bootstrap resample."""
    n_a, n_d, reps = pa_reps.shape
    keys = method_keys()
    point_game = _game(_nanmean(pa_reps), _nanmean(pd_reps), cfg)
    point, value, exploit = _solved(point_game, keys)
    used = point_game.notes.get("alpha")
    notes = []
    if not math.isfinite(value):
        holes = int((~np.isfinite(point_game.attacker) | ~np.isfinite(point_game.defender)).sum())
        full = [mt.RANKINGS[k].title for k in keys if not mt.RANKINGS[k].complete]
        notes.append(f"{holes} attacker/defender pair(s) have no finished episode: only {', '.join(full)} "
                     f"(over the pairs that have one) are ranked")
    # per-seed scores (rankings that are means over seeds) and bootstrap samples (the others, re-solved)
    seeded = [k for k in keys if mt.RANKINGS[k].per_seed]
    solved = [k for k in keys if not mt.RANKINGS[k].per_seed]
    per_seed = {k: np.stack([np.concatenate(mt.scores(mt.RANKINGS[k], _game(pa_reps[..., r], pd_reps[..., r], cfg)))
                             for r in range(reps)]) for k in seeded}
    samples: dict[str, list[np.ndarray]] = {k: [] for k in solved}
    values, exploits = [], []
    if cfg.bootstrap > 0 and reps > 1:
        rng = np.random.default_rng([seed, _scope_key(scope), 1])
        for b in range(cfg.bootstrap):
            idx = rng.integers(0, reps, reps)
            got, v, e = _solved(_game(_nanmean(pa_reps[..., idx]), _nanmean(pd_reps[..., idx]), cfg, used), solved)
            for k in solved:
                samples[k].append(got[k])
            values.append(v)
            exploits.append(e)
            if progress is not None:
                progress(1)
    level = 1 - cfg.confidence
    lo: dict[str, np.ndarray] = {}
    hi: dict[str, np.ndarray] = {}
    pair_se: dict[str, tuple[np.ndarray, np.ndarray]] = {}     # per method: se of every pair's difference, df
    for k in keys:
        m = mt.RANKINGS[k]
        if m.per_seed:
            s = per_seed[k]                                             # [replicate, contestant]
            _, lo[k], hi[k] = rk.t_interval(s.T, cfg.confidence)
            lo[k], hi[k] = lo[k] - _nanmean(s, 0) + point[k], hi[k] - _nanmean(s, 0) + point[k]
            d = s[:, :, None] - s[:, None, :]                           # [replicate, i, j]
            n = np.isfinite(d).sum(axis=0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                se = np.nanstd(d, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1))
            pair_se[k] = (np.where(n >= 2, np.nan_to_num(se), 0.0), np.maximum(n - 1, 1))
        elif samples[k]:
            stack = np.stack(samples[k])                                # [resample, contestant]
            lo[k], hi[k] = rk.bootstrap_interval(point[k], stack, reps, cfg.confidence, m.bounds)
            se = rk.bootstrap_se(stack[:, :, None] - stack[:, None, :], reps)
            pair_se[k] = (np.nan_to_num(se), np.full(se.shape, max(reps - 1, 1)))
        else:
            lo[k], hi[k] = point[k].copy(), point[k].copy()
            size = len(point[k])
            pair_se[k] = (np.zeros((size, size)), np.ones((size, size), dtype=int))
        lo[k], hi[k] = np.fmin(lo[k], point[k]), np.fmax(hi[k], point[k])
    value_lo = value_hi = value
    ex_lo = ex_hi = exploit
    if values and math.isfinite(value):
        value_lo, value_hi = rk.bias_aware_interval(value, np.array(values), reps, cfg.confidence)
        ex_lo, ex_hi = rk.bias_aware_interval(exploit, np.array(exploits), reps, cfg.confidence, (0.0, math.inf))

    def side(name: str, names: list[str], offset: int) -> Ranking:
        sl = slice(offset, offset + len(names))
        ranks, pairs = {}, {}
        for k in keys:
            m, p = mt.RANKINGS[k], point[k][sl]
            se, df = pair_se[k]
            pairs[k] = rk.pairwise_p(p[:, None] - p[None, :], se[sl, sl], df[sl, sl])
            if m.mass and samples.get(k):
                ranks[k] = rk.ranks_by_group_max(p, np.stack(samples[k])[:, sl], level)
            else:
                ranks[k] = rk.ranks_by_score(p, pairs[k], level, m.better)
        return Ranking(name, scope, names, {k: v[sl] for k, v in point.items()}, {k: v[sl] for k, v in lo.items()},
                       {k: v[sl] for k, v in hi.items()}, ranks, pairs)

    out = ScopeRankings(scope, side("attacker", attackers, 0), side("defender", defenders, n_a), value,
                        value_lo, value_hi, used, exploit, ex_lo, ex_hi, reps, notes=notes)
    out.head_to_head = {"attacker": head_to_head("attacker", attackers, pa_reps, axis=0),
                        "defender": head_to_head("defender", defenders, pd_reps, axis=1)}
    if math.isfinite(value):
        alphas = mt.default_alphas()
        sa, sd = mt.alpha_sweep(point_game, alphas)
        out.sweep = {"alphas": alphas, "attacker": sa, "defender": sd}
    return out


def head_to_head(side: str, names: list[str], payoffs: np.ndarray, axis: int) -> HeadToHead:
    """Paired tests between every two contestants of a side: per seed, the mean over the other side of their payoff
    difference (the same opponents and seeds), then Student's t over the seeds; Holm over all pairs. ``payoffs``
    is ``[attacker, defender, replicate]``; ``axis`` is the side's (0 for attackers, 1 for defenders)."""
    p = np.moveaxis(payoffs, axis, 0)                                # [contestant, opponent, replicate]
    d = _nanmean(p[:, None] - p[None, :], axis=2)                    # [i, j, replicate]
    n = np.isfinite(d).sum(axis=-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        diff = np.nanmean(d, axis=-1)
        se = np.where(n >= 2, np.nan_to_num(np.nanstd(d, axis=-1, ddof=1) / np.sqrt(np.maximum(n, 1))), np.inf)
    np.fill_diagonal(diff, 0.0)
    return HeadToHead(side, names, diff, rk.pairwise_p(diff, se, np.maximum(n - 1, 1)), payoffs.shape[-1])


def rank_all(data: LeagueData, seed: int = 0, progress: Callable[[int], None] | None = None) -> list[ScopeRankings]:
    """Rankings per scenario, then pooled (when there is more than one scenario)."""
    pa = data.with_pooled(PAYOFFS["attacker"])
    pd = data.with_pooled(PAYOFFS["defender"])
    return [rank_scope(data.spec.rankings, data.attackers, data.defenders, scope, pa[scope], pd[scope], seed,
                       progress) for scope in pa]


def rank_payoffs(attacker: np.ndarray, defender: np.ndarray, names: tuple[list[str], list[str]] | None = None,
                 seed: int = 0, **settings: Any) -> ScopeRankings:
    """Every registered ranking of one game given as payoff arrays ``[attacker, defender, replicate]`` (no league
    needed: a quick look, a test, the docs' example); ``settings`` are the spec's ``rankings:`` fields."""
    a, d = np.asarray(attacker, dtype=float), np.asarray(defender, dtype=float)
    att, dfn = names or ([f"a{i}" for i in range(a.shape[0])], [f"d{j}" for j in range(a.shape[1])])
    return rank_scope(RankingSpec(**settings), list(att), list(dfn), "game", a, d, seed)


# -- what the report must say about the verdicts --------------------------------------------------
def coverage_table() -> dict[str, Any]:
    """The measured coverage of the intervals (``league/coverage.json``, from ``benchmarks/bench_coverage.py``)."""
    try:
        text = (resources.files("extractgym.league") / "coverage.json").read_text()
    except (FileNotFoundError, OSError):
        return {}
    return json.loads(text)


def coverage_at(seeds: int, table: dict[str, Any] | None = None) -> dict[str, float | None]:
    """Per interval kind, the measured coverage at ``seeds`` (the nearest measured count at or below it; None
    where nothing was measured at so few seeds)."""
    table = coverage_table() if table is None else table
    out: dict[str, float | None] = {}
    for kind, by_seeds in (table.get("coverage") or {}).items():
        measured = sorted(int(k) for k in by_seeds)
        below = [k for k in measured if k <= seeds]
        out[kind] = by_seeds[str(below[-1])] if below else None
    return out


def seeds_needed(kind: str, target: float = COVERAGE_TARGET, table: dict[str, Any] | None = None) -> int | None:
    """The fewest measured seeds from which on coverage reaches ``target`` at every measured count, for an interval
    kind (None: no such count)."""
    table = coverage_table() if table is None else table
    by_seeds = sorted(((int(k), v) for k, v in ((table.get("coverage") or {}).get(kind) or {}).items()))
    for i, (n, _) in enumerate(by_seeds):
        if all(v >= target for _, v in by_seeds[i:]):
            return n
    return None


def coverage_warnings(seeds: int, table: dict[str, Any] | None = None) -> list[str]:
    """What the report and the CLI warn about: interval kinds whose measured coverage at ``seeds`` is under 90%."""
    table = coverage_table() if table is None else table
    out = []
    for kind, cov in coverage_at(seeds, table).items():
        need = seeds_needed(kind, table=table)
        if cov is None or cov < COVERAGE_TARGET:
            shown = "not measured" if cov is None else f"{cov:.0%}"
            out.append(f"{kind}: the nominal {int(round(100 * table.get('nominal', 0.95)))}% intervals rest on "
                       f"{seeds} seed(s), where their measured coverage is {shown}; "
                       + (f"{need} seeds give at least {COVERAGE_TARGET:.0%}" if need else
                          f"no measured seed count gave {COVERAGE_TARGET:.0%}"))
    return out


def identical_contestants(data: LeagueData) -> dict[str, list[list[str]]]:
    """Per side, groups of contestants whose payoff is the same in every cell (to 1e-9): a defence that never
    acted here plays exactly like ``none``, and the report says so."""
    out: dict[str, list[list[str]]] = {}
    for side, names, axis in (("attacker", data.attackers, 1), ("defender", data.defenders, 2)):
        v = np.moveaxis(data.values[PAYOFFS[side]], axis, 0)
        groups: list[list[int]] = []
        for i in range(len(names)):
            if not np.isfinite(v[i]).any():
                continue
            for g in groups:
                j = g[0]
                same = np.array_equal(np.isfinite(v[i]), np.isfinite(v[j])) and np.allclose(
                    v[i][np.isfinite(v[i])], v[j][np.isfinite(v[j])], rtol=0, atol=1e-9)
                if same:
                    g.append(i)
                    break
            else:
                groups.append([i])
        out[side] = [[names[i] for i in g] for g in groups if len(g) > 1]
    return out


__all__ = ["FIGURES", "PAYOFFS", "POOLED", "SIDES", "HeadToHead", "LeagueData", "Ranking", "ScopeRankings", "Table",
           "check_payoffs", "collect", "coverage_at", "coverage_table", "coverage_warnings", "figure", "flatten",
           "head_to_head", "identical_contestants", "method_keys", "payoff", "rank_all", "rank_payoffs", "rank_scope",
           "seeds_needed", "tables"]
