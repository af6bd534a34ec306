"""The league's life cycle as plain functions (the CLI and the benchmark call these).

``prepare`` validates a spec and expands its cells, ``save_spec``/``load_saved`` keep the spec beside the results
(so ``extractgym tournament-report DIR`` needs nothing else), ``play`` runs the missing cells and
``report`` writes the CSV exports and the HTML report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from extractgym.league.cells import Cell, expand
from extractgym.league.runner import RESULTS, ResultsFile, RunStats, run_league
from extractgym.league.spec import LeagueError, LeagueSpec, load_league, parse_spec, read_spec

SAVED = "league.json"


def prepare(source: str | Path | dict[str, Any], base_dir: Path | None = None
            ) -> tuple[LeagueSpec, dict[str, Any], Path, list[Cell]]:
    """Validate a spec (shipped name, YAML path or dict) and every cell; raise :class:`LeagueError` first."""
    if isinstance(source, dict):
        raw, folder = source, (base_dir or Path.cwd()).resolve()
    else:
        raw, folder = read_spec(source)
    spec = parse_spec(raw)
    return spec, raw, folder, expand(spec, folder)


def save_spec(out_dir: Path, raw: dict[str, Any], base_dir: Path) -> None:
    """``OUT/league.json`` (the spec and the folder its relative paths start from) and a readable ``spec.yaml``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SAVED).write_text(json.dumps({"spec": raw, "base_dir": str(base_dir)}, indent=2, default=str) + "\n")
    (out_dir / "spec.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def load_saved(out_dir: Path) -> tuple[LeagueSpec, dict[str, Any], Path, list[Cell]]:
    path = Path(out_dir) / SAVED
    if not path.exists():
        raise LeagueError(f"{out_dir}: no {SAVED} here (not a tournament output folder)")
    saved = json.loads(path.read_text())
    return prepare(saved["spec"], Path(saved["base_dir"]))


def play(spec: LeagueSpec, raw: dict[str, Any], base_dir: Path, cells: list[Cell], out_dir: Path,
         **kwargs: Any) -> RunStats:
    """Save the spec beside the results and play the missing cells (:func:`~extractgym.league.runner.run_league`:
    one run per folder, stale rows refused unless ``stale`` says otherwise)."""
    return run_league(cells, out_dir, league=spec.name, on_start=lambda: save_spec(out_dir, raw, base_dir), **kwargs)


def check_payoffs(spec: LeagueSpec, cells: list[Cell], out_dir: Path) -> None:
    """Fail before any episode if a linear payoff names a figure that episodes do not report.

    The figures are those of the rows already in ``OUT`` and, without rows, of one cell's game right after its
    reset (built, not played). Raises :class:`LeagueError` naming ``payoff.SIDE.FIGURE``.
    """
    from extractgym.league.analysis import check_payoffs as check

    if not any(isinstance(getattr(spec.payoff, side), dict) for side in ("attacker", "defender")) or not cells:
        return
    rows, _ = ResultsFile(Path(out_dir) / RESULTS).load(repair=False)
    ids = {c.id for c in cells}
    summaries = [r["summary"] for i, r in rows.items() if i in ids and r.get("status") == "ok"]
    if not summaries:
        from extractgym.scenarios import make_env

        env = make_env(cells[0].config)
        env.reset(seed=cells[0].seed)
        summaries = [{**env.summary(), "returns": {agent: 0.0 for agent in env.possible_agents}}]
    check(spec, summaries)


def report(spec: LeagueSpec, raw: dict[str, Any], cells: list[Cell], out_dir: Path,
           progress: Callable[[str, int, int], None] | None = None) -> Path:
    """CSV exports and the HTML report from ``OUT/results.jsonl``; returns the report's path (``progress``: see
    :func:`~extractgym.league.report.write_report`)."""
    from extractgym.league.fingerprint import current
    from extractgym.league.report import write_report

    rows, _ = ResultsFile(Path(out_dir) / RESULTS).load(repair=False)
    return write_report(spec, raw, cells, rows, Path(out_dir), progress, current().digest)


__all__ = ["load_league", "load_saved", "play", "prepare", "report", "save_spec"]
