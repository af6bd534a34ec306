"""``extractgym tournament`` (a league spec played into a results file, then reported) and
``tournament-report`` (the report rewritten from a tournament folder, or two tournaments compared)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from extractgym.cli.common import app, console, err_console, fail


def usable_out(out: Path) -> Path:
    """An output folder that exists or can be made and is writable, else exit 2 naming the problem."""
    if out.exists() and not out.is_dir():
        fail(f"--out: {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out: cannot create {out}: {e.strerror or e}")
    if not os.access(out, os.W_OK | os.X_OK):
        fail(f"--out: {out} is not writable")
    return out


def _report_progress() -> Progress:
    return Progress(TextColumn("report: {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def write_report(tour: Any, league: Any, raw: Any, cells: Any, out: Path) -> Path:
    """The report, with a progress bar over the bootstrap's resamples and the figures."""
    with _report_progress() as progress:
        tasks: dict[str, Any] = {}

        def on(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done)

        return tour.report(league, raw, cells, out, progress=on)


def _warn(lines: list[str]) -> None:
    for w in lines:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)


@app.command()
def tournament(
        spec: Annotated[str, typer.Argument(help="shipped league name (extractgym list) or league YAML path")],
        out: Annotated[Path | None, typer.Option(help="output folder (default: runs/tournaments/NAME)")] = None,
        workers: Annotated[int | None, typer.Option(min=0, help="parallel episodes (default: the cores; 0: in this "
                                                           "process)")] = None,
        backend: Annotated[str, typer.Option(help="local (a process pool) or ray")] = "local",
        address: Annotated[str | None, typer.Option(help="Ray cluster address (default: a local ray.init())")] = None,
        max_cells: Annotated[int | None, typer.Option(min=0, help="play at most N of the missing cells")] = None,
        retry_failed: Annotated[bool, typer.Option(help="play again the cells whose row failed")] = False,
        rerun_stale: Annotated[bool, typer.Option(help="play again the cells whose row other code played (another "
                                                       "fingerprint)")] = False,
        reuse_stale: Annotated[bool, typer.Option(help="keep rows other code played (the report says so)")] = False,
        report: Annotated[bool, typer.Option(help="write the HTML report and CSVs afterwards")] = True,
        dry_run: Annotated[bool, typer.Option(help="validate every cell and stop")] = False) -> None:
    """Play a league (every attacker x defender x scenario x seed) into OUT/results.jsonl, then report it.

    Every cell is validated before the first episode. A rerun skips the cells already in OUT/results.jsonl,
    so an interrupted league resumes where it stopped; rows another code played (a changed source file or library
    version) are refused unless --rerun-stale or --reuse-stale says what to do. One run per folder at a time.
    The report lands in OUT/report/index.html.
    """
    from rich.progress import TimeRemainingColumn

    from extractgym.league import analysis as an
    from extractgym.league import tournament as tour
    from extractgym.league.runner import BACKENDS, ResultsFile, pending
    from extractgym.league.spec import LeagueError

    if backend not in BACKENDS:
        fail(f"--backend: unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if rerun_stale and reuse_stale:
        fail("--rerun-stale and --reuse-stale: choose one")
    stale = "rerun" if rerun_stale else "reuse" if reuse_stale else "refuse"
    try:
        league, raw, base_dir, cells = tour.prepare(spec)
        out = out or Path("runs") / "tournaments" / league.name
        if not dry_run:
            usable_out(out)
        tour.check_payoffs(league, cells, out)
    except LeagueError as e:
        fail(str(e))
    n = len({c.id for c in cells})
    console.print(f"[bold]{league.name}[/]: {len(league.attackers)} attackers x {len(league.defenders)} defenders x "
                  f"{len(league.scenarios)} scenarios x {league.seeds} seeds = {n} cells", highlight=False)
    _warn(an.coverage_warnings(league.seeds))
    if dry_run:
        console.print("[green]ok[/]: every cell is valid")
        return
    from extractgym.league.fingerprint import current

    rows = ResultsFile(out / "results.jsonl").load(repair=False)[0]
    todo = len(pending(cells, rows, retry_failed, current().digest if stale == "rerun" else None))
    todo = todo if max_cells is None else min(todo, max_cells)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("failed {task.fields[failed]}"), TimeElapsedColumn(), TextColumn("eta"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("cells", total=todo, failed=0)
        failures = 0

        def on_row(row: dict[str, Any], done: int, total: int) -> None:
            nonlocal failures
            failures += row.get("status") != "ok"
            progress.update(task, completed=done, failed=failures)

        try:
            stats = tour.play(league, raw, base_dir, cells, out, workers=workers, backend=backend, address=address,
                              max_cells=max_cells, retry_failed=retry_failed, on_row=on_row, stale=stale)
        except LeagueError as e:
            fail(str(e))
        except RuntimeError as e:  # e.g. the ray backend without Ray installed
            fail(str(e))
        except OSError as e:
            fail(f"--out: cannot write in {out}: {e.strerror or e}")
    _warn(stats.warnings)
    console.print(f"played {stats.ran} cells ({stats.failed} failed) in {stats.wall_seconds:.1f} s; "
                  f"{stats.skipped} already done; rows in {out / 'results.jsonl'}", highlight=False)
    if report:
        try:
            path = write_report(tour, league, raw, cells, out)
        except LeagueError as e:
            fail(str(e))
        console.print(f"report: {path}", highlight=False)


@app.command("tournament-report")
def tournament_report(
        out: Annotated[Path, typer.Argument(help="a tournament's output folder")],
        compare: Annotated[Path | None, typer.Option(help="an earlier tournament folder: say what changed between "
                                                          "it and OUT (compare.md and compare.json in "
                                                          "OUT/report)")] = None) -> None:
    """Rewrite the report and CSVs of a tournament folder from its results (payoffs from its saved spec); with
    --compare RUN_A, also what changed from RUN_A to it: spec, code, cells and rankings."""
    from extractgym.league import tournament as tour
    from extractgym.league.spec import LeagueError

    try:
        league, raw, _, cells = tour.load_saved(out)
        path = write_report(tour, league, raw, cells, out)
    except LeagueError as e:
        fail(str(e))
    console.print(f"report: {path}", highlight=False)
    if compare is not None:
        from extractgym.league import compare as cmp

        try:
            result = cmp.compare(compare, out)
        except LeagueError as e:
            fail(f"--compare: {e}")
        console.print(cmp.render(result), highlight=False, markup=False)
        _, md = cmp.write(result, out / "report")
        console.print(f"comparison: {md}", highlight=False)
