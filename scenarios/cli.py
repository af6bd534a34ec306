"""The ``extractgym`` command line: ``run`` an episode, ``list`` what is registered, ``validate`` a scenario file,
``serve`` a scenario's prediction API over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="extractgym: model-extraction attackers vs prediction-API defenders.")
console = Console()
err_console = Console(stderr=True)


def _fail(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


@app.command()
def run(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")] = "digits-basic",
        seed: Annotated[int | None, typer.Option(min=0, help="episode seed (default: the scenario's)")] = None,
        out: Annotated[Path | None, typer.Option(help="output folder for summary.json")] = None,
        rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's number of rounds")] = None) -> None:
    """Play one episode with a progress bar; print a summary table and write OUT/summary.json."""
    from extractgym.scenarios import ScenarioError, make_env
    from extractgym.scenarios.runner import SUMMARY_KEYS, play_episode, write_summary

    overrides = {"rounds": rounds} if rounds is not None else {}
    try:
        env = make_env(scenario, seed=seed, **overrides)
    except (ScenarioError, ValueError) as e:
        _fail(str(e))
    s = env.factory.scenario
    out = out or Path("runs") / f"{s.name}-seed{s.seed}"
    console.print(f"[bold]{s.name}[/]: {s.description}", highlight=False)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("preparing victims", total=s.rounds, status="")

        def on_round(r: int, infos: dict[str, dict[str, Any]]) -> None:
            acc = [i["accuracy"] for k, i in infos.items() if k.startswith("attacker")]
            status = f"attacker acc {sum(acc) / len(acc):.3f}" if acc else ""
            progress.update(task, completed=r, description="playing rounds", status=status)

        try:
            summary = play_episode(env, seed=s.seed, on_round=on_round)
        except (ValueError, RuntimeError) as e:  # e.g. a custom body that rejects its data at bind time
            _fail(f"{s.name}: {e}")
    table = Table(title=f"{s.name} (seed {s.seed})", show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in SUMMARY_KEYS[2:]:
        table.add_row(key, _fmt(summary[key]))
    console.print(table)
    if len(summary["attackers"]) > 1:
        per = Table(title="per attacker", header_style="bold")
        cols = [c for c in next(iter(summary["attackers"].values())) if c != "tactics"]
        per.add_column("seat")
        for c in cols:
            per.add_column(c, justify="right")
        for seat, info in summary["attackers"].items():
            per.add_row(seat, *(_fmt(info.get(c)) for c in cols))
        console.print(per)
    for name, ev in summary.get("evaluations", {}).items():
        t = Table(title=f"accuracy on {name} (extra evaluation set)", header_style="bold")
        t.add_column("model")
        t.add_column("accuracy", justify="right")
        for service, acc in ev["victims"].items():
            t.add_row(f"victim behind {service}", _fmt(acc))
        for seat, sc in ev["attackers"].items():
            t.add_row(f"{seat} (fidelity {sc['fidelity']:.3f})", _fmt(sc["accuracy"]))
        console.print(t)
    path = write_summary(summary, out)
    console.print(f"wrote {path}")


@app.command("list")
def list_() -> None:
    """Show shipped scenarios, attackers, defenders, attacker tactics, victims and datasets."""
    from extractgym.agents import ATTACKERS, DEFENDERS
    from extractgym.agents.brains import BRAINS
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

    def doc(cls: type) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0]

    for title, reg in (("attackers", ATTACKERS), ("defenders", DEFENDERS), ("attacker tactics", TACTICS)):
        t = Table(title=title, header_style="bold")
        t.add_column("name")
        t.add_column("class")
        t.add_column("summary")
        for name, cls in sorted(reg.items()):
            t.add_row(name, cls.__name__, doc(cls))
        console.print(t)
    t = Table(title="victims", header_style="bold")
    t.add_column("name")
    t.add_column("dataset")
    t.add_column("description")
    for name, spec in sorted(VICTIMS.items()):
        t.add_row(name, spec.dataset, spec.description)
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
        _fail(str(e))
    console.print(f"[green]ok[/]: {s.name} ({len(s.attackers)} attackers, {len(s.defenders)} defenders, "
                  f"{s.rounds} rounds)")


@app.command()
def serve(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          db: Annotated[Path, typer.Option(help="SQLite file of the books (a restart on it restores them)")],
          host: Annotated[str, typer.Option(help="interface to bind (loopback by default)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
          owner_key: Annotated[list[str] | None, typer.Option(
              help="OWNER=KEY accepted as that owner's key (repeatable); scenario owners without one get a new "
                   "key, printed once")] = None,
          admin_key: Annotated[str | None, typer.Option(envvar="EXTRACTGYM_ADMIN_KEY",
                                                        help="the admin endpoints' key (default: a new one, printed)")] = None,
          seed: Annotated[int | None, typer.Option(min=0, help="game seed (default: the scenario's)")] = None,
          benign: Annotated[bool, typer.Option(help="simulate the scenario's benign customers each round")] = False,
          round_seconds: Annotated[float | None, typer.Option(
              min=0.01, help="close a round every N seconds (default: only POST /v1/admin/rounds/next)")] = None,
          max_batch: Annotated[int, typer.Option(min=1, help="most queries per request")] = 1024,
          max_body_mb: Annotated[float, typer.Option(min=0.001, help="largest request body, MiB")] = 16.0,
          max_submissions: Annotated[int, typer.Option(min=0, help="contest submissions per owner")] = 10) -> None:
    """Serve a scenario's prediction API over HTTP: same services, defenders and ledger as the simulator."""
    import secrets

    from extractgym.scenarios import ScenarioError
    from extractgym.serve import ServerConfig, ServiceServer
    from extractgym.serve.launch import run as run_server

    keys = {}
    for item in owner_key or []:
        owner, sep, key = item.partition("=")
        if not sep or not owner or not key:
            _fail(f"--owner-key {item!r}: expected OWNER=KEY")
        keys[owner] = key
    new_admin = admin_key is None
    admin_key = admin_key or secrets.token_urlsafe(24)
    if len(admin_key) < 8:
        _fail("--admin-key: keys must have at least 8 characters")
    try:
        server = ServiceServer(ServerConfig(scenario, db, seed=seed, benign=benign, owner_keys=keys,
                                            admin_key=admin_key, round_seconds=round_seconds, max_batch=max_batch,
                                            max_submissions=max_submissions))
        generated = server.ensure_owner_keys()
    except (ScenarioError, ValueError) as e:
        _fail(str(e))
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding {host}: keys travel in clear text unless a TLS proxy is in "
                          f"front", highlight=False)
    if new_admin:
        console.print(f"admin key (shown once): {admin_key}", highlight=False)
    for owner, key in generated.items():
        console.print(f"owner key for {owner} (shown once): {key}", highlight=False)
    console.print(f"[bold]{server.scenario.name}[/] served at http://{host}:{port} (OpenAPI: /docs), books in {db}, "
                  f"round {server.round}, {len(server.api.ledger)} ledger entries", highlight=False)
    try:
        run_server(server, host, port, max_body=int(max_body_mb * 2**20))
    finally:
        server.close()


if __name__ == "__main__":
    app()
