"""``extractgym eval``: policies in one seat, played on the same held-out seeds, with paired differences."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from extractgym.cli.common import app, console, fail, key_values


@app.command("eval")
def eval_(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          seat: Annotated[str | None, typer.Option(help="the seat evaluated (default: the first attacker)")] = None,
          policy: Annotated[list[str] | None, typer.Option(
              help="preset | random | best-constant | constant:K=V,... | a brain name[:K=V,...] | a policy file; "
                   "repeat for several (the first is the baseline of the paired differences)")] = None,
          seeds: Annotated[int, typer.Option(min=2, help="held-out seeds (paired across policies)")] = 10,
          train_seeds: Annotated[int, typer.Option(min=1, help="seeds best-constant searches on")] = 5,
          rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's rounds")] = None,
          set_: Annotated[list[str] | None, typer.Option("--set", help=(
              "KEY=VALUE to override a top-level scenario field, e.g. --set surrogates=full --set answer_table=false "
              "(the full setting of an rl- scenario; repeatable)"))] = None,
          out: Annotated[Path | None, typer.Option(help="write the results as JSON here")] = None,
          trace: Annotated[int, typer.Option(min=0, help="print what each policy did on the first N seeds, round by "
                                                         "round, beside the opponents' choices (all in --out)")] = 0,
          by_type: Annotated[bool, typer.Option(
              "--by-type", help="group seeds by the opponents' hidden draw: constants searched on --train-seeds seeds "
                                "of each type, returns per type (implied by --policy type-oracle)")] = False) -> None:
    """Play policies in one seat on the same held-out seeds: mean return +- SE and paired differences."""
    import json

    from extractgym.scenarios import ScenarioError
    from extractgym.scenarios.evaluate import EvalError, Evaluator, paired

    policies = policy or ["preset", "random", "best-constant"]
    try:
        ev = Evaluator(scenario, seat, **key_values(set_, "--set"), **({"rounds": rounds} if rounds else {}))
        with Progress(TextColumn("[progress.description]{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("evaluating")
            results = ev.evaluate(policies, seeds, train_seeds,
                                  progress=lambda p: progress.update(task, description=f"evaluating {p}"),
                                  trace=bool(trace) or out is not None, by_type=by_type)
    except (ScenarioError, EvalError, ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    base = results[0]
    table = Table(title=f"{ev.env.factory.name}: {ev.seat}, {seeds} held-out seeds", header_style="bold")
    for col in ("policy", "return", f"vs {base.name}", "p (better)", "accuracy", "cost", "banned", "value share"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    rows = []
    for r in results:
        d = paired(r.returns, base.returns)
        label = r.name + (f" ({r.note})" if r.note else "")
        table.add_row(label, f"{r.mean:.4f} ± {r.se:.4f}",
                      "" if r is base else f"{d.mean:+.4f} ± {d.se:.4f}", "" if r is base else f"{d.p_better:.3g}",
                      f"{np.nanmean(r.figures['attacker_accuracy']):.4f}", f"{np.nanmean(r.figures['cost']):.3f}",
                      f"{np.nanmean(r.figures['accounts_banned']):.2f}",
                      f"{np.nanmean(r.figures['benign_value_share']):.4f}")
        rows.append({"policy": r.name, "note": r.note, "returns": r.returns.tolist(), "mean": r.mean, "se": r.se,
                     "paired_vs_first": {"mean": d.mean, "se": d.se, "p_better": d.p_better},
                     "figures": {k: v.tolist() for k, v in r.figures.items()}, "traces": r.traces,
                     **({"types": r.types} if r.types else {})})
    console.print(table)
    adaptation = _print_types(results) if results[0].types else None
    if trace:
        _print_traces(ev, results, trace)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"scenario": ev.env.factory.name, "seat": ev.seat, "seeds": seeds,
                                       "results": rows, **({"adaptation": adaptation} if adaptation else {})},
                                      indent=1, default=float))
        except OSError as e:
            fail(f"cannot write {out}: {e.strerror or e}")
        console.print(f"wrote {out}")


def _print_traces(ev: Any, results: list[Any], n: int) -> None:
    """Each policy's knob values per round on the first ``n`` held-out seeds, with the opponents' choices."""
    from extractgym.scenarios.evaluate import HELD_OUT, describe_trace

    for r in results:
        console.print(f"[bold]{r.name}[/bold]" + (f" ({r.note})" if r.note else ""), highlight=False)
        for i, log in enumerate(r.traces[:n]):
            others = "; ".join(f"{s}: {describe_trace(log[s], ev.env.knobs(s))}" for s in log if s != ev.seat)
            console.print(f"  seed {HELD_OUT + i} (return {r.returns[i]:.4f}; {others or 'no opponents'})",
                          highlight=False)
            console.print(f"    {describe_trace(log[ev.seat], ev.knobs)}", highlight=False)


def _print_types(results: list[Any]) -> dict[str, Any] | None:
    """Each policy's mean return per hidden type, and the value of adaptation when ``best-constant`` and
    ``type-oracle`` were both played (returned for ``--out``)."""
    from extractgym.scenarios.evaluate import paired

    types = sorted(set(results[0].types))
    table = Table(title="mean return by the opponents' hidden draw (type)", header_style="bold")
    table.add_column("type")
    table.add_column("seeds", justify="right")
    for r in results:
        table.add_column(r.name, justify="right")
    grouped = [r.by_type() for r in results]
    for t in types:
        table.add_row(t, str(len(grouped[0][t])), *(f"{g[t].mean():.4f}" for g in grouped))
    console.print(table)
    named = {r.name: r for r in results}
    if "best-constant" not in named or "type-oracle" not in named:
        return None
    d = paired(named["type-oracle"].returns, named["best-constant"].returns)
    z = d.mean / d.se if d.se else float("inf")
    console.print(f"value of adaptation (type-oracle - best-constant, paired): {d.mean:+.4f} ± {d.se:.4f} "
                  f"({z:.1f} SE, p = {d.p_better:.3g})", highlight=False)
    return {"value": d.mean, "se": d.se, "z": z, "p_better": d.p_better,
            "per_type": {t: float(grouped[list(named).index('type-oracle')][t].mean()
                                  - grouped[list(named).index('best-constant')][t].mean()) for t in types}}
