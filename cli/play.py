"""``extractgym run`` (one episode, a summary table, ``summary.json``), ``list`` (what is registered) and
``validate`` (a scenario file checked without playing it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from extractgym.cli.common import app, console, fail, fmt, key_values


@app.command()
def run(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")] = "digits-basic",
        seed: Annotated[int | None, typer.Option(min=0, help="episode seed (default: the scenario's)")] = None,
        out: Annotated[Path | None, typer.Option(help="output folder for summary.json")] = None,
        rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's number of rounds")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help=(
            "KEY=VALUE to override a top-level scenario field, e.g. --set surrogates=full --set answer_table=false "
            "(the full setting of an rl- scenario; repeatable)"))] = None) -> None:
    """Play one episode with a progress bar; print a summary table and write OUT/summary.json."""
    from extractgym.scenarios import ScenarioError, make_env
    from extractgym.scenarios.runner import SUMMARY_KEYS, play_episode, write_summary

    overrides = {**key_values(set_, "--set"), **({"rounds": rounds} if rounds is not None else {})}
    try:
        env = make_env(scenario, seed=seed, **overrides)
    except (ScenarioError, ValueError) as e:
        fail(str(e))
    s = env.factory.scenario
    out = out or Path("runs") / f"{s.name}-seed{s.seed}"
    problem = writable_folder(out)
    if problem:
        env.close()
        fail(f"--out {out}: {problem}")
    console.print(f"[bold]{s.name}[/]: {s.description}", highlight=False)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("preparing victims", total=s.rounds, status="")

        def on_round(r: int, infos: dict[str, dict[str, Any]]) -> None:
            acc = [i["accuracy"] for k, i in infos.items() if env.seat_info[k].role == "attacker"]
            status = f"attacker acc {sum(acc) / len(acc):.3f}" if acc else ""
            progress.update(task, completed=r, description="playing rounds", status=status)

        try:
            summary = play_episode(env, seed=s.seed, on_round=on_round)
        except (ValueError, RuntimeError, OSError) as e:  # e.g. a custom body that rejects its data at bind time
            env.close()
            fail(f"{s.name}: {e}")
    table = Table(title=f"{s.name} (seed {s.seed})", show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in SUMMARY_KEYS[2:]:
        table.add_row(key, fmt(summary[key]))
    for seat, ret in summary.get("returns", {}).items():  # the referee's reward terms, summed over the episode
        table.add_row(f"return {seat}", fmt(ret))
    console.print(table)
    if len(summary["attackers"]) > 1:
        per = Table(title="per attacker", header_style="bold")
        cols = [c for c in next(iter(summary["attackers"].values())) if c != "tactics"]
        per.add_column("seat")
        for c in cols:
            per.add_column(c, justify="right")
        for seat, info in summary["attackers"].items():
            per.add_row(seat, *(fmt(info.get(c)) for c in cols))
        console.print(per)
    for name, ev in summary.get("evaluations", {}).items():
        t = Table(title=f"accuracy on {name} (extra evaluation set)", header_style="bold")
        t.add_column("model")
        t.add_column("accuracy", justify="right")
        for service, acc in ev["victims"].items():
            t.add_row(f"victim behind {service}", fmt(acc))
        for seat, sc in ev["attackers"].items():
            t.add_row(f"{seat} (fidelity {sc['fidelity']:.3f})", fmt(sc["accuracy"]))
        console.print(t)
    base = summary.get("no_query_baseline")
    if base:  # untrusted contestants: each result beside what public data alone scores
        t = Table(title="no-query baseline (what public data alone scores on the same test set)", header_style="bold")
        for c in ("service", "accuracy", "fidelity", "threat model"):
            t.add_column(c)
        for service, b in base.items():
            t.add_row(service, fmt(b["accuracy"]), fmt(b["fidelity"]), summary["threat_model"][service])
        console.print(t)
    try:
        path = write_summary(summary, out)
    except OSError as e:
        fail(f"cannot write {out / 'summary.json'}: {e.strerror or e}")
    finally:
        env.close()
    console.print(f"wrote {path}")
    if summary.get("forfeits"):
        fail("; ".join(f"{seat} forfeited: {why}" for seat, why in summary["forfeits"].items()))


def writable_folder(out: Path) -> str | None:
    """Why ``out`` cannot take the run's files (None: it can), checked before anything is played."""
    if out.exists() and not out.is_dir():
        return "is a file, not a folder"
    probe = out if out.exists() else next((p for p in out.absolute().parents if p.exists()), None)
    if probe is None or not probe.is_dir():
        return f"{probe} is not a folder"
    import os

    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


@app.command("list")
def list_() -> None:
    """Show shipped scenarios, attackers, defenders, attacker tactics, victims and datasets."""
    from extractgym.agents import ATTACKERS, DEFENDERS
    from extractgym.agents.brains import BRAINS
    from extractgym.agents.registry import describe
    from extractgym.agents.tactics import TACTICS
    from extractgym.scenarios.schema import read_yaml, shipped_scenarios
    from extractgym.victims.datasets import DATASETS
    from extractgym.victims.zoo import VICTIMS

    table = Table(title="scenarios", header_style="bold")
    table.add_column("name")
    table.add_column("description")
    for name, path in sorted(shipped_scenarios().items()):
        table.add_row(name, str(read_yaml(path).get("description", "")))
    console.print(table)

    for title, reg in (("attackers", ATTACKERS), ("defenders", DEFENDERS), ("attacker tactics", TACTICS)):
        t = Table(title=title, header_style="bold")
        t.add_column("name")
        t.add_column("class")
        t.add_column("summary")
        for name, entry in sorted(reg.items()):
            t.add_row(name, *describe(entry))
        console.print(t)
    t = Table(title="victims", header_style="bold")
    t.add_column("name")
    t.add_column("dataset")
    t.add_column("description")
    for name, spec in sorted(VICTIMS.items()):
        t.add_row(name, spec.dataset, spec.description)
    console.print(t)
    from extractgym.league.spec import read_spec, shipped_leagues

    t = Table(title="leagues (extractgym tournament NAME)", header_style="bold")
    t.add_column("name")
    t.add_column("size")
    t.add_column("description")
    for name, path in sorted(shipped_leagues().items()):
        raw, _ = read_spec(path)
        size = " x ".join(str(len(raw.get(k) or [])) for k in ("attackers", "defenders", "scenarios"))
        t.add_row(name, f"{size} x {raw.get('seeds', 3)} seeds", str(raw.get("description", "")))
    console.print(t)
    console.print(f"[bold]datasets[/]: {', '.join(sorted(DATASETS))}")
    console.print(f"[bold]brains[/]: {', '.join(BRAINS)}")


@app.command()
def validate(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")]) -> None:
    """Check a scenario without playing it; exit 2 and name every bad field if it is invalid."""
    from extractgym.scenarios import ScenarioError, load_scenario

    try:
        s = load_scenario(scenario)
    except ScenarioError as e:
        fail(str(e))
    console.print(f"[green]ok[/]: {s.name} ({len(s.attackers)} attackers, {len(s.defenders)} defenders, "
                  f"{s.rounds} rounds)")
