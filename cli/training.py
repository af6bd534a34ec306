"""``extractgym train`` (one seat with stable-baselines3), ``psro`` (both sides in alternation) and ``rllib``
(every seat at once on Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from extractgym.cli.common import app, console, fail, key_values


@app.command()
def train(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
          seat: Annotated[str | None, typer.Option(help="the learning seat (default: the first attacker)")] = None,
          algo: Annotated[str, typer.Option(help="ppo | maskable-ppo | a2c | dqn")] = "maskable-ppo",
          timesteps: Annotated[int, typer.Option(min=1, help="environment steps (rounds) to train for")] = 10_000,
          envs: Annotated[int, typer.Option(min=1, help="parallel training envs")] = 2,
          seed: Annotated[int, typer.Option(min=0, help="seed of the model and the training episodes")] = 0,
          out: Annotated[Path | None, typer.Option(help="output folder (default: runs/train/SCENARIO-SEAT-ALGO-sSEED)")] = None,
          vec: Annotated[str, typer.Option(help="auto (the vector env where the scenario allows it, else subproc with "
                                                ">= 2 envs and >= 2 CPUs) | vector | dummy | subproc")] = "auto",
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
          set_: Annotated[list[str] | None, typer.Option("--set", help=(
              "KEY=VALUE to override a top-level scenario field, e.g. --set surrogates=full --set answer_table=false "
              "(the full setting of an rl- scenario; repeatable)"))] = None,
          imitate: Annotated[str | None, typer.Option(
              help="clone this policy first (a script such as rotate-on-refusal:rotate_every=25, or preset), then "
                   "train with RL from there")] = None,
          imitate_episodes: Annotated[int, typer.Option(min=1, help="episodes per imitation round")] = 48,
          imitate_rounds: Annotated[int, typer.Option(min=1, help="imitation rounds (1 + DAgger rounds)")] = 3,
          imitate_smoothing: Annotated[float, typer.Option(
              help="weight of the uniform distribution over each knob's allowed choices in the cloning "
                   "targets, so RL can explore, in [0, 1)")] = 0.1,
          stack: Annotated[int, typer.Option(min=1, help="memory: the policy reads the episode's last N observations "
                                                         "(1: the latest only)")] = 1,
          cpu_minutes: Annotated[float | None, typer.Option(
              min=0.01, help="stop training after this many CPU-minutes (imitation and RL, worker processes "
                             "included; evaluations not counted), or at --timesteps, whichever comes first")] = None,
          progress: Annotated[bool, typer.Option(help="show the progress bar")] = True) -> None:
    """Train a policy for one seat with stable-baselines3 (masked PPO by default) and save it for scenarios."""
    from extractgym.agents.brains.learned import PolicyError
    from extractgym.scenarios import ScenarioError
    from extractgym.scenarios.evaluate import EvalError
    from extractgym.training.train import DEFAULT_BASELINES, TrainConfig
    from extractgym.training.train import train as run_training

    params = key_values(param, "--param")
    overrides = {**key_values(set_, "--set"), **({"rounds": rounds} if rounds else {})}
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
                          imitate_smoothing=imitate_smoothing, stack=stack, cpu_minutes=cpu_minutes)
        result = run_training(cfg, console=console, log=lambda m: console.print(m, highlight=False))
    except (ScenarioError, EvalError, PolicyError, ValueError, RuntimeError, OSError) as e:
        fail(str(e))
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
         rounds: Annotated[int | None, typer.Option(min=1, help="override the scenario's rounds")] = None,
         stack: Annotated[int, typer.Option(min=1, help="the best responses' memory: observations read at once")] = 1,
         vec: Annotated[str, typer.Option(help="the best responses' vec env: auto | dummy | subproc")] = "auto"
         ) -> None:
    """Alternating training of both sides (PSRO): payoff matrix, meta-strategy, best responses, repeat."""
    from extractgym.agents.brains.learned import PolicyError
    from extractgym.league.spec import LeagueError
    from extractgym.scenarios import ScenarioError, load_scenario
    from extractgym.training.psro import Psro, PsroConfig

    params = key_values(param, "--param")
    overrides = {"rounds": rounds} if rounds else {}
    try:
        name = load_scenario(scenario, **overrides).name
        cfg = PsroConfig(scenario, iterations, out or Path("runs") / "psro" / name, algo, timesteps, envs, episodes,
                         meta_solver, initial, seed, workers, vec=vec, overrides=overrides, params=params, stack=stack)
        from extractgym.training.algos import hyperparameters

        hyperparameters(algo, envs, params)  # fail now on a bad algorithm or parameter
        loop = Psro(cfg, log=lambda m: console.print(m, highlight=False), console=console)
        console.print("populations: " + "; ".join(f"{r}s: {', '.join(m.name for m in ms)}"
                                                  for r, ms in loop.populations.items()), highlight=False)
        gains = loop.run()
    except (ScenarioError, LeagueError, PolicyError, ValueError, RuntimeError, OSError) as e:
        fail(str(e))
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
    """Train every seat at once with RLlib's multi-agent PPO (one policy per side); needs pip install -e '.\\[ray]'."""
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
        fail(str(e))
    console.print(f"wrote {out}/ (rllib.json, checkpoint/)", highlight=False)
