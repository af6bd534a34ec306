"""The league's report: one self-contained HTML file (figures inlined as PNG, no script, no CDN), PNGs and CSVs.

``OUT/report/index.html`` opens with the verdict (the best contestants of each side, what the best defences cost
their customers, and every warning: coverage, identical contestants, idle detectors, stale rows, failures), then
the contestants, the rankings with intervals and tested ranks, paired head-to-head tests, the alpha-Rank sweep,
attacker x defender heatmaps of every figure per scenario and pooled, extraction-vs-queries curves, the Pareto
plots of the customers' value share and top-1 agreement against the attacker's accuracy, failures, the spec and
the provenance. Beside it: every figure as a PNG, ``tables.csv`` (mean and interval per figure, scope, attacker
and defender), ``rankings.csv``, ``head_to_head.csv`` and ``rankings.json``; ``OUT/results.csv`` has one line per
cell (every number of its summary and both payoffs).
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from extractgym.league import analysis as an
from extractgym.league import methods as mt
from extractgym.league import verdict as vd
from extractgym.league.cells import Cell
from extractgym.league.spec import LeagueSpec, description

REPORT_DIR = "report"


def _mpl() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "figure.dpi": 90, "svg.hashsalt": "extractgym",
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _fmt(v: float, digits: int = 3) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


class Figures:
    """Saves each matplotlib figure as a PNG and keeps its base64 for inlining."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)

    def save(self, fig: Any, name: str) -> dict[str, str]:
        plt = _mpl()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
        plt.close(fig)
        data = buf.getvalue()
        (self.folder / f"{name}.png").write_bytes(data)
        return {"name": name, "file": f"{name}.png", "src": "data:image/png;base64," + base64.b64encode(data).decode()}


# -- figures -------------------------------------------------------------------------------------
def heatmap(table: an.Table, attackers: list[str], defenders: list[str], title: str) -> Any:
    plt = _mpl()
    n_a, n_d = len(attackers), len(defenders)
    fig, ax = plt.subplots(figsize=(1.0 + 1.05 * n_d, 0.9 + 0.55 * n_a))
    mean = np.asarray(table.mean, dtype=float)
    finite = mean[np.isfinite(mean)]
    vmin, vmax = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    integral = bool(finite.size) and bool(np.all(finite == np.round(finite)))       # counts: no decimals
    fmt = (lambda v, digits=3: _fmt(v, 0 if integral else digits))  # noqa: E731
    if vmin == vmax:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    im = ax.imshow(np.ma.masked_invalid(mean), cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    for i in range(n_a):
        for j in range(n_d):
            m = mean[i, j]
            if not math.isfinite(m):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=7, color="0.4")
                continue
            frac = (m - vmin) / (vmax - vmin)
            color = "black" if frac > 0.6 else "white"
            ci = (f"\n[{fmt(table.lo[i, j], 2)}, {fmt(table.hi[i, j], 2)}]"
                  if table.hi[i, j] != table.lo[i, j] else "")
            ax.text(j, i, fmt(m) + ci, ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(n_d), defenders, rotation=35, ha="right")
    ax.set_yticks(range(n_a), attackers)
    ax.set_xlabel("defender")
    ax.set_ylabel("attacker")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    return fig


def curves_figure(data: an.LeagueData) -> Any:
    """Per scenario: the attacker's accuracy and fidelity against its cumulative queries, one line per attacker
    (mean over defenders and seeds, round by round)."""
    plt = _mpl()
    n = len(data.scenarios)
    fig, axes = plt.subplots(n, 2, figsize=(10, 3.2 * n), squeeze=False)
    colors = plt.get_cmap("tab10" if len(data.attackers) <= 10 else "tab20")
    qi, keys = data.curve_keys.index("queries"), ("accuracy", "fidelity")
    for r, scenario in enumerate(data.scenarios):
        for c, key in enumerate(keys):
            ax = axes[r, c]
            ki = data.curve_keys.index(key)
            for a, name in enumerate(data.attackers):
                arr = data.curves[scenario][name]                       # [defender, replicate, key, round]
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    x = np.nanmean(arr[:, :, qi, :], axis=(0, 1))
                    y = np.nanmean(arr[:, :, ki, :], axis=(0, 1))
                ok = np.isfinite(x) & np.isfinite(y)
                if ok.any():
                    ax.plot(x[ok], y[ok], marker="o", ms=3, label=name, color=colors(a % colors.N))
            ax.set_xlabel("queries (cumulative)")
            ax.set_ylabel(key)
            ax.set_title(f"{scenario}: {key} vs queries")
            ax.grid(alpha=0.3)
        if axes[r, 1].get_legend_handles_labels()[0]:
            axes[r, 1].legend(fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    return fig


def pareto_figure(data: an.LeagueData) -> Any:
    """Per scope: each defender's benign customers' value share (top row) and top-1 agreement (bottom row) against
    the attackers' accuracy (mean over attackers and seeds); the front joins the defenders that no other beats on
    both (lower accuracy and higher value)."""
    plt = _mpl()
    acc = data.with_pooled("accuracy")
    scopes = list(acc)
    rows = ((an.VALUE, "benign value share (what customers pay for)"), (an.UTILITY, "benign top-1 agreement"))
    fig, axes = plt.subplots(2, len(scopes), figsize=(4.6 * len(scopes), 7.6), squeeze=False)
    colors = plt.get_cmap("tab10" if len(data.defenders) <= 10 else "tab20")
    for r, (figure_name, ylabel) in enumerate(rows):
        util = data.with_pooled(figure_name)
        for k, scope in enumerate(scopes):
            ax = axes[r, k]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pair_x, pair_y = np.nanmean(acc[scope], axis=-1), np.nanmean(util[scope], axis=-1)   # [att, def]
                x, y = np.nanmean(pair_x, axis=0), np.nanmean(pair_y, axis=0)
            # defenders within 2% of the axes' spans of each other share one label
            ok = np.isfinite(x) & np.isfinite(y)
            span_x = float(np.ptp(x[ok])) or 1.0 if ok.any() else 1.0
            span_y = float(np.ptp(y[ok])) or 1.0 if ok.any() else 1.0
            labels: list[tuple[float, float, list[str]]] = []
            for d, name in enumerate(data.defenders):
                ax.scatter(pair_x[:, d], pair_y[:, d], s=10, alpha=0.25, color=colors(d % colors.N))
                if ok[d]:
                    ax.scatter([x[d]], [y[d]], s=45, color=colors(d % colors.N), edgecolor="black", zorder=3)
                    near = next((lab for lab in labels if abs(lab[0] - x[d]) < 0.02 * span_x
                                 and abs(lab[1] - y[d]) < 0.02 * span_y), None)
                    if near is None:
                        labels.append((float(x[d]), float(y[d]), [name]))
                    else:
                        near[2].append(name)
            for px, py, names in labels:
                ax.annotate(", ".join(names), (px, py), fontsize=7, xytext=(4, 3), textcoords="offset points")
            front = pareto_front(x, y)
            if front:
                order = sorted(front, key=lambda d: x[d])
                ax.plot(x[order], y[order], color="black", lw=1, ls="--", marker="o", ms=11, mfc="none",
                        label="Pareto front")
                ax.legend(fontsize=7, loc="best")
            ax.axhline(vd.VALUE_FLOOR, color="0.6", lw=0.8, ls=":") if r == 0 else None
            ax.set_xlabel("attacker accuracy (lower is better for the defender)")
            ax.set_ylabel(ylabel)
            ax.set_title(scope)
            ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def pareto_front(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Indices not dominated: no other has accuracy <= and utility >= with one strictly better."""
    idx = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    return [i for i in idx if not any((x[j] <= x[i] and y[j] >= y[i]) and (x[j] < x[i] or y[j] > y[i]) for j in idx)]


def alpharank_figure(ranked: list[an.ScopeRankings]) -> Any:
    plt = _mpl()
    fig, axes = plt.subplots(2, len(ranked), figsize=(3.6 * len(ranked), 5.2), squeeze=False)
    for k, sr in enumerate(ranked):
        for r, rank in enumerate((sr.attacker, sr.defender)):
            ax = axes[r, k]
            s = rank.score["alpharank"]
            err = np.vstack([s - rank.lo["alpharank"], rank.hi["alpharank"] - s])
            ax.barh(range(len(s)), np.nan_to_num(s), xerr=np.nan_to_num(np.clip(err, 0, None)), color="#4c72b0")
            ax.set_yticks(range(len(s)), rank.names)
            ax.invert_yaxis()
            ax.set_xlim(0, 1)
            ax.set_title(f"{sr.scope}: {rank.side}s", fontsize=9)
            ax.set_xlabel("alpha-Rank mass")
    fig.tight_layout()
    return fig


def sweep_figure(sr: an.ScopeRankings) -> Any:
    """alpha-Rank masses of each side as the selection intensity alpha grows (OpenSpiel's sweep plot)."""
    plt = _mpl()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    for k, side in enumerate(an.SIDES):
        ax = axes[0, k]
        masses = sr.sweep[side]
        names = sr.side(side).names
        colors = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for c, name in enumerate(names):
            ax.plot(sr.sweep["alphas"], masses[:, c], marker="o", ms=2.5, label=name, color=colors(c % colors.N))
        if sr.alpha_used:
            ax.axvline(sr.alpha_used, color="0.5", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.set_xlabel("alpha (selection intensity, payoffs scaled to range 1)")
        ax.set_ylabel("alpha-Rank mass")
        ax.set_title(f"{sr.scope}: {side}s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", ncol=2)
    fig.tight_layout()
    return fig


# -- tables and exports --------------------------------------------------------------------------
def ranking_rows(rank: an.Ranking) -> list[dict[str, Any]]:
    """The rows of one side's rankings table, in the headline ranking's order; ``=`` marks a shared rank."""
    rows = []
    head = vd.HEADLINE if vd.HEADLINE in rank.rank else "mean"
    for i, name in enumerate(rank.names):
        row: dict[str, Any] = {"name": name, "cells": {}}
        for m in an.method_keys():
            score, lo, hi, r = rank.score[m][i], rank.lo[m][i], rank.hi[m][i], int(rank.rank[m][i])
            tied = int((rank.rank[m] == r).sum()) > 1
            row["cells"][m] = {"score": _fmt(score), "ci": (f"[{_fmt(lo)}, {_fmt(hi)}]" if hi != lo else ""),
                               "rank": f"{r}{'=' if tied else ''}" if math.isfinite(score) else "–",
                               "tied": tied}
        row["sort"] = (rank.rank[head][i], i)
        rows.append(row)
    rows.sort(key=lambda r: r["sort"])
    return rows


def head_to_head_rows(h: an.HeadToHead, level: float) -> list[dict[str, Any]]:
    """One row per contestant: its mean payoff difference against each other one, marked where the paired test
    rejects equality after Holm."""
    rows = []
    for i, name in enumerate(h.names):
        cells = []
        for j in range(len(h.names)):
            if i == j:
                cells.append({"text": "", "p": "", "cls": "self"})
                continue
            sig = h.p[i, j] < level
            cls = ("win" if h.diff[i, j] > 0 else "loss") if sig else ""
            cells.append({"text": f"{h.diff[i, j]:+.3f}", "p": f"p={h.p[i, j]:.2g}", "cls": cls})
        rows.append({"name": name, "cells": cells})
    return rows


def write_csvs(data: an.LeagueData, tabs: list[an.Table], ranked: list[an.ScopeRankings], cells: list[Cell],
               rows: dict[str, dict[str, Any]], out_dir: Path, report_dir: Path, verdict: vd.Verdict) -> None:
    with open(report_dir / "tables.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["figure", "scope", "attacker", "defender", "mean", "ci_low", "ci_high"])
        for t in tabs:
            for i, a in enumerate(data.attackers):
                for j, d in enumerate(data.defenders):
                    w.writerow([t.figure, t.scope, a, d, t.mean[i, j], t.lo[i, j], t.hi[i, j]])
    out = []
    fields = ["scope", "side", "contestant", "method", "score", "ci_low", "ci_high", "rank"]
    with open(report_dir / "rankings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for sr in ranked:
            for rank in (sr.attacker, sr.defender):
                for i, name in enumerate(rank.names):
                    for m in an.method_keys():
                        vals = [rank.score[m][i], rank.lo[m][i], rank.hi[m][i], int(rank.rank[m][i])]
                        w.writerow([sr.scope, rank.side, name, m, *vals])
                        out.append(dict(zip(fields, [sr.scope, rank.side, name, m, *vals], strict=True)))
    with open(report_dir / "head_to_head.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scope", "side", "contestant", "other", "mean_difference", "p_holm", "seeds"])
        for sr in ranked:
            for side, h in sr.head_to_head.items():
                for i, a in enumerate(h.names):
                    for j, b in enumerate(h.names):
                        if i != j:
                            w.writerow([sr.scope, side, a, b, h.diff[i, j], h.p[i, j], h.seeds])
    games = [{"scope": sr.scope, "value": sr.value, "value_ci": [sr.value_lo, sr.value_hi],
              "exploitability": sr.exploitability, "exploitability_ci": [sr.exploitability_lo, sr.exploitability_hi],
              "alpharank_alpha": sr.alpha_used, "seeds": sr.seeds, "notes": sr.notes} for sr in ranked]
    summary = {"rankings": out, "games": games,
               "verdict": {"scope": verdict.scope, "statements": verdict.statements, "warnings": verdict.warnings,
                           "best": verdict.best, "identical": verdict.identical, "acted": verdict.acted,
                           "coverage": verdict.coverage, "seeds": verdict.seeds}}
    clean = json.loads(json.dumps(summary, default=float), parse_constant=lambda c: None)
    (report_dir / "rankings.json").write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    # one line per cell of the spec: its identity, both payoffs and every number of its summary
    keys = sorted(data.raw)
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "scenario", "attacker", "defender", "replicate", "seed", "status", "error",
                    "attacker_payoff", "defender_payoff", "fingerprint", "wall_seconds", *keys])
        for c in sorted(cells, key=lambda c: c.order):
            row = rows.get(c.id)
            status = "missing" if row is None else row.get("status")
            figs = an.flatten(row["summary"]) if row is not None and status == "ok" else {}
            pay = [data.values[an.PAYOFFS[s]][c.order] for s in an.SIDES]
            wall = (row or {}).get("provenance", {}).get("wall_seconds")
            w.writerow([c.id, c.scenario, c.attacker, c.defender, c.replicate, c.seed, status,
                        (row or {}).get("error") or "", *("" if not math.isfinite(p) else p for p in pay),
                        (row or {}).get("fingerprint") or "", "" if wall is None else wall,
                        *(figs.get(k, "") for k in keys)])


def provenance(rows: dict[str, dict[str, Any]], cells: list[Cell]) -> list[tuple[str, str]]:
    mine = [rows[c.id] for c in cells if c.id in rows]
    provs = [r.get("provenance", {}) for r in mine]

    def values(key: str) -> str:
        found = sorted({str(p.get(key)) for p in provs if p.get(key) is not None})
        return ", ".join(found) if found else "–"

    prints: dict[str, int] = {}
    for r in mine:
        prints[r.get("fingerprint") or "none"] = prints.get(r.get("fingerprint") or "none", 0) + 1
    walls = [p.get("wall_seconds") or 0.0 for p in provs]
    cpus = [p.get("cpu_seconds") for p in provs if p.get("cpu_seconds") is not None]
    starts = sorted(p.get("started") for p in provs if p.get("started"))
    return [("cells in the spec", str(len({c.id for c in cells}))), ("rows found", str(len(mine))),
            ("failed", str(sum(r.get("status") != "ok" for r in mine))),
            ("code fingerprint (rows)", ", ".join(f"{k} ({n})" for k, n in sorted(prints.items())) or "–"),
            ("extractgym", values("extractgym")), ("git commit", values("git_sha")), ("python", values("python")),
            ("torch", values("torch")), ("numpy", values("numpy")), ("gymnasium", values("gymnasium")),
            ("platform", values("platform")), ("backend", values("backend")),
            ("workers seen", str(len({p.get("worker") for p in provs}))),
            ("episode wall time, sum over cells", f"{sum(walls):.1f} s"),
            ("CPU time, sum over cells", f"{sum(cpus):.1f} s" if cpus else "–"),
            ("first / last cell started (UTC)", f"{starts[0]} / {starts[-1]}" if starts else "–"),
            ("report written (UTC)", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))]


def contestants(spec: LeagueSpec) -> list[dict[str, str]]:
    """Who played: name, side, body, description, and what it was given (params, brain, tactics)."""
    out = []
    for side, roster in (("attacker", spec.attackers), ("defender", spec.defenders)):
        for c in roster:
            given = {k: v for k, v in (("params", c.params), ("brain", c.brain),
                                        ("tactics", getattr(c, "tactics", {}))) if v not in ({}, "preset", None)}
            out.append({"side": side, "name": c.name, "body": c.body, "description": description(side, c),
                        "given": json.dumps(given, sort_keys=True, default=str) if given else ""})
    return out


def coverage_rows(seeds: int) -> list[dict[str, str]]:
    """The measured coverage of each interval kind at 3, 5 and 10 seeds (and at this league's), for the report."""
    table = an.coverage_table()
    rows = []
    for kind, by_seeds in (table.get("coverage") or {}).items():
        here = an.coverage_at(seeds, table).get(kind)
        rows.append({"kind": kind, "here": "–" if here is None else f"{here:.0%}",
                     "by": {k: f"{v:.0%}" for k, v in sorted(by_seeds.items(), key=lambda kv: int(kv[0]))},
                     "low": here is None or here < an.COVERAGE_TARGET})
    return rows


# -- the report ----------------------------------------------------------------------------------
def write_report(spec: LeagueSpec, raw: dict[str, Any], cells: list[Cell], rows: dict[str, dict[str, Any]],
                 out_dir: Path, progress: Callable[[str, int, int], None] | None = None,
                 fingerprint: str | None = None) -> Path:
    """Every output of the report from the rows of the spec's cells; returns ``OUT/report/index.html``.

    ``progress(stage, done, total)`` is called as the bootstrap resamples and the figures are done (a CLI's
    progress bar); ``fingerprint`` is the current code's, to say when every row comes from other code.
    """
    import jinja2

    report_dir = out_dir / REPORT_DIR
    figs = Figures(report_dir)
    data = an.collect(spec, cells, rows)
    tabs = an.tables(data)
    scopes = list(data.with_pooled("accuracy"))
    total = spec.rankings.bootstrap * len(scopes) if spec.seeds > 1 else 0
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress("bootstrap", done, total)

    ranked = an.rank_all(data, seed=spec.seed, progress=tick)
    verdict = vd.judge(data, ranked, fingerprint)
    write_csvs(data, tabs, ranked, cells, rows, out_dir, report_dir, verdict)
    names = [*an.PAYOFFS.values(), *an.FIGURES]
    n_figs, made = len(names) + 5, 0

    def figure_done() -> None:
        nonlocal made
        made += 1
        if progress is not None:
            progress("figures", made, n_figs)

    heatmaps = []
    scope = scopes[-1]              # pooled, or the only scenario: shown first, the scenarios' own maps folded
    for name in names:
        images = {t.scope: figs.save(heatmap(t, data.attackers, data.defenders, f"{name} ({t.scope})"),
                                     f"heatmap-{_slug(name)}-{_slug(t.scope)}") for t in tabs if t.figure == name}
        heatmaps.append({"figure": name, "main": images[scope],
                         "scenarios": [img for s, img in images.items() if s != scope]})
        figure_done()
    # every other number of the summaries that differs between cells, in the same scope
    others = []
    shown = {k for _, k in an.FIGURES.values()} | {"seed", "wall_seconds"}
    for key in sorted(data.raw):
        v = data.with_pooled(key)[scope]
        finite = v[np.isfinite(v)]
        if key in shown or finite.size == 0 or np.ptp(finite) == 0:
            continue
        t = next(x for x in an.tables(data, [key]) if x.scope == scope)
        others.append(figs.save(heatmap(t, data.attackers, data.defenders, f"{key} ({scope})"),
                                f"other-{_slug(key)}-{_slug(scope)}"))
    main = ranked[-1]
    level = 1 - spec.rankings.confidence
    context = {
        "spec": spec, "n_cells": len({c.id for c in cells}), "scopes": scopes,
        "payoff": {s: getattr(spec.payoff, s) for s in an.SIDES},
        "main_scope": scope, "verdict": verdict, "contestants": contestants(spec),
        "rankings": [{"scope": sr.scope, "value": _fmt(sr.value), "value_ci": f"[{_fmt(sr.value_lo)}, "
                      f"{_fmt(sr.value_hi)}]", "exploit": _fmt(sr.exploitability),
                      "exploit_ci": f"[{_fmt(sr.exploitability_lo)}, {_fmt(sr.exploitability_hi)}]",
                      "alpha": sr.alpha_used, "notes": sr.notes, "seeds": sr.seeds,
                      "sides": [{"side": r.side, "rows": ranking_rows(r)} for r in (sr.attacker, sr.defender)]}
                     for sr in [*ranked[-1:], *ranked[:-1]]],          # pooled first
        "methods": [(k, mt.RANKINGS[k].title, mt.RANKINGS[k].doc, mt.RANKINGS[k].better) for k in an.method_keys()],
        "head_to_head": [{"side": side, "rows": head_to_head_rows(h, level), "names": h.names, "seeds": h.seeds}
                         for side, h in main.head_to_head.items()],
        "alpharank_img": figs.save(alpharank_figure(ranked), "alpharank"),
        "sweep_img": figs.save(sweep_figure(main), "alpharank-sweep") if main.sweep else None,
        "heatmaps": heatmaps, "others": others,
        "curves": figs.save(curves_figure(data), "curves"),
        "pareto": figs.save(pareto_figure(data), "pareto"),
        "errors": data.errors, "missing": int((data.status == "missing").sum()),
        "spec_yaml": yaml.safe_dump(raw, sort_keys=False), "provenance": provenance(rows, cells),
        "confidence": int(round(spec.rankings.confidence * 100)), "bootstrap": spec.rankings.bootstrap,
        "coverage": coverage_rows(verdict.seeds), "coverage_meta": an.coverage_table(),
        "acted": [{"name": d, "by": verdict.acted.get(d, {}), "detector": d in vd.detectors(spec)}
                  for d in data.defenders],
    }
    for _ in range(4):
        figure_done()
    env = jinja2.Environment(loader=jinja2.PackageLoader("extractgym.league", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    path = report_dir / "index.html"
    path.write_text(env.get_template("report.html").render(**context))
    figure_done()
    return path
