"""One training run (what ``extractgym train`` and each PSRO best response call).

``train(TrainConfig(...))`` builds ``n_envs`` training envs of one seat (:mod:`extractgym.training.envs`), the
algorithm (:mod:`extractgym.training.algos`), plays the scripted baselines once on the held-out seeds, optionally
clones a teacher into the policy first (``imitate``: :mod:`extractgym.training.imitation`; the clone is evaluated
as step 0), learns with the callbacks of :mod:`extractgym.training.callbacks`, and writes into ``out``:

| file                       | what                                                                          |
|----------------------------|-------------------------------------------------------------------------------|
| `policy.zip`               | the final policy with its metadata (a scenario's `brain: {policy: ...}`)      |
| `clone.zip`                | with ``imitate``: the clone of the teacher that RL started from               |
| `checkpoints/step_N.zip`   | the policy every `checkpoint_every` steps                                     |
| `logs/progress.csv`        | SB3's training figures per update (and `logs/events.*` with TensorBoard)      |
| `episodes.csv`             | every training episode: timestep, return, length                              |
| `evaluations.csv`          | every held-out evaluation: mean, SE, paired difference and p per baseline     |
| `learning_curve.png`       | the above as one figure                                                       |
| `result.json`              | the configuration, the baselines, the final evaluation, the imitation, timings|
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.training import algos
from extractgym.training.callbacks import (
    Baselines,
    Checkpoints,
    CpuBudget,
    EpisodeLog,
    Evaluation,
    PairedEval,
    ProgressBar,
    cpu_seconds,
    play_baselines,
    write_rows,
)
from extractgym.training.envs import choose_vec_env, make_vec_env, one_thread
from extractgym.training.policies import policy_meta, save_policy

DEFAULT_BASELINES = ("preset", "random", "best-constant")


@dataclass
class TrainConfig:
    """A training run. ``scenario`` is a shipped name, YAML path, dict or Scenario; ``seat`` defaults to the first
    attacker; ``overrides`` replace scenario fields (e.g. ``{"rounds": 3}``); ``params`` override the algorithm's
    constructor keywords; ``eval_every``/``checkpoint_every`` are in timesteps (0: only at the end / never)."""

    scenario: Any
    seat: str | None = None
    algo: str = "maskable-ppo"
    timesteps: int = 10_000
    n_envs: int = 2
    seed: int = 0
    out: Path = Path("runs/train")
    vec: str = "auto"
    eval_every: int = 0
    eval_seeds: int = 10
    baselines: Sequence[str] = DEFAULT_BASELINES
    train_seeds: int = 5
    max_constants: int = 64
    checkpoint_every: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    tensorboard: bool = True
    progress: bool = True
    imitate: str | None = None  # a teacher policy to clone before PPO (training.imitation), e.g. a script spec
    imitate_episodes: int = 48
    imitate_rounds: int = 3
    imitate_smoothing: float = 0.1
    stack: int = 1  # observations the policy reads at once (memory: the episode's last ones, training.envs)
    cpu_minutes: float | None = None  # stop training (imitation and RL, workers included) after this much CPU


@dataclass
class TrainResult:
    policy: Path
    config: dict[str, Any]
    baselines: Baselines | None
    evaluations: list[Evaluation]
    episodes: list[dict[str, float]]
    checkpoints: list[Path]
    wall_seconds: float
    cpu_seconds: float  # this process and its finished worker processes
    vec: str
    imitation: Any = None  # training.imitation.ImitationReport, when the run started by imitating
    eval_cpu_seconds: float = 0.0  # of cpu_seconds, spent on baselines and held-out evaluations (in this process:
    # the evaluation CPU of seats with ``isolate: true``, which run in child processes, is booked as training)

    @property
    def training_cpu_seconds(self) -> float:
        """CPU-seconds of training proper (imitation and RL, workers included), without the evaluations."""
        return self.cpu_seconds - self.eval_cpu_seconds

    @property
    def final(self) -> Evaluation | None:
        return self.evaluations[-1] if self.evaluations else None


def _cpu() -> float:
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_seat(env: Any, seat: str | None) -> str:
    if seat is None:
        return next((s for s, i in env.seat_info.items() if i.role == "attacker"), env.possible_agents[0])
    if seat not in env.possible_agents:
        raise ValueError(f"unknown seat {seat!r}; this scenario's seats: {', '.join(env.possible_agents)}")
    return seat


def train(cfg: TrainConfig, opponents: Callable[[Any], Callable] | None = None, console: Any = None,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train a policy for one seat (module docstring). ``opponents`` replaces the other seats' brains (PSRO)."""
    from stable_baselines3.common.callbacks import CallbackList
    from stable_baselines3.common.logger import configure

    from extractgym.scenarios.evaluate import HELD_OUT, Evaluator

    cpu0, wall0 = _cpu(), time.perf_counter()
    one_thread()
    algo = algos.get_algo(cfg.algo)
    if cfg.timesteps < 1 or cfg.n_envs < 1:
        raise ValueError("timesteps and envs must be at least 1")
    hp = algos.hyperparameters(cfg.algo, cfg.n_envs, cfg.params)
    evaluator = Evaluator(cfg.scenario, cfg.seat, **dict(cfg.overrides))
    env0 = evaluator.env
    seat = resolve_seat(env0, cfg.seat)
    if cfg.seat is None:
        evaluator.seat, evaluator.knobs = seat, env0.knobs(seat)
    if cfg.imitate is not None:
        check_imitation(cfg, algo, evaluator)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda _msg: None)

    eval_cpu = 0.0  # CPU-seconds of this process spent on the baselines and evaluations (not on training)
    held_out = [HELD_OUT + i for i in range(cfg.eval_seeds)] if cfg.eval_seeds > 0 else []
    baselines = None
    if held_out:
        say(f"baselines on {len(held_out)} held-out seeds: {', '.join(cfg.baselines)}")
        t0 = time.process_time()
        baselines = play_baselines(evaluator, list(cfg.baselines), held_out, cfg.train_seeds, cfg.max_constants)
        eval_cpu += time.process_time() - t0

    if cfg.cpu_minutes is not None and not cfg.cpu_minutes > 0:
        raise ValueError(f"cpu minutes must be positive, got {cfg.cpu_minutes}")
    train_start = cpu_seconds()  # the training budget counts from here (the baselines are evaluation)
    vec = choose_vec_env(cfg.n_envs, cfg.vec, scenario=cfg.scenario, overrides=cfg.overrides)
    if cfg.stack < 1:
        raise ValueError(f"stack must be at least 1, got {cfg.stack}")
    venv = make_vec_env(cfg.scenario, seat, cfg.n_envs, cfg.seed, algo.action_space, vec, opponents, cfg.overrides,
                        cfg.stack)
    pk = algos.policy_kwargs(cfg.algo)
    try:
        try:
            model = algo.load()("MlpPolicy", venv, seed=cfg.seed, device="cpu", verbose=0,
                                policy_kwargs=algos.torch_policy_kwargs(pk), **hp)
        except (AssertionError, TypeError, ValueError) as e:  # SB3's own checks of a --param value
            raise ValueError(f"cannot build {algo.cls} with {hp}: {str(e).splitlines()[0][:300]}") from None
        formats = ["csv"] + (["tensorboard"] if cfg.tensorboard and tensorboard_available() else [])
        model.set_logger(configure(str(out / "logs"), formats))
        record = {"algo": cfg.algo, "timesteps": cfg.timesteps, "seed": cfg.seed, "n_envs": cfg.n_envs,
                  "hyperparameters": {k: v for k, v in hp.items() if isinstance(v, (int, float, str, bool))},
                  "overrides": dict(cfg.overrides), "stack": cfg.stack}
        if cfg.imitate:
            record["imitate"] = {"teacher": cfg.imitate, "episodes": cfg.imitate_episodes, "rounds": cfg.imitate_rounds,
                                 "smoothing": cfg.imitate_smoothing}
        meta_env = make_env_like(cfg.scenario, algo.action_space, cfg.overrides)

        def save(m: Any, path: Path) -> Path:
            return save_policy(m, path, policy_meta(meta_env, seat, cfg.algo, algo.action_space, pk, cfg.stack,
                                                    training={**record, "steps_done": int(m.num_timesteps)}))

        episodes = EpisodeLog()
        checkpoints = Checkpoints(out / "checkpoints", cfg.checkpoint_every, save)
        callbacks: list[Any] = [episodes, checkpoints]
        bar = ProgressBar(cfg.timesteps, console, f"{cfg.algo} {seat}") if cfg.progress else None
        imitation = None
        if cfg.imitate:
            imitation = run_imitation(model, cfg, evaluator, seat, algo.masks, opponents, say)
            save(model, out / "clone.zip")  # the clone PPO starts from, to compare with the final policy
        evaluation = None
        if baselines is not None:
            evaluation = PairedEval(evaluator, baselines, cfg.eval_every, algo.action_space == "multi",
                                    on_eval=(lambda ev: bar.status(ev.status())) if bar else None,
                                    csv_path=out / "evaluations.csv", stack=cfg.stack)
            callbacks.append(evaluation)
            if imitation is not None:  # where PPO starts from: the clone, on the same held-out seeds
                evaluation.init_callback(model)  # (learn() initialises it again; that is harmless)
                say(f"after imitation: {evaluation.evaluate().status()}")
        if bar is not None:
            callbacks.append(bar)
        budget = None
        if cfg.cpu_minutes is not None:
            budget = CpuBudget(cfg.cpu_minutes * 60.0, train_start,
                               exclude=lambda: evaluation.cpu_seconds if evaluation is not None else 0.0)
            callbacks.append(budget)
        model.learn(cfg.timesteps, callback=CallbackList(callbacks))
        record["steps_done"] = int(model.num_timesteps)
        if budget is not None:
            record["cpu_budget_stopped_at"] = budget.stopped_at
        policy = save(model, out / "policy.zip")
    finally:
        venv.close()
    if episodes.rows:
        write_rows(out / "episodes.csv", episodes.rows)
    history = evaluation.history if evaluation is not None else []
    result = TrainResult(policy, {**record, "scenario": env0.factory.name, "seat": seat, "vec": vec},
                         baselines, history, episodes.rows, checkpoints.saved, time.perf_counter() - wall0,
                         _cpu() - cpu0, vec, imitation,
                         eval_cpu + (evaluation.cpu_seconds if evaluation is not None else 0.0))
    from extractgym.training.plots import learning_curve

    learning_curve(out / "learning_curve.png", episodes.rows, [e.row() for e in history],
                   {k: float(np.mean(v)) for k, v in (baselines.returns.items() if baselines else [])},
                   f"{env0.factory.name}: {seat} ({cfg.algo}, seed {cfg.seed})")
    write_result(out / "result.json", result)
    return result


def check_imitation(cfg: TrainConfig, algo: algos.Algo, evaluator: Any) -> None:
    """Everything about ``cfg.imitate*`` that can fail, checked before any episode is played."""
    from extractgym.training.imitation import check_settings

    if not cfg.imitate:
        raise ValueError("--imitate needs a teacher: a script (NAME[:K=V,...]), preset, constant:K=V,... or a "
                         "policy file")
    if algo.action_space != "multi":
        raise ValueError(f"--imitate needs a policy-gradient algorithm (ppo, maskable-ppo, a2c), not {cfg.algo}")
    if cfg.imitate == "best-constant":
        raise ValueError("--imitate best-constant: search it first (extractgym eval ... --policy best-constant names "
                         "the action), then imitate constant:K=V,...")
    if not evaluator.knobs:
        raise ValueError(f"seat {evaluator.seat} has no knobs: there is nothing to imitate")
    check_settings(cfg.imitate_episodes, cfg.imitate_rounds, cfg.imitate_smoothing)
    evaluator.brain(cfg.imitate, 0)  # an unknown teacher, or one that needs knobs the seat lacks, fails here


def run_imitation(model: Any, cfg: TrainConfig, evaluator: Any, seat: str, masks: bool, opponents: Any,
                  say: Callable[[str], None]) -> Any:
    """Clone ``cfg.imitate`` into the model's policy before PPO (:mod:`extractgym.training.imitation`)."""
    from extractgym.training.envs import seat_env
    from extractgym.training.imitation import imitate

    env = seat_env(cfg.scenario, seat, "multi", opponents, cfg.overrides, monitor=False)
    try:
        return imitate(model, env, evaluator.knobs, lambda s: evaluator.brain(cfg.imitate, s), cfg.imitate, masks,
                       episodes=cfg.imitate_episodes, rounds=cfg.imitate_rounds,
                       smoothing=cfg.imitate_smoothing, seed=cfg.seed, log=say, stack=cfg.stack)
    finally:
        env.close()


def make_env_like(scenario: Any, action_space: str, overrides: Mapping[str, Any]) -> Any:
    from extractgym.scenarios import make_env

    return make_env(scenario, action_space=action_space, **dict(overrides))


def write_result(path: Path, r: TrainResult) -> None:
    final = r.final
    data = {"policy": str(r.policy), "config": r.config, "wall_seconds": r.wall_seconds, "cpu_seconds": r.cpu_seconds,
            "training_cpu_seconds": r.training_cpu_seconds, "evaluation_cpu_seconds": r.eval_cpu_seconds,
            "episodes": len(r.episodes), "checkpoints": [str(p) for p in r.checkpoints]}
    if r.imitation is not None:
        data["imitation"] = r.imitation.row()
    if r.baselines is not None:
        data["held_out_seeds"] = r.baselines.seeds
        data["baselines"] = {k: {"mean": float(v.mean()), "returns": v.tolist(), "note": r.baselines.notes.get(k, "")}
                             for k, v in r.baselines.returns.items()}
        data["baseline_notes"] = r.baselines.notes
    if final is not None:
        data["final"] = {**final.row(), "returns": final.returns.tolist(), "versus": final.versus}
    path.write_text(json.dumps(data, indent=1, default=float) + "\n")


__all__ = ["TrainConfig", "TrainResult", "train"]
