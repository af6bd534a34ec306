"""From rows to payoff tables and rankings: per scenario and pooled, with bootstrap confidence intervals.

Payoffs are computed here from the stored figures, not in the workers, so changing a spec's ``payoff`` needs no
episode: ``extractgym tournament-report DIR`` recomputes everything from ``results.jsonl``.

Confidence intervals resample the seeds (replicates) with replacement, the same resample for every cell of a
scenario, since all pairs of a replicate played the same seed (paired comparisons). Pooled figures average
the scenarios' values replicate by replicate.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractgym.league import rankings as rk
from extractgym.league.cells import Cell
from extractgym.league.spec import LeagueError, LeagueSpec

POOLED = "pooled"
SIDES = ("attacker", "defender")
# the figures of the report's tables: label -> (where, key); "seat" reads attacker seat 0's own figure first
FIGURES: dict[str, tuple[str, str]] = {
    "accuracy": ("seat", "accuracy"),
    "fidelity": ("seat", "fidelity"),
    "queries": ("seat", "queries"),
    "money": ("seat", "cost"),
    "accounts burned": ("seat", "accounts_banned"),
    "benign utility": ("episode", "utility"),
    "false-positive rate": ("episode", "false_positive_rate"),
}
PAYOFFS = {"attacker": "attacker payoff", "defender": "defender payoff"}
METHODS = ("mean", "worst", "nash", "nash_avg", "alpharank")
METHOD_TITLES = {"mean": "mean payoff", "worst": "worst case", "nash": "Nash weight",
                 "nash_avg": "Nash average", "alpharank": "alpha-Rank mass"}


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

    def with_pooled(self, name: str) -> dict[str, np.ndarray]:
        """``values[name]`` per scenario label, plus ``pooled`` (the scenarios' mean, replicate by replicate)."""
        v = self.values[name] if name in self.values else self.raw[name]
        out = {s: v[i] for i, s in enumerate(self.scenarios)}
        if len(self.scenarios) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[POOLED] = np.nanmean(v, axis=0)
        return out


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
    for c in cells:
        idx = c.order
        row = rows.get(c.id)
        if row is None:
            continue
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
    return LeagueData(spec, scen, att, dfn, values, raw, curves, CURVE_KEYS, status, errors)


# -- tables --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    """Mean and interval of one figure per (attacker, defender) in one scope (a scenario or ``pooled``)."""

    figure: str
    scope: str
    mean: np.ndarray
    lo: np.ndarray
    hi: np.ndarray


def tables(data: LeagueData, names: list[str] | None = None, seed: int = 0) -> list[Table]:
    """Mean ± bootstrap interval over replicates, per (attacker, defender), per scope, for each figure."""
    cfg = data.spec.rankings
    out = []
    for name in names or [*FIGURES, *PAYOFFS.values()]:
        for scope, v in data.with_pooled(name).items():
            rng = np.random.default_rng([seed, _scope_key(scope)])
            mean, lo, hi = rk.bootstrap_means(v, cfg.bootstrap, rng, cfg.confidence)
            out.append(Table(name, scope, mean, lo, hi))
    return out


def _scope_key(scope: str) -> int:
    import hashlib

    return int(hashlib.sha256(scope.encode()).hexdigest()[:8], 16)


# -- rankings ------------------------------------------------------------------------------------
@dataclass
class Ranking:
    """One side's rankings in one scope: per method, point scores, intervals and ranks (ties share a rank)."""

    side: str
    scope: str
    names: list[str]
    score: dict[str, np.ndarray]
    lo: dict[str, np.ndarray]
    hi: dict[str, np.ndarray]
    rank: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)


@dataclass
class ScopeRankings:
    scope: str
    attacker: Ranking
    defender: Ranking
    value: float                      # the zero-sum (competitive) game's value, attackers' side
    value_lo: float
    value_hi: float
    alpha_used: float | None
    notes: list[str] = field(default_factory=list)


def _scores(pa: np.ndarray, pd: np.ndarray, alpha: float, m: int) -> tuple[dict[str, np.ndarray], float, float]:
    """Every method's scores for attackers (first half) and defenders (second half), the game value, alpha used."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {"mean": np.concatenate([pa.mean(axis=1), pd.mean(axis=0)]),
               "worst": np.concatenate([pa.min(axis=1), pd.min(axis=0)])}
    comp = rk.competitive_part(pa, pd)
    # the equilibrium's weights: the maximum-entropy one (an LP for the value, then the unique most spread-out
    # optimal mixture), so contestants that play alike share weight instead of the LP's arbitrary pick
    skill_a, skill_d, eq = rk.nash_averaging(comp)
    out["nash"] = np.concatenate([eq.row, eq.col])
    out["nash_avg"] = np.concatenate([skill_a, skill_d])
    try:
        ma, md, used = rk.alpharank_auto(pa, pd, alpha, m)
        out["alpharank"] = np.concatenate([ma, md])
    except ValueError:
        out["alpharank"] = np.full(sum(pa.shape), np.nan)
        used = math.nan
    return out, eq.value, used


def rank_scope(data: LeagueData, scope: str, pa_reps: np.ndarray, pd_reps: np.ndarray, seed: int = 0
               ) -> ScopeRankings:
    """Rankings of both sides from payoff arrays ``[attacker, defender, replicate]``."""
    cfg = data.spec.rankings
    n_a = pa_reps.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        pa, pd = np.nanmean(pa_reps, axis=-1), np.nanmean(pd_reps, axis=-1)
    notes = []
    if not (np.isfinite(pa).all() and np.isfinite(pd).all()):
        holes = int((~np.isfinite(pa) | ~np.isfinite(pd)).sum())
        notes.append(f"{holes} attacker/defender pair(s) have no finished episode: only mean and worst case "
                     f"(over the pairs that have one) are ranked")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            point = {"mean": np.concatenate([np.nanmean(pa, axis=1), np.nanmean(pd, axis=0)]),
                     "worst": np.concatenate([np.nanmin(pa, axis=1), np.nanmin(pd, axis=0)])}
        for k in ("nash", "nash_avg", "alpharank"):
            point[k] = np.full(n_a + pa.shape[1], np.nan)
        value, used, samples = math.nan, None, []
    else:
        point, value, used = _scores(pa, pd, cfg.alpha, cfg.population)
        samples = []
        reps = pa_reps.shape[-1]
        if cfg.bootstrap > 0 and reps > 1:
            rng = np.random.default_rng([seed, _scope_key(scope), 1])
            alpha = used if used and math.isfinite(used) else cfg.alpha
            for _ in range(cfg.bootstrap):
                idx = rng.integers(0, reps, reps)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    a_b, d_b = np.nanmean(pa_reps[..., idx], axis=-1), np.nanmean(pd_reps[..., idx], axis=-1)
                if np.isfinite(a_b).all() and np.isfinite(d_b).all():
                    samples.append(_scores(a_b, d_b, alpha, cfg.population)[:2])
    lo, hi, value_lo, value_hi = {}, {}, value, value
    for k, v in point.items():
        if samples:
            stack = np.stack([s[0][k] for s in samples])
            lo[k], hi[k] = rk.percentile_interval(stack, cfg.confidence)
        else:
            lo[k], hi[k] = v.copy(), v.copy()
    if samples:
        vlo, vhi = rk.percentile_interval(np.array([s[1] for s in samples]), cfg.confidence)
        value_lo, value_hi = float(vlo), float(vhi)

    def side(name: str, names: list[str], sl: slice) -> Ranking:
        ranks = {}
        for k in point:
            p, lo_k, hi_k = point[k][sl], lo[k][sl], hi[k][sl]
            # an interval never excludes its own point estimate (a few resamples can miss it)
            lo_k, hi_k = np.fmin(lo_k, p), np.fmax(hi_k, p)
            lo[k][sl], hi[k][sl] = lo_k, hi_k
            ranks[k] = rk.ranks_with_ties(np.nan_to_num(lo_k, nan=-np.inf), np.nan_to_num(hi_k, nan=-np.inf),
                                          tol=1e-9 * max(1.0, float(np.nanmax(np.abs(p), initial=0.0))))
        return Ranking(name, scope, names, {k: v[sl] for k, v in point.items()}, {k: v[sl] for k, v in lo.items()},
                       {k: v[sl] for k, v in hi.items()}, ranks)

    return ScopeRankings(scope, side("attacker", data.attackers, slice(0, n_a)),
                         side("defender", data.defenders, slice(n_a, None)), value, value_lo, value_hi,
                         used if used is None or math.isfinite(used) else None, notes)


def rank_all(data: LeagueData, seed: int = 0) -> list[ScopeRankings]:
    """Rankings per scenario, then pooled (when there is more than one scenario)."""
    pa = data.with_pooled(PAYOFFS["attacker"])
    pd = data.with_pooled(PAYOFFS["defender"])
    return [rank_scope(data, scope, pa[scope], pd[scope], seed) for scope in pa]
