"""``extractgym tournament`` (a league spec played into a results file, then reported) and
``tournament-report`` (the report rewritten from a tournament folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from extractgym.cli.common import app, console, err_console, fail


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
        report: Annotated[bool, typer.Option(help="write the HTML report and CSVs afterwards")] = True,
        dry_run: Annotated[bool, typer.Option(help="validate every cell and stop")] = False) -> None:
    """Play a league (every attacker x defender x scenario x seed) into OUT/results.jsonl, then report it.

    Every cell is validated before the first episode. A rerun skips the cells already in OUT/results.jsonl,
    so an interrupted league resumes where it stopped. The report lands in OUT/report/index.html.
    """
    from rich.progress import TimeRemainingColumn

    from extractgym.league import tournament as tour
    from extractgym.league.runner import BACKENDS, pending
    from extractgym.league.spec import LeagueError

    if backend not in BACKENDS:
        fail(f"--backend: unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    try:
        league, raw, base_dir, cells = tour.prepare(spec)
        out = out or Path("runs") / "tournaments" / league.name
        tour.check_payoffs(league, cells, out)
    except LeagueError as e:
        fail(str(e))
    n = len({c.id for c in cells})
    console.print(f"[bold]{league.name}[/]: {len(league.attackers)} attackers x {len(league.defenders)} defenders x "
                  f"{len(league.scenarios)} scenarios x {league.seeds} seeds = {n} cells", highlight=False)
    if dry_run:
        console.print("[green]ok[/]: every cell is valid")
        return
    from extractgym.league.runner import ResultsFile

    todo = len(pending(cells, ResultsFile(out / "results.jsonl").load(repair=False)[0], retry_failed))
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
                              max_cells=max_cells, retry_failed=retry_failed, on_row=on_row)
        except RuntimeError as e:  # e.g. the ray backend without Ray installed
            fail(str(e))
    for w in stats.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"played {stats.ran} cells ({stats.failed} failed) in {stats.wall_seconds:.1f} s; "
                  f"{stats.skipped} already done; rows in {out / 'results.jsonl'}", highlight=False)
    if report:
        try:
            path = tour.report(league, raw, cells, out)
        except LeagueError as e:
            fail(str(e))
        console.print(f"report: {path}", highlight=False)


@app.command("tournament-report")
def tournament_report(out: Annotated[Path, typer.Argument(help="a tournament's output folder")]) -> None:
    """Rewrite the report and CSVs of a tournament folder from its results (payoffs from its saved spec)."""
    from extractgym.league import tournament as tour
    from extractgym.league.spec import LeagueError

    try:
        league, raw, _, cells = tour.load_saved(out)
        path = tour.report(league, raw, cells, out)
    except LeagueError as e:
        fail(str(e))
    console.print(f"report: {path}", highlight=False)
