"""The league's report: one self-contained HTML file (figures inlined as PNG, no script, no CDN), PNGs and CSVs.

``OUT/report/index.html`` holds the rankings with intervals and tie marks, attacker x defender heatmaps of every
figure per scenario and pooled, extraction-vs-queries curves per attacker, the Pareto plot of the defender's
benign utility against the attacker's accuracy, failures, the spec and the provenance. Beside it: every figure
as a PNG, ``tables.csv`` (mean and interval per figure, scope, attacker and defender), ``rankings.csv`` and
``rankings.json``; ``OUT/results.csv`` has one line per cell (every number of its summary and both payoffs).
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
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from extractgym.league import analysis as an
from extractgym.league.cells import Cell
from extractgym.league.spec import LeagueSpec

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
    """Per scope: each defender's benign utility against the attackers' accuracy (mean over attackers and seeds);
    the front joins the defenders that no other beats on both (lower accuracy and higher utility)."""
    plt = _mpl()
    acc, util = data.with_pooled("accuracy"), data.with_pooled("benign utility")
    scopes = list(acc)
    fig, axes = plt.subplots(1, len(scopes), figsize=(4.6 * len(scopes), 4.0), squeeze=False)
    colors = plt.get_cmap("tab10" if len(data.defenders) <= 10 else "tab20")
    for k, scope in enumerate(scopes):
        ax = axes[0, k]
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
        ax.set_xlabel("attacker accuracy (lower is better for the defender)")
        ax.set_ylabel("benign utility")
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


# -- tables and exports --------------------------------------------------------------------------
def ranking_rows(rank: an.Ranking) -> list[dict[str, Any]]:
    """The rows of one side's rankings table, best mean payoff first; ``=`` marks a shared rank."""
    rows = []
    for i, name in enumerate(rank.names):
        row: dict[str, Any] = {"name": name, "cells": {}}
        for m in an.METHODS:
            score, lo, hi, r = rank.score[m][i], rank.lo[m][i], rank.hi[m][i], int(rank.rank[m][i])
            tied = int((rank.rank[m] == r).sum()) > 1
            row["cells"][m] = {"score": _fmt(score), "ci": (f"[{_fmt(lo)}, {_fmt(hi)}]" if hi != lo else ""),
                               "rank": f"{r}{'=' if tied else ''}" if math.isfinite(score) else "–",
                               "tied": tied}
        row["sort"] = (rank.rank["mean"][i], -np.nan_to_num(rank.score["mean"][i], nan=-np.inf))
        rows.append(row)
    rows.sort(key=lambda r: r["sort"])
    return rows


def write_csvs(data: an.LeagueData, tabs: list[an.Table], ranked: list[an.ScopeRankings], cells: list[Cell],
               rows: dict[str, dict[str, Any]], out_dir: Path, report_dir: Path) -> None:
    with open(report_dir / "tables.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["figure", "scope", "attacker", "defender", "mean", "ci_low", "ci_high"])
        for t in tabs:
            for i, a in enumerate(data.attackers):
                for j, d in enumerate(data.defenders):
                    w.writerow([t.figure, t.scope, a, d, t.mean[i, j], t.lo[i, j], t.hi[i, j]])
    out = []
    with open(report_dir / "rankings.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scope", "side", "contestant", "method", "score", "ci_low", "ci_high", "rank"])
        for sr in ranked:
            for rank in (sr.attacker, sr.defender):
                for i, name in enumerate(rank.names):
                    for m in an.METHODS:
                        vals = [rank.score[m][i], rank.lo[m][i], rank.hi[m][i], int(rank.rank[m][i])]
                        w.writerow([sr.scope, rank.side, name, m, *vals])
                        out.append(dict(zip(["scope", "side", "contestant", "method", "score", "ci_low", "ci_high",
                                             "rank"], [sr.scope, rank.side, name, m, *vals])))
    games = [{"scope": sr.scope, "value": sr.value, "value_ci": [sr.value_lo, sr.value_hi],
              "alpharank_alpha": sr.alpha_used, "notes": sr.notes} for sr in ranked]
    clean = json.loads(json.dumps({"rankings": out, "games": games}, default=float),
                       parse_constant=lambda c: None)
    (report_dir / "rankings.json").write_text(json.dumps(clean, indent=1, allow_nan=False) + "\n")
    # one line per cell of the spec: its identity, both payoffs and every number of its summary
    keys = sorted(data.raw)
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "scenario", "attacker", "defender", "replicate", "seed", "status", "error",
                    "attacker_payoff", "defender_payoff", "wall_seconds", *keys])
        for c in sorted(cells, key=lambda c: c.order):
            row = rows.get(c.id)
            status = "missing" if row is None else row.get("status")
            figs = an.flatten(row["summary"]) if row is not None and status == "ok" else {}
            pay = [data.values[an.PAYOFFS[s]][c.order] for s in an.SIDES]
            wall = (row or {}).get("provenance", {}).get("wall_seconds")
            w.writerow([c.id, c.scenario, c.attacker, c.defender, c.replicate, c.seed, status,
                        (row or {}).get("error") or "", *("" if not math.isfinite(p) else p for p in pay),
                        "" if wall is None else wall, *(figs.get(k, "") for k in keys)])


def provenance(rows: dict[str, dict[str, Any]], cells: list[Cell]) -> list[tuple[str, str]]:
    mine = [rows[c.id] for c in cells if c.id in rows]
    provs = [r.get("provenance", {}) for r in mine]

    def values(key: str) -> str:
        found = sorted({str(p.get(key)) for p in provs if p.get(key) is not None})
        return ", ".join(found) if found else "–"

    walls = [p.get("wall_seconds") or 0.0 for p in provs]
    starts = sorted(p.get("started") for p in provs if p.get("started"))
    return [("cells in the spec", str(len({c.id for c in cells}))), ("rows found", str(len(mine))),
            ("failed", str(sum(r.get("status") != "ok" for r in mine))),
            ("extractgym", values("extractgym")), ("git commit", values("git_sha")), ("python", values("python")),
            ("torch", values("torch")), ("numpy", values("numpy")), ("gymnasium", values("gymnasium")),
            ("platform", values("platform")), ("backend", values("backend")),
            ("workers seen", str(len({p.get("worker") for p in provs}))),
            ("episode wall time, sum over cells", f"{sum(walls):.1f} s"),
            ("first / last cell started (UTC)", f"{starts[0]} / {starts[-1]}" if starts else "–"),
            ("report written (UTC)", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))]


# -- the report ----------------------------------------------------------------------------------
def write_report(spec: LeagueSpec, raw: dict[str, Any], cells: list[Cell], rows: dict[str, dict[str, Any]],
                 out_dir: Path) -> Path:
    """Every output of the report from the rows of the spec's cells; returns ``OUT/report/index.html``."""
    import jinja2

    report_dir = out_dir / REPORT_DIR
    figs = Figures(report_dir)
    data = an.collect(spec, cells, rows)
    tabs = an.tables(data, seed=spec.seed)
    ranked = an.rank_all(data, seed=spec.seed)
    write_csvs(data, tabs, ranked, cells, rows, out_dir, report_dir)

    scopes = list(data.with_pooled("accuracy"))
    heatmaps = []
    scope = scopes[-1]              # pooled, or the only scenario: shown first, the scenarios' own maps folded
    for name in [*an.PAYOFFS.values(), *an.FIGURES]:
        images = {t.scope: figs.save(heatmap(t, data.attackers, data.defenders, f"{name} ({t.scope})"),
                                     f"heatmap-{_slug(name)}-{_slug(t.scope)}") for t in tabs if t.figure == name}
        heatmaps.append({"figure": name, "main": images[scope],
                         "scenarios": [img for s, img in images.items() if s != scope]})
    # every other number of the summaries that differs between cells, in the same scope
    others = []
    shown = {k for _, k in an.FIGURES.values()} | {"seed", "wall_seconds"}
    for key in sorted(data.raw):
        v = data.with_pooled(key)[scope]
        finite = v[np.isfinite(v)]
        if key in shown or finite.size == 0 or np.ptp(finite) == 0:
            continue
        t = an.tables(data, [key], seed=spec.seed)
        t = next(x for x in t if x.scope == scope)
        others.append(figs.save(heatmap(t, data.attackers, data.defenders, f"{key} ({scope})"),
                                f"other-{_slug(key)}-{_slug(scope)}"))
    context = {
        "spec": spec, "n_cells": len({c.id for c in cells}), "scopes": scopes,
        "payoff": {s: getattr(spec.payoff, s) for s in an.SIDES},
        "main_scope": scope,
        "rankings": [{"scope": sr.scope, "value": _fmt(sr.value), "value_ci": f"[{_fmt(sr.value_lo)}, "
                      f"{_fmt(sr.value_hi)}]", "alpha": sr.alpha_used, "notes": sr.notes,
                      "sides": [{"side": r.side, "rows": ranking_rows(r)} for r in (sr.attacker, sr.defender)]}
                     for sr in [*ranked[-1:], *ranked[:-1]]],          # pooled first
        "methods": [(m, an.METHOD_TITLES[m]) for m in an.METHODS],
        "alpharank_img": figs.save(alpharank_figure(ranked), "alpharank"),
        "heatmaps": heatmaps, "others": others,
        "curves": figs.save(curves_figure(data), "curves"),
        "pareto": figs.save(pareto_figure(data), "pareto"),
        "errors": data.errors, "missing": int((data.status == "missing").sum()),
        "spec_yaml": yaml.safe_dump(raw, sort_keys=False), "provenance": provenance(rows, cells),
        "confidence": int(round(spec.rankings.confidence * 100)), "bootstrap": spec.rankings.bootstrap,
    }
    env = jinja2.Environment(loader=jinja2.PackageLoader("extractgym.league", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)
    path = report_dir / "index.html"
    path.write_text(env.get_template("report.html").render(**context))
    return path
