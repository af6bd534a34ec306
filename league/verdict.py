"""The verdict: what a tournament's rankings say, in sentences, with every reason not to trust them beside them.

:func:`judge` reads the league's arrays and rankings and states, for the main scope (pooled, or the only
scenario), the best contestants of each side by the headline ranking (Nash average), what the best defences
cost their benign customers (the value share they keep, beside top-1 agreement and false positives), and the
warnings: intervals resting on fewer seeds than give 90% measured coverage, contestants whose payoff equals
another's in every cell (a defence that never acted here), detectors that never banned or refused anyone, rows
played by other code (stale fingerprints), failed or missing cells.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from extractgym.league import analysis as an
from extractgym.league import methods as mt

HEADLINE = "nash_avg"
VALUE_FLOOR = 0.5   # a defence whose customers keep less than this share of what they pay for is called out


@dataclass
class Verdict:
    """Sentences (``statements``, per side) and ``warnings``, plus the facts behind them for tables and tests."""

    scope: str
    statements: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    best: dict[str, list[str]] = field(default_factory=dict)
    acted: dict[str, dict[str, int]] = field(default_factory=dict)   # defender -> scenario -> cells it acted in
    identical: dict[str, list[list[str]]] = field(default_factory=dict)
    coverage: dict[str, float | None] = field(default_factory=dict)
    seeds: int = 0


def _mean(v: np.ndarray, axis: Any = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(v, axis=axis)


def detectors(spec: Any) -> list[str]:
    """The league's defenders whose body screens queries (bans or refuses) rather than only shaping answers."""
    from extractgym.agents.base import DefenderBase
    from extractgym.agents.registry import DEFENDERS, body_class

    out = []
    for d in spec.defenders:
        entry = DEFENDERS.get(d.body)
        if entry is not None and getattr(body_class(entry), "screen", None) is not DefenderBase.screen:
            out.append(d.name)
    return out


def acted(data: an.LeagueData) -> dict[str, dict[str, int]]:
    """Per defender and scenario, the finished cells in which it banned or refused anyone (an attacker's account,
    a benign customer's account, a benign customer's query)."""
    signs = [data.raw.get(k) for k in ("accounts_banned", "benign_accounts_banned", "benign_rejected")]
    hit = np.zeros(data.status.shape, dtype=bool)
    for v in signs:
        if v is not None:
            hit |= np.nan_to_num(v) > 0
    hit &= data.status == "ok"
    return {d: {s: int(hit[i, :, j].sum()) for i, s in enumerate(data.scenarios)} for j, d in enumerate(data.defenders)}


def _fmt(v: float) -> str:
    return "–" if v is None or not math.isfinite(v) else f"{v:.3f}"


def judge(data: an.LeagueData, ranked: list[an.ScopeRankings], current_fingerprint: str | None = None) -> Verdict:
    """The verdict on the main scope (module docstring)."""
    main = ranked[-1]
    scope = main.scope
    # what the intervals rest on: the seeds of the weakest pair (a failed cell leaves its pair fewer)
    out = Verdict(scope, seeds=min(main.seeds, data.seeds) if data.status.size else main.seeds)
    title = mt.RANKINGS[HEADLINE].title if HEADLINE in mt.RANKINGS else HEADLINE
    method = HEADLINE if HEADLINE in main.attacker.score else "mean"
    for side in an.SIDES:
        r = main.side(side)
        if method not in r.rank or not np.isfinite(r.score[method]).any():
            continue
        top = [i for i in np.flatnonzero(r.rank[method] == r.rank[method][np.isfinite(r.score[method])].min())]
        names = [r.names[i] for i in top]
        out.best[side] = names
        shown = ", ".join(f"{r.names[i]} ({_fmt(r.score[method][i])} [{_fmt(r.lo[method][i])}, "
                          f"{_fmt(r.hi[method][i])}])" for i in top)
        tie = " (tied: the paired tests cannot tell them apart)" if len(top) > 1 else ""
        out.statements.append(f"Best {side}{'s' if len(top) > 1 else ''} by {title} ({scope}): {shown}{tie}.")
    # what the best defences cost their customers, and what the attackers got against them
    value, util = data.with_pooled(an.VALUE)[scope], data.with_pooled(an.UTILITY)[scope]
    fpr, acc = data.with_pooled("false-positive rate")[scope], data.with_pooled("accuracy")[scope]
    best = out.best.get("defender", [])
    head = main.defender.score.get(method)
    top = max(best, key=lambda n: head[data.defenders.index(n)]) if best and head is not None else None
    for name in best:
        j = data.defenders.index(name)
        v, u, f, a = (float(_mean(x[:, j])) for x in (value, util, fpr, acc))
        out.statements.append(f"{name}: its benign customers keep {_fmt(v)} of the value they pay for (top-1 "
                              f"agreement {_fmt(u)}), {_fmt(f)} of benign accounts banned; attackers' accuracy "
                              f"against it {_fmt(a)}.")
        if not (math.isfinite(v) and v < VALUE_FLOOR):
            continue
        if name == top:
            out.warnings.append(f"{name} ranks first while leaving its customers {_fmt(v)} of the value they pay "
                                f"for (under half): its payoff ({_payoff_text(data)}) still puts it first; judge "
                                f"it on the Pareto plot before deploying it.")
        else:
            out.warnings.append(f"{name} shares the first rank only because the paired tests cannot tell it from "
                                f"{top} at {main.seeds} seeds; it leaves its customers {_fmt(v)} of the value they "
                                f"pay for (under half).")
    for name in out.best.get("attacker", []):
        i = data.attackers.index(name)
        a, m = float(_mean(acc[i])), float(_mean(data.with_pooled("money")[scope][i]))
        out.statements.append(f"{name}: surrogate accuracy {_fmt(a)} on average over the defenders, money spent "
                              f"{_fmt(m)}.")
    if math.isfinite(main.exploitability) and main.exploitability > 1e-6:
        out.statements.append(f"Game value (competitive part, attackers' side) {_fmt(main.value)} "
                              f"[{_fmt(main.value_lo)}, {_fmt(main.value_hi)}]; in the game as played the reported "
                              f"equilibrium is exploitable by {_fmt(main.exploitability)} "
                              f"[{_fmt(main.exploitability_lo)}, {_fmt(main.exploitability_hi)}] (NashConv).")
    # reasons not to trust it
    out.coverage = an.coverage_at(out.seeds)
    out.warnings += an.coverage_warnings(out.seeds)
    out.identical = an.identical_contestants(data)
    out.acted = acted(data)
    for side, groups in out.identical.items():
        for g in groups:
            if side == "defender":
                busy = [f"{d} banned or refused in {sum(out.acted[d].values())} cell(s)" for d in g
                        if sum(out.acted[d].values())]
                what = (f"{'; '.join(busy)}, which changed nothing the defender's payoff counts"
                        if busy else "none of them acted here")
            else:
                what = "they play exactly alike here"
            out.warnings.append(f"{side}s {', '.join(g)}: payoff identical in every cell: {what}.")
    idle = [d for d in detectors(data.spec) if not sum(out.acted[d].values())]
    if idle:
        out.warnings.append(f"detector(s) {', '.join(idle)} never banned or refused anyone in this league: their "
                            f"rankings say nothing about detection.")
    prints = {k: n for k, n in data.fingerprints.items()}
    if len(prints) > 1:
        shown = ", ".join(f"{k or 'none'}: {n} rows" for k, n in sorted(prints.items(), key=lambda kv: -kv[1]))
        out.warnings.append(f"rows from {len(prints)} code fingerprints are mixed here ({shown}): the cells were not "
                            f"all played by the same code (--reuse-stale).")
    elif current_fingerprint and prints and current_fingerprint not in prints:
        out.warnings.append(f"every row was played by other code than this (fingerprint {next(iter(prints)) or 'none'}"
                            f" vs {current_fingerprint}): the report is consistent, but replaying would change it.")
    failed, missing = int((data.status == "failed").sum()), int((data.status == "missing").sum())
    if failed or missing:
        out.warnings.append(f"{failed} failed and {missing} missing cell(s): the rankings rest on the others.")
    return out


def _payoff_text(data: an.LeagueData) -> str:
    how = data.spec.payoff.defender
    if isinstance(how, dict):
        return " ".join(f"{w:+g} {k}" for k, w in how.items())
    return str(how)


__all__ = ["HEADLINE", "VALUE_FLOOR", "Verdict", "acted", "detectors", "judge"]
