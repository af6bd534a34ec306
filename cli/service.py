"""``extractgym serve``: a scenario's prediction API over HTTP, with the simulator's services, defenders and books."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from extractgym.cli.common import app, console, err_console, fail


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
    from extractgym.serve.store import StoreError

    keys = {}
    for item in owner_key or []:
        owner, sep, key = item.partition("=")
        if not sep or not owner or not key:
            fail(f"--owner-key {item!r}: expected OWNER=KEY")
        keys[owner] = key
    new_admin = admin_key is None
    admin_key = admin_key or secrets.token_urlsafe(24)
    if len(admin_key) < 8:
        fail("--admin-key: keys must have at least 8 characters")
    problem = bind_problem(host, port)  # before anything is written or any key is shown
    if problem:
        fail(problem)
    try:
        server = ServiceServer(ServerConfig(scenario, db, seed=seed, benign=benign, owner_keys=keys,
                                            admin_key=admin_key, round_seconds=round_seconds, max_batch=max_batch,
                                            max_submissions=max_submissions))
        generated = server.ensure_owner_keys()
    except (ScenarioError, ValueError, StoreError) as e:
        fail(str(e))
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


def bind_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (None: it can), found by binding there for a moment."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as e:
        return f"--host {host[:80]!r}: not an address of this machine ({e})"
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(address)
    except OSError as e:
        return f"cannot serve on {host}:{port}: {e.strerror or e}"
    return None
