"""Training throughput of ``extractgym train`` with 1 and 2 worker processes, as a ratio to raw env steps/s.

In one run, interleaved ``--repeats`` times (medians reported):

* **raw env**: the training env of one seat (:func:`extractgym.training.envs.seat_env`: the scenario's opponents,
  a fresh seeded episode per reset) stepped in this process with random valid actions and no learner;
* **train**: ``MaskablePPO`` ``learn()`` on the same seat (the defaults of ``extractgym train``: 64-step rollouts
  in total, 10 epochs) on ``DummyVecEnv`` with 1 and 2 envs (everything in this process) and ``SubprocVecEnv`` with
  1 and 2 envs (1 and 2 worker processes), each with one torch thread per process, timed after the vec env is
  built (worker start-up is reported apart).

Each row gives steps/s (wall), steps per CPU-second of this process and its workers, and steps/s ÷ raw env
steps/s. The vectorisation rule of ``extractgym train`` (``training/envs.py``) comes from these figures.

    .venv/bin/python benchmarks/bench_train.py
    .venv/bin/python benchmarks/bench_train.py --scenario digits-basic --rounds 5 --timesteps 256
"""

from __future__ import annotations

import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np

from _common import machine, parse_args, print_table, write_json


@dataclass
class Args:
    scenario: str = "digits-similarity"
    rounds: int = 3
    seat: str = "attacker_0"
    timesteps: int = 128
    """training timesteps per configuration and repeat (two 64-step rollouts)"""
    raw_steps: int = 60
    """raw env steps per repeat"""
    repeats: int = 2
    configs: tuple[str, ...] = ("dummy:1", "subproc:1", "dummy:2", "subproc:2")
    seed: int = 0
    json: bool = True


def cpu_now() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    args = parse_args(Args)
    from sb3_contrib import MaskablePPO

    from extractgym.training import algos
    from extractgym.training.envs import make_vec_env, one_thread, seat_env

    one_thread()
    overrides = {"rounds": args.rounds}
    print(f"bench_train: {args.scenario} (rounds={args.rounds}) seat={args.seat} timesteps={args.timesteps} "
          f"repeats={args.repeats} configs={' '.join(args.configs)}")

    env = seat_env(args.scenario, args.seat, overrides=overrides)
    env.reset(seed=args.seed)
    rng = np.random.default_rng(args.seed)

    def raw(n: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), cpu_now()
        for _ in range(n):
            mask = env.unwrapped.action_masks()
            sizes = env.action_space.nvec
            action, start = [], 0
            for size in sizes:  # a random valid choice per knob
                allowed = np.flatnonzero(mask[start:start + size])
                action.append(int(rng.choice(allowed)))
                start += size
            _, _, term, trunc, _ = env.step(np.asarray(action))
            if term or trunc:
                env.reset()
        return time.perf_counter() - t0, cpu_now() - c0

    raw(5)  # warm-up: first kernels, caches
    results: dict[str, dict[str, list[float]]] = {"raw": {"wall": [], "cpu": []}}
    results.update({c: {"wall": [], "cpu": [], "startup": []} for c in args.configs})
    for rep in range(args.repeats):
        w, c = raw(args.raw_steps)
        results["raw"]["wall"].append(args.raw_steps / w)
        results["raw"]["cpu"].append(args.raw_steps / c)
        for config in args.configs:
            kind, n = config.split(":")
            n_envs = int(n)
            t0 = time.perf_counter()
            venv = make_vec_env(args.scenario, args.seat, n_envs, args.seed + rep, "multi", kind, overrides=overrides)
            hp = algos.hyperparameters("maskable-ppo", n_envs, {"n_steps": 64 // n_envs})
            model = MaskablePPO("MlpPolicy", venv, seed=args.seed, device="cpu", verbose=0,
                                policy_kwargs=algos.torch_policy_kwargs(algos.policy_kwargs("maskable-ppo")), **hp)
            startup = time.perf_counter() - t0
            t0, c0 = time.perf_counter(), cpu_now()
            model.learn(args.timesteps)
            wall = time.perf_counter() - t0
            steps = model.num_timesteps
            venv.close()  # the workers' CPU counts once they are joined
            cpu = cpu_now() - c0
            results[config]["wall"].append(steps / wall)
            results[config]["cpu"].append(steps / cpu)
            results[config]["startup"].append(startup)
            print(f"  repeat {rep}: {config}: {steps / wall:.2f} steps/s, {steps / cpu:.2f} steps/CPU-s, "
                  f"start-up {startup:.1f} s")
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in results.items()}
    raw_wall = med["raw"]["wall"]
    rows = [["raw env (1 process, random actions)", raw_wall, med["raw"]["cpu"], 1.0, float("nan")]]
    for config in args.configs:
        kind, n = config.split(":")
        workers = int(n) if kind == "subproc" else 0
        label = f"train, {kind} x{n} ({workers} worker process{'es' if workers != 1 else ''})"
        rows.append([label, med[config]["wall"], med[config]["cpu"], med[config]["wall"] / raw_wall,
                     med[config]["startup"]])
    print_table("training throughput (medians; ratio = steps/s / raw env steps/s)",
                ["what", "steps/s", "steps/CPU-s", "ratio to raw", "start-up s"], rows)
    print("machine:", machine())
    if args.json:
        write_json("bench_train", args, {"results": results, "medians": med,
                                         "ratio_to_raw": {c: med[c]["wall"] / raw_wall for c in args.configs}})


if __name__ == "__main__":
    main()
