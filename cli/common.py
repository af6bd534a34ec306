"""What every command shares: the Typer app, the consoles, and the exit-2 failure every bad input ends in."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="extractgym: model-extraction attackers vs prediction-API defenders.")
console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> None:
    """Print ``error: message`` and exit with code 2 (bad input, named; never a traceback)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code=2)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"
    return str(v)


def key_values(items: list[str] | None, what: str) -> dict[str, Any]:
    """``K=V`` options to a dict (values as YAML scalars: 3, 0.1, true, text)."""
    from extractgym.scenarios.evaluate import as_number
    from extractgym.victims import files

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{what} {files.short(item)}: expected KEY=VALUE")
        try:  # bounded like every file a user hands us (anchors, depth, huge literals)
            parsed = files.parse_yaml(value, f"{what} {key.strip()}", max_values=1000, max_depth=10)
        except files.FileError as e:
            if "malformed YAML" not in str(e):
                fail(str(e))
            parsed = value
        # YAML 1.1 reads 1e-4 (no dot) as text: numbers are numbers here
        out[key.strip()] = as_number(parsed) if isinstance(parsed, str) else parsed
    return out
