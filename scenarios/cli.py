"""The ``extractgym`` command line: ``run`` an episode, ``list`` what is registered, ``validate`` a scenario file,
``tournament`` a league spec (and ``tournament-report`` its output folder), ``serve`` a scenario's prediction API
over HTTP, ``train`` a policy for a seat and ``psro`` both sides in alternation."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
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
            acc = [i["accuracy"] for k, i in infos.items() if env.seat_info[k].role == "attacker"]
            status = f"attacker acc {sum(acc) / len(acc):.3f}" if acc else ""
            progress.update(task, completed=r, description="playing rounds", status=status)

        try:
            summary = play_episode(env, seed=s.seed, on_round=on_round)
        except (ValueError, RuntimeError, OSError) as e:  # e.g. a custom body that rejects its data at bind time
            _fail(f"{s.name}: {e}")
    table = Table(title=f"{s.name} (seed {s.seed})", show_header=True, header_style="bold")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key in SUMMARY_KEYS[2:]:
        table.add_row(key, _fmt(summary[key]))
    for seat, ret in summary.get("returns", {}).items():  # the referee's reward terms, summed over the episode
        table.add_row(f"return {seat}", _fmt(ret))
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
    try:
        path = write_summary(summary, out)
    except OSError as e:
        _fail(f"cannot write {out / 'summary.json'}: {e.strerror or e}")
    console.print(f"wrote {path}")


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
        _fail(str(e))
    console.print(f"[green]ok[/]: {s.name} ({len(s.attackers)} attackers, {len(s.defenders)} defenders, "
                  f"{s.rounds} rounds)")


@app.command("eval")
def eval_(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          seat: Annotated[str | None, typer.Option(help="the seat evaluated (default: the first attacker)")] = None,
          policy: Annotated[list[str] | None, typer.Option(
              help="preset | random | best-constant | constant:K=V,... | a brain name[:K=V,...] | a policy file; "
                   "repeat for several (the first is the baseline of the paired differences)")] = None,
          seeds: Annotated[int, typer.Option(min=2, help="held-out seeds (paired across policies)")] = 10,
          train_seeds: Annotated[int, typer.Option(min=1, help="seeds best-constant searches on")] = 5,
          rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's rounds")] = None,
          out: Annotated[Path | None, typer.Option(help="write the results as JSON here")] = None,
          trace: Annotated[int, typer.Option(min=0, help="print what each policy did on the first N seeds, round by "
                                                         "round, beside the opponents' choices (all in --out)")] = 0) -> None:
    """Play policies in one seat on the same held-out seeds: mean return +- SE and paired differences."""
    import json

    from extractgym.scenarios import ScenarioError
    from extractgym.scenarios.evaluate import EvalError, Evaluator, paired

    policies = policy or ["preset", "random", "best-constant"]
    try:
        ev = Evaluator(scenario, seat, **({"rounds": rounds} if rounds else {}))
        with Progress(TextColumn("[progress.description]{task.description}"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("evaluating")
            results = ev.evaluate(policies, seeds, train_seeds,
                                  progress=lambda p: progress.update(task, description=f"evaluating {p}"),
                                  trace=bool(trace) or out is not None)
    except (ScenarioError, EvalError, ValueError, RuntimeError, OSError) as e:
        _fail(str(e))
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
                     "figures": {k: v.tolist() for k, v in r.figures.items()}, "traces": r.traces})
    console.print(table)
    if trace:
        _print_traces(ev, results, trace)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"scenario": ev.env.factory.name, "seat": ev.seat, "seeds": seeds,
                                       "results": rows}, indent=1, default=float))
        except OSError as e:
            _fail(f"cannot write {out}: {e.strerror or e}")
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


def _params(items: list[str] | None, what: str) -> dict[str, Any]:
    """``K=V`` options to a dict (values as YAML scalars: 3, 0.1, true, text)."""
    import yaml

    from extractgym.scenarios.evaluate import as_number

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"{what} {item!r}: expected KEY=VALUE")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        # YAML 1.1 reads 1e-4 (no dot) as text: numbers are numbers here
        out[key.strip()] = as_number(parsed) if isinstance(parsed, str) else parsed
    return out


@app.command()
def train(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          seat: Annotated[str | None, typer.Option(help="the learning seat (default: the first attacker)")] = None,
          algo: Annotated[str, typer.Option(help="ppo | maskable-ppo | a2c | dqn")] = "maskable-ppo",
          timesteps: Annotated[int, typer.Option(min=1, help="environment steps (rounds) to train for")] = 10_000,
          envs: Annotated[int, typer.Option(min=1, help="parallel training envs")] = 2,
          seed: Annotated[int, typer.Option(min=0, help="seed of the model and the training episodes")] = 0,
          out: Annotated[Path | None, typer.Option(help="output folder (default: runs/train/SCENARIO-SEAT-ALGO-sSEED)")] = None,
          vec: Annotated[str, typer.Option(help="auto (subproc with >= 2 envs and >= 2 CPUs) | dummy | subproc")] = "auto",
          eval_every: Annotated[int, typer.Option(min=0, help="evaluate every N steps (0: only at the end)")] = 0,
          eval_seeds: Annotated[int, typer.Option(min=0, help="held-out seeds per evaluation (0: no evaluation)")] = 10,
          baseline: Annotated[list[str] | None, typer.Option(
              help="baselines for the paired evaluation (repeatable; default preset, random, best-constant)")] = None,
          max_constants: Annotated[int, typer.Option(min=1, help="best-constant baseline only for seats with at most "
                                                                   "this many constant actions")] = 64,
          train_seeds: Annotated[int, typer.Option(min=1, help="seeds the best-constant baseline is searched on")] = 5,
          checkpoint_every: Annotated[int, typer.Option(min=0, help="save a checkpoint every N steps (0: never)")] = 0,
          param: Annotated[list[str] | None, typer.Option(
              help="KEY=VALUE for the algorithm's constructor, e.g. --param learning_rate=1e-3 (repeatable)")] = None,
          rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's rounds")] = None,
          imitate: Annotated[str | None, typer.Option(
              help="clone this policy first (a script such as rotate-on-refusal:rotate_every=25, or preset), then "
                   "train with RL from there")] = None,
          imitate_episodes: Annotated[int, typer.Option(min=1, help="episodes per imitation round")] = 48,
          imitate_rounds: Annotated[int, typer.Option(min=1, help="imitation rounds (1 + DAgger rounds)")] = 3,
          imitate_smoothing: Annotated[float, typer.Option(
              help="weight of the uniform distribution over each knob's allowed choices in the cloning "
                   "targets, so RL can explore, in [0, 1)")] = 0.1,
          progress: Annotated[bool, typer.Option(help="show the progress bar")] = True) -> None:
    """Train a policy for one seat with stable-baselines3 (masked PPO by default) and save it for scenarios."""
    from extractgym.agents.learned import PolicyError
    from extractgym.scenarios import ScenarioError
    from extractgym.scenarios.evaluate import EvalError
    from extractgym.training.train import DEFAULT_BASELINES, TrainConfig, train as run_training

    params = _params(param, "--param")
    overrides = {"rounds": rounds} if rounds else {}
    try:
        from extractgym.scenarios import load_scenario

        name = load_scenario(scenario, **overrides).name
        tag = "" if imitate is None else "-imitate-" + "".join(c if c.isalnum() else "_" for c in imitate)[:40]
        out = out or Path("runs") / "train" / f"{name}-{seat or 'attacker_0'}-{algo}-s{seed}{tag}"
        cfg = TrainConfig(scenario, seat, algo, timesteps, envs, seed, out, vec, eval_every, eval_seeds,
                          tuple(baseline or DEFAULT_BASELINES), train_seeds=train_seeds, max_constants=max_constants,
                          checkpoint_every=checkpoint_every, params=params,
                          overrides=overrides, progress=progress, imitate=imitate,
                          imitate_episodes=imitate_episodes, imitate_rounds=imitate_rounds,
                          imitate_smoothing=imitate_smoothing)
        result = run_training(cfg, console=console, log=lambda m: console.print(m, highlight=False))
    except (ScenarioError, EvalError, PolicyError, ValueError, RuntimeError, OSError) as e:
        _fail(str(e))
    console.print(f"trained {timesteps} steps in {result.wall_seconds:.0f} s ({result.cpu_seconds:.0f} CPU-s, of which "
                  f"{result.training_cpu_seconds:.0f} training and {result.eval_cpu_seconds:.0f} evaluating; "
                  f"{result.vec} vec env); policy: {result.policy}", highlight=False)
    final = result.final
    if final is not None and result.baselines is not None:
        table = Table(title=f"{result.config['scenario']}: {result.config['seat']}, {len(final.returns)} held-out "
                            f"seeds", header_style="bold")
        for col in ("policy", "return", "learned - policy", "p (learned better)"):
            table.add_column(col, justify="left" if col == "policy" else "right")
        table.add_row(f"learned ({algo})", f"{final.mean:.4f} ± {final.se:.4f}", "", "")
        for b, returns in result.baselines.returns.items():
            d = final.versus[b]
            note = result.baselines.notes.get(b, "")
            table.add_row(b + (f" ({note})" if note else ""), f"{returns.mean():.4f}",
                          f"{d['mean']:+.4f} ± {d['se']:.4f}", f"{d['p_better']:.3g}")
        for b, note in result.baselines.notes.items():
            if b not in result.baselines.returns:
                table.add_row(f"{b} ({note})", "", "", "")
        console.print(table)
    console.print(f"wrote {Path(cfg.out)}/ (policy.zip{', clone.zip' if imitate else ''}, result.json, "
                  f"evaluations.csv, episodes.csv, learning_curve.png, logs/)", highlight=False)


@app.command()
def psro(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path (attacker 0 vs defender 0)")],
         iterations: Annotated[int, typer.Option(min=1, help="PSRO iterations (a best response per side each)")] = 3,
         out: Annotated[Path | None, typer.Option(help="output folder (default: runs/psro/SCENARIO)")] = None,
         algo: Annotated[str, typer.Option(help="best-response learner: ppo | maskable-ppo | a2c | dqn")] = "maskable-ppo",
         timesteps: Annotated[int, typer.Option(min=1, help="training steps per best response")] = 2000,
         envs: Annotated[int, typer.Option(min=1, help="parallel training envs")] = 2,
         episodes: Annotated[int, typer.Option(min=1, help="paired seeds per cell of the payoff matrix")] = 6,
         meta_solver: Annotated[str, typer.Option(help="nash (zero-sum Nash by LP) | uniform")] = "nash",
         initial: Annotated[int, typer.Option(min=1, help="scripted brains per side to start from")] = 3,
         seed: Annotated[int, typer.Option(min=0)] = 0,
         workers: Annotated[int | None, typer.Option(min=0, help="payoff episodes in parallel (default: the cores; 0: "
                                                             "in this process)")] = None,
         param: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the learner (repeatable)")] = None,
         rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's rounds")] = None) -> None:
    """Alternating training of both sides (PSRO): payoff matrix, meta-strategy, best responses, repeat."""
    from extractgym.agents.learned import PolicyError
    from extractgym.league.spec import LeagueError
    from extractgym.scenarios import ScenarioError, load_scenario
    from extractgym.training.psro import Psro, PsroConfig

    params = _params(param, "--param")
    overrides = {"rounds": rounds} if rounds else {}
    try:
        name = load_scenario(scenario, **overrides).name
        cfg = PsroConfig(scenario, iterations, out or Path("runs") / "psro" / name, algo, timesteps, envs, episodes,
                         meta_solver, initial, seed, workers, overrides=overrides, params=params)
        from extractgym.training.algos import hyperparameters

        hyperparameters(algo, envs, params)  # fail now on a bad algorithm or parameter
        loop = Psro(cfg, log=lambda m: console.print(m, highlight=False), console=console)
        console.print("populations: " + "; ".join(f"{r}s: {', '.join(m.name for m in ms)}"
                                                  for r, ms in loop.populations.items()), highlight=False)
        gains = loop.run()
    except (ScenarioError, LeagueError, PolicyError, ValueError, RuntimeError, OSError) as e:
        _fail(str(e))
    table = Table(title=f"PSRO on {name}: best-response gains", header_style="bold")
    for col in ("iteration", "attacker gain", "defender gain", "total"):
        table.add_column(col, justify="right")
    for g in gains:
        table.add_row(str(g["iteration"]), f"{g['attacker_gain']:+.4f}", f"{g['defender_gain']:+.4f}",
                      f"{g['total_gain']:+.4f}")
    console.print(table)
    console.print((cfg.out / "final_payoffs.md").read_text(), highlight=False)
    console.print(f"wrote {cfg.out}/ (psro.json, gains.csv, psro.png, final_payoffs.csv/.md, iter_*/, league/)",
                  highlight=False)


@app.command()
def rllib(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          iterations: Annotated[int, typer.Option(min=1, help="RLlib training iterations")] = 10,
          out: Annotated[Path | None, typer.Option(help="output folder (default: runs/rllib/SCENARIO)")] = None,
          address: Annotated[str | None, typer.Option(help="Ray cluster address, e.g. auto (default: a local Ray)")] = None,
          env_runners: Annotated[int, typer.Option(min=0, help="RLlib env runners (0: sample in the driver)")] = 0,
          batch: Annotated[int, typer.Option(min=1, help="train batch size per learner (agent steps)")] = 256,
          minibatch: Annotated[int, typer.Option(min=1)] = 64,
          epochs: Annotated[int, typer.Option(min=1)] = 5,
          seed: Annotated[int, typer.Option(min=0)] = 0,
          rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's rounds")] = None) -> None:
    """Train every seat at once with RLlib's multi-agent PPO (one policy per side); needs pip install -e '.[ray]'."""
    from extractgym.scenarios import ScenarioError, load_scenario
    from extractgym.training.rllib import train_rllib

    overrides = {"rounds": rounds} if rounds else {}
    try:
        name = load_scenario(scenario, **overrides).name
        out = out or Path("runs") / "rllib" / name

        def show(i: int, row: dict[str, Any]) -> None:
            returns = ", ".join(f"{k} {v:+.4f}" for k, v in sorted(row["seat_returns"].items()))
            console.print(f"iteration {i}: {row['env_steps']} env steps, {row['episodes']} episodes; mean return "
                          f"{returns} ({row['wall_seconds']:.0f} s)", highlight=False)

        train_rllib(scenario, iterations, out, address, overrides, env_runners, seed, on_iteration=show,
                    batch=batch, minibatch=minibatch, epochs=epochs)
    except (ScenarioError, ValueError, RuntimeError, OSError) as e:
        _fail(str(e))
    console.print(f"wrote {out}/ (rllib.json, checkpoint/)", highlight=False)


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
        _fail(f"--backend: unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    try:
        league, raw, base_dir, cells = tour.prepare(spec)
        out = out or Path("runs") / "tournaments" / league.name
        tour.check_payoffs(league, cells, out)
    except LeagueError as e:
        _fail(str(e))
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
            _fail(str(e))
    for w in stats.warnings:
        err_console.print(f"[yellow]warning:[/] {w}", highlight=False)
    console.print(f"played {stats.ran} cells ({stats.failed} failed) in {stats.wall_seconds:.1f} s; "
                  f"{stats.skipped} already done; rows in {out / 'results.jsonl'}", highlight=False)
    if report:
        try:
            path = tour.report(league, raw, cells, out)
        except LeagueError as e:
            _fail(str(e))
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
        _fail(str(e))
    console.print(f"report: {path}", highlight=False)


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
