"""SB3 callbacks of ``extractgym train``: paired evaluation on held-out seeds, episode log, checkpoints, progress.

* :class:`PairedEval`: every ``every`` steps (and at the end) the current policy (deterministic) plays the held-out
  seeds of the evaluation harness (:class:`~extractgym.scenarios.evaluate.Evaluator`, seeds ``HELD_OUT + i``), the
  same seeds the scripted baselines played once before training; each evaluation reports the policy's mean
  return +- SE and its paired difference to each baseline with a one-sided p-value (paired t-test). These figures
  are for watching: the policy kept is the last one, never the best-looking on the held-out seeds.
* :class:`EpisodeLog`: every finished training episode's return and length, by timestep (the learning curve).
* :class:`Checkpoints`: the policy with its metadata every ``every`` steps.
* :class:`ProgressBar`: a rich progress bar with the latest evaluation figures.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from extractgym.agents.brains.learned import ObsStack
from extractgym.envs.protocols import Knob, encode_action
from extractgym.scenarios.evaluate import Evaluator, paired


class ModelBrain:
    """The policy being trained as a brain (deterministic; flat actions); with ``stack > 1`` it reads the episode's
    last ``stack`` observations as in training (:class:`~extractgym.agents.brains.learned.ObsStack`)."""

    def __init__(self, model: Any, knobs: tuple[Knob, ...], multi: bool, stack: int = 1) -> None:
        self.model, self.knobs, self.multi = model, knobs, multi
        size = int(model.observation_space.shape[0]) // stack
        self.stack = ObsStack(stack, size) if stack > 1 else None

    def __call__(self, obs: np.ndarray) -> int:
        if self.stack is not None:
            obs = self.stack(obs)
        action, _ = self.model.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
        picks = np.asarray(action).reshape(-1)
        return encode_action(self.knobs, picks) if self.multi else int(picks[0])


@dataclass
class Evaluation:
    """One evaluation of the policy at ``step``: its returns per held-out seed and paired figures per baseline."""

    step: int
    returns: np.ndarray
    versus: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def se(self) -> float:
        n = len(self.returns)
        return float(self.returns.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan

    def row(self) -> dict[str, float]:
        out: dict[str, float] = {"step": self.step, "mean": self.mean, "se": self.se}
        for name, d in self.versus.items():
            out.update({f"{name}_diff": d["mean"], f"{name}_diff_se": d["se"], f"{name}_p_better": d["p_better"]})
        return out

    def status(self) -> str:
        parts = [f"eval@{self.step}: {self.mean:.3f}±{self.se:.3f}"]
        parts += [f"Δ{name} {d['mean']:+.3f} (p={d['p_better']:.2g})" for name, d in self.versus.items()]
        return "  ".join(parts)


@dataclass
class Baselines:
    """The scripted baselines' returns on the held-out seeds (played once), with a note per baseline."""

    seeds: list[int]
    returns: dict[str, np.ndarray]
    notes: dict[str, str] = field(default_factory=dict)

    def compare(self, step: int, returns: np.ndarray) -> Evaluation:
        versus = {}
        for name, base in self.returns.items():
            d = paired(returns, base)
            versus[name] = {"mean": d.mean, "se": d.se, "p_better": d.p_better}
        return Evaluation(step, np.asarray(returns, dtype=np.float64), versus)


def play_baselines(evaluator: Evaluator, names: Sequence[str], seeds: Sequence[int], train_seeds: int = 5,
                   max_constants: int = 64, progress: Callable[[str], None] | None = None) -> Baselines:
    """Play each baseline on ``seeds``. ``best-constant`` is searched on the training seeds only when the seat has
    at most ``max_constants`` constant actions (else it is left out, with a note)."""
    out = Baselines(list(seeds), {})
    for name in names:
        if progress:
            progress(name)
        if name == "best-constant":
            n = int(np.prod([len(k.choices) for k in evaluator.knobs])) if evaluator.knobs else 1
            if n > max_constants:
                out.notes[name] = f"skipped: {n} constant actions > {max_constants}"
                continue
            best, _ = evaluator.best_constant(list(range(train_seeds)))
            out.notes[name] = evaluator.describe(best)
            from extractgym.scenarios.evaluate import constant_brain

            res = evaluator.play(lambda seed, b=best: constant_brain(evaluator.knobs, b), seeds)
        else:
            evaluator.brain(name, seeds[0])  # fail now, naming the baseline
            res = evaluator.play(lambda seed, s=name: evaluator.brain(s, seed), seeds)
        out.returns[name] = res.returns
    return out


class PairedEval(BaseCallback):
    """Evaluate the policy on the held-out seeds every ``every`` timesteps and at the end (module docstring)."""

    def __init__(self, evaluator: Evaluator, baselines: Baselines, every: int, multi: bool,
                 on_eval: Callable[[Evaluation], None] | None = None, csv_path: Path | None = None,
                 stack: int = 1) -> None:
        super().__init__()
        self.evaluator, self.baselines, self.every, self.multi = evaluator, baselines, every, multi
        self.stack = stack
        self.on_eval, self.csv_path = on_eval, csv_path
        self.history: list[Evaluation] = []
        self._next = every
        self.cpu_seconds = 0.0  # spent evaluating (this process)

    def evaluate(self) -> Evaluation:
        import time

        t0 = time.process_time()
        brain = ModelBrain(self.model, self.evaluator.knobs, self.multi, self.stack)
        res = self.evaluator.play(lambda seed: brain, self.baselines.seeds)
        ev = self.baselines.compare(int(self.num_timesteps), res.returns)
        self.history.append(ev)
        self.cpu_seconds += time.process_time() - t0
        self.logger.record("eval/mean_return", ev.mean)
        self.logger.record("eval/se", ev.se)
        for name, d in ev.versus.items():
            self.logger.record(f"eval/vs_{name}", d["mean"])
            self.logger.record(f"eval/p_better_than_{name}", d["p_better"])
        if self.csv_path is not None:
            write_rows(self.csv_path, [e.row() for e in self.history])
        if self.on_eval:
            self.on_eval(ev)
        return ev

    def _on_step(self) -> bool:
        if self.every > 0 and self.num_timesteps >= self._next:
            self._next += self.every
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if not self.history or self.history[-1].step != self.num_timesteps:
            self.evaluate()


class EpisodeLog(BaseCallback):
    """Finished training episodes (from the ``Monitor`` info): timestep, return, length."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            ep = info.get("episode")
            if ep is not None:
                self.rows.append({"step": int(self.num_timesteps), "return": float(ep["r"]), "length": int(ep["l"])})
        return True


def cpu_seconds() -> float:
    """CPU-seconds of this process and its children, the running ones included (``SubprocVecEnv`` workers: read from
    ``/proc`` on Linux; elsewhere only finished children count)."""
    import os
    import resource

    me, done = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = me.ru_utime + me.ru_stime + done.ru_utime + done.ru_stime
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        tasks = Path("/proc/self/task")
        kids = {int(p) for t in tasks.iterdir() for p in (t / "children").read_text().split()}
    except OSError:
        return total
    for pid in kids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime of the running child
        except (OSError, IndexError, ValueError):
            continue
    return total


class CpuBudget(BaseCallback):
    """Stop learning once this process and its workers have used ``seconds`` CPU-seconds since ``start`` (a
    :func:`cpu_seconds` reading); ``exclude`` returns CPU-seconds not to count (the held-out evaluations)."""

    def __init__(self, seconds: float, start: float, exclude: Callable[[], float] = lambda: 0.0) -> None:
        super().__init__()
        self.seconds, self.start, self.exclude = float(seconds), float(start), exclude
        self.stopped_at: int | None = None

    def _on_step(self) -> bool:
        if self.n_calls % 16:  # reading /proc costs a little: every 16 steps is enough
            return True
        if cpu_seconds() - self.start - self.exclude() >= self.seconds:
            self.stopped_at = int(self.num_timesteps)
            return False
        return True


class Checkpoints(BaseCallback):
    """Save the policy (with metadata) every ``every`` timesteps as ``folder/step_N.zip``."""

    def __init__(self, folder: Path, every: int, save: Callable[[Any, Path], Path]) -> None:
        super().__init__()
        self.folder, self.every, self.save = folder, every, save
        self._next = every
        self.saved: list[Path] = []

    def _on_step(self) -> bool:
        if self.every > 0 and self.num_timesteps >= self._next:
            self._next += self.every
            self.saved.append(self.save(self.model, self.folder / f"step_{self.num_timesteps}.zip"))
        return True


class ProgressBar(BaseCallback):
    """Timesteps done of the total, with the latest evaluation figures as the bar's status."""

    def __init__(self, total: int, console: Any = None, description: str = "training") -> None:
        super().__init__()
        self.total, self.console, self.description = total, console, description
        self.progress: Any = None
        self.task: Any = None

    def _on_training_start(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                                 console=self.console)
        self.progress.start()
        self.task = self.progress.add_task(self.description, total=self.total, status="")

    def status(self, text: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task, status=text)

    def _on_step(self) -> bool:
        self.progress.update(self.task, completed=min(self.num_timesteps, self.total))
        return True

    def _on_training_end(self) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=min(self.num_timesteps, self.total))
            self.progress.stop()


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """A CSV of dict rows (columns: the union of their keys, in first-seen order)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
