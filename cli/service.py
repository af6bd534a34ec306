"""``extractgym serve``: a scenario's prediction API over HTTP, with the simulator's services, defenders and books."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from extractgym.cli.common import app, console, err_console, fail

OWNER_KEYS_ENV = "EXTRACTGYM_OWNER_KEYS"
ADMIN_KEY_ENV = "EXTRACTGYM_ADMIN_KEY"


def parse_owner_keys(text: str, where: str) -> dict[str, str]:
    """``OWNER=KEY`` lines (or comma-separated items; blank lines and ``#`` comments skipped) to a dict."""
    keys: dict[str, str] = {}
    for n, line in enumerate(text.replace(",", "\n").splitlines(), 1):
        item = line.split("#", 1)[0].strip()
        if not item:
            continue
        owner, sep, key = item.partition("=")
        if not sep or not owner.strip() or not key.strip():
            fail(f"{where}, item {n}: expected OWNER=KEY")
        keys[owner.strip()] = key.strip()
    return keys


def _secret_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        fail(f"{what} {path}: {e.strerror or e}")
    raise AssertionError  # unreachable: fail exits


@app.command()
def serve(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          db: Annotated[Path, typer.Option(help="SQLite file of the books (a restart on it restores them)")],
          host: Annotated[str, typer.Option(help="interface to bind (loopback by default)")] = "127.0.0.1",
          port: Annotated[int, typer.Option(min=0, max=65535)] = 8000,
          owner_keys: Annotated[Path | None, typer.Option(
              help=f"file of OWNER=KEY lines accepted as those owners' keys (or ${OWNER_KEYS_ENV}); a key given "
                   f"for an owner revokes its other keys; owners without one get a new key, printed once")] = None,
          owner_key: Annotated[list[str] | None, typer.Option(hidden=True)] = None,
          admin_key_file: Annotated[Path | None, typer.Option(
              help=f"file holding the admin endpoints' key (or ${ADMIN_KEY_ENV}; default: a new one, printed)")] = None,
          admin_key: Annotated[str | None, typer.Option(hidden=True)] = None,
          seed: Annotated[int | None, typer.Option(min=0, help="game seed (default: the scenario's)")] = None,
          benign: Annotated[bool, typer.Option(help="simulate the scenario's benign customers each round")] = False,
          round_seconds: Annotated[float | None, typer.Option(
              min=0.01, help="close a round every N seconds (default: only POST /v1/admin/rounds/next)")] = None,
          max_batch: Annotated[int, typer.Option(min=1, help="most queries per request")] = 1024,
          max_body_mb: Annotated[float, typer.Option(min=0.001, help="largest request body, MiB")] = 16.0,
          max_submissions: Annotated[int, typer.Option(min=0, help="contest submissions per owner")] = 10,
          snapshot_every: Annotated[int, typer.Option(
              min=0, help="ledger entries between snapshots of the state (a restart replays only what follows the "
                          "newest); 0: never")] = 5000) -> None:
    """Serve a scenario's prediction API over HTTP: same services, defenders and ledger as the simulator.

    Keys never come from the command line (every local user can read it with ps): owner keys from
    --owner-keys FILE or $EXTRACTGYM_OWNER_KEYS, the admin key from --admin-key-file FILE or $EXTRACTGYM_ADMIN_KEY.
    """
    import secrets

    from extractgym.scenarios import ScenarioError
    from extractgym.serve import ServerConfig, ServiceServer
    from extractgym.serve.launch import run as run_server
    from extractgym.serve.store import StoreError

    if owner_key or admin_key:
        fail("keys on the command line are visible to every local user (ps): give owner keys in --owner-keys FILE "
             f"or ${OWNER_KEYS_ENV}, the admin key in --admin-key-file FILE or ${ADMIN_KEY_ENV}")
    if owner_keys is not None:
        keys = parse_owner_keys(_secret_file(owner_keys, "--owner-keys"), f"--owner-keys {owner_keys}")
    else:
        keys = parse_owner_keys(os.environ.get(OWNER_KEYS_ENV, ""), f"${OWNER_KEYS_ENV}")
    admin = (_secret_file(admin_key_file, "--admin-key-file").strip() if admin_key_file is not None
             else os.environ.get(ADMIN_KEY_ENV, "").strip()) or None
    new_admin = admin is None
    admin = admin or secrets.token_urlsafe(24)
    if len(admin) < 8:
        fail("the admin key must have at least 8 characters")
    problem = bind_problem(host, port)  # before anything is written or any key is shown
    if problem:
        fail(problem)
    try:
        server = ServiceServer(ServerConfig(scenario, db, seed=seed, benign=benign, owner_keys=keys,
                                            admin_key=admin, round_seconds=round_seconds, max_batch=max_batch,
                                            max_submissions=max_submissions, snapshot_every=snapshot_every))
        generated = server.ensure_owner_keys()
    except (ScenarioError, ValueError, StoreError) as e:
        fail(str(e))
    if host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(f"[yellow]warning:[/] binding {host}: keys travel in clear text unless a TLS proxy is in "
                          f"front", highlight=False)
    if new_admin:
        console.print(f"admin key (shown once): {admin}", highlight=False)
    for owner, key in generated.items():
        console.print(f"owner key for {owner} (shown once): {key}", highlight=False)
    console.print(f"[bold]{server.scenario.name}[/] served at http://{host}:{port} (OpenAPI: /docs), books in {db}, "
                  f"round {server.round}, {len(server.api.ledger)} ledger entries, restored in "
                  f"{server.restore_seconds:.2f} s", highlight=False)
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
