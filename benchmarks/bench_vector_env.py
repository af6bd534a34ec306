"""Env steps per CPU-second of the vector env against the serial env, per rl- scenario, in one run (issue 20).

For each scenario's learning seat (``Attacker-v0``, ``Defender-v0`` for rl-defender), random actions, resets
included, one torch thread, every measurement after a warm-up episode, interleaved over ``--repeats`` (medians
reported), ratios to the baseline (the serial env before issue 20, or of the full setting: ``surrogates: full,
answer_table: false``, the game before issue 20):

* ``serial, before``: with ``--before PATH`` (a checkout of the code before issue 20, e.g. ``git worktree add
  /tmp/before 7528841``), its serial env, in a subprocess: the baseline when given;
* ``serial, full``: ``gymnasium.make`` of the full setting (the baseline otherwise: faster than before issue 20,
  whose resets it shares);
* ``serial``: ``gymnasium.make`` of the scenario as shipped (cheap surrogates, answer table);
* ``vector K``: ``gymnasium.make_vec(..., num_envs=K, vectorization_mode="vector_entry_point")`` as shipped, for each
  ``--ks``, every sub-env playing ``--episodes`` whole episodes (same-step autoreset, so every step is a round);
* ``vector 32, full``: the full setting in the vector env (what lockstep and batched scoring give on their own).

Then PPO on top (``--ppo``): sb3-contrib's MaskablePPO with ``extractgym train``'s defaults learning on the vector env
of K = ``--ppo-envs`` against the same learner on ``--ppo-base-envs`` serial envs of the full setting in a
``DummyVecEnv`` (what ``train --envs 2`` ran before), in training steps per CPU-second. And the surrogate's
arithmetic: the cheap recipe's multiply-adds per round (K surrogates of ``--fit-rows`` rows each) and the rate the
batched fit reaches (GFLOP/s, 2 flops per multiply-add), against the full schedule's per episode and round; on a GPU
(when torch sees one, or ``--device cuda``), the same at K = 256 and the vector env at K = 256.

    .venv/bin/python benchmarks/bench_vector_env.py                       # about 15 minutes on 2 busy cores
    .venv/bin/python benchmarks/bench_vector_env.py --scenarios rl-duel --ks 32 --repeats 1 --ppo false
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
from _common import machine, median, parse_args, print_table, set_torch_threads, write_json

FULL = {"surrogates": "full", "answer_table": False}
ROLES = {"rl-duel": "Attacker", "rl-sybil": "Attacker", "rl-defender": "Defender"}


@dataclasses.dataclass
class Args:
    scenarios: tuple = ("rl-duel", "rl-sybil", "rl-defender")
    ks: tuple = (1, 8, 32, 128)
    episodes: int = 1  # whole episodes per sub-env in a vector measurement (K=1: at least min_steps rounds)
    min_steps: int = 96  # rounds per measurement at least
    serial_episodes: int = 3
    repeats: int = 2
    full_k: int = 32  # the vector env of the full setting
    ppo: bool = True
    ppo_envs: int = 32
    ppo_base_envs: int = 2
    ppo_rollouts: int = 2  # rollouts of n_steps per env learned in each PPO measurement
    fit_rows: int = 120  # transfer-set rows per surrogate in the arithmetic measurement
    before: str = ""  # a checkout of the code before issue 20: its serial env is the baseline (in a subprocess)
    device: str = "auto"  # for the GPU rows: auto (when torch sees one), cuda, or cpu (no GPU rows)
    gpu_k: int = 256
    torch_threads: int = 1
    json: bool = True


def serial_rate(scenario: str, overrides: dict, episodes: int, seed: int) -> float:
    import gymnasium

    import extractgym  # noqa: F401

    env = gymnasium.make(f"extractgym/{ROLES[scenario]}-v0", scenario=scenario, **overrides)
    env.reset(seed=0)  # warm: victims, encoders, calibration (once per process), a whole episode
    env.action_space.seed(seed)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        done = term or trunc
    steps, start = 0, time.process_time()
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            steps += 1
            done = term or trunc
    rate = steps / (time.process_time() - start)
    env.close()
    return rate


def before_rate(checkout: str, scenario: str, episodes: int, seed: int) -> float:
    """:func:`serial_rate` of another checkout's code, in a subprocess (its package imported from ``checkout``)."""
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(os.path.abspath(checkout), os.path.join(tmp, "extractgym"))
        code = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import torch; torch.set_num_threads(1); "
                f"from bench_vector_env import serial_rate; print(serial_rate({scenario!r}, {{}}, {episodes}, {seed}))")
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": tmp}, check=True,
                             capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def vector_rate(scenario: str, k: int, overrides: dict, episodes: int, min_steps: int, seed: int,
                device: str | None = None) -> float:
    import gymnasium

    extra = {"device": device} if device else {}
    venv = gymnasium.make_vec(f"extractgym/{ROLES[scenario]}-v0", num_envs=k, vectorization_mode="vector_entry_point",
                              scenario=scenario, autoreset_mode="same-step", **overrides, **extra)
    venv.reset(seed=0)  # warm: a whole episode of every sub-env
    venv.action_space.seed(seed)
    rounds = venv.factory.scenario.rounds
    for _ in range(rounds):
        venv.step(venv.action_space.sample())
    calls = rounds * max(episodes, math.ceil(min_steps / (k * rounds)))
    start = time.process_time()
    venv.reset(seed=seed)
    for _ in range(calls):
        venv.step(venv.action_space.sample())
    rate = calls * k / (time.process_time() - start)
    venv.close()
    return rate


def ppo_rate(scenario: str, n_envs: int, vec: str, overrides: dict, rollouts: int) -> float:
    from extractgym.training import algos
    from extractgym.training.envs import make_vec_env, one_thread

    one_thread()
    seat = "defender_0" if ROLES[scenario] == "Defender" else "attacker_0"
    algo = algos.get_algo("maskable-ppo")
    hp = algos.hyperparameters("maskable-ppo", n_envs, {})
    venv = make_vec_env(scenario, seat, n_envs, 0, algo.action_space, vec, None, overrides)
    model = algo.load()("MlpPolicy", venv, seed=0, device="cpu", verbose=0,
                        policy_kwargs=algos.torch_policy_kwargs(algos.policy_kwargs("maskable-ppo")), **hp)
    steps = rollouts * hp["n_steps"] * n_envs
    start = time.process_time()
    model.learn(steps)
    rate = steps / (time.process_time() - start)
    venv.close()
    return rate


def fit_arithmetic(k: int, rows: int, device: str, repeats: int = 5) -> dict:
    """The cheap recipe's batched fit of ``k`` surrogates: multiply-adds per round, CPU (or wall, on CUDA) seconds
    per round, GFLOP/s."""
    import torch

    from extractgym.agents.extraction.surrogate import CHEAP_RECIPE
    from extractgym.victims import ensemble

    dev = ensemble.resolve_device(device)
    arch = ensemble.SmallMLP(64, CHEAP_RECIPE.hidden, 10)
    rng = np.random.default_rng(0)
    fits = [ensemble.Fit(ensemble.Member.new(arch, i, dev),
                         torch.from_numpy(rng.random((rows, 64), dtype=np.float32)).to(dev),
                         torch.softmax(torch.from_numpy(rng.normal(size=(rows, 10)).astype(np.float32)), 1).to(dev), i)
            for i in range(k)]
    ensemble.train(fits, CHEAP_RECIPE.schedule)  # warm
    clock = time.perf_counter if dev.type == "cuda" else time.process_time
    times = []
    for _ in range(repeats):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = clock()
        ensemble.train(fits, CHEAP_RECIPE.schedule)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - t0)
    macs = k * CHEAP_RECIPE.steps * ensemble.step_macs(arch, CHEAP_RECIPE.batch)
    t = median(times)
    return {"k": k, "device": dev.type, "macs_per_round": macs, "seconds_per_round": t, "gflops": 2 * macs / t / 1e9}


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    import torch

    import extractgym  # noqa: F401
    from extractgym.agents.extraction.surrogate import CHEAP_RECIPE, WARM_BATCH, WARM_STEPS
    from extractgym.victims import ensemble

    gpu = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    results: dict = {"rates": {}, "ppo": {}, "arithmetic": {}}
    rows = []
    for scenario in args.scenarios:
        configs = [("serial, before", lambda s, sc=scenario: before_rate(args.before, sc, args.serial_episodes, s))] \
            if args.before else []
        configs += [("serial, full", lambda s, sc=scenario: serial_rate(sc, FULL, args.serial_episodes, s)),
                    ("serial", lambda s, sc=scenario: serial_rate(sc, {}, args.serial_episodes, s))]
        configs += [(f"vector {k}", lambda s, sc=scenario, k=k: vector_rate(sc, k, {}, args.episodes, args.min_steps, s))
                    for k in args.ks]
        configs.append((f"vector {args.full_k}, full",
                        lambda s, sc=scenario: vector_rate(sc, args.full_k, FULL, args.episodes, args.min_steps, s)))
        if gpu:
            configs.append((f"vector {args.gpu_k}, cuda", lambda s, sc=scenario: vector_rate(
                sc, args.gpu_k, {}, args.episodes, args.min_steps, s, device="cuda")))
        rates: dict[str, list[float]] = {name: [] for name, _ in configs}
        for r in range(args.repeats):  # interleaved: load drifts hit every configuration alike
            for name, fn in configs:
                rates[name].append(fn(100 + 1000 * r))
                print(f"  {scenario} {name}: {rates[name][-1]:.1f} steps/CPU-s", flush=True)
        base = median(rates["serial, before" if args.before else "serial, full"])
        for name, values in rates.items():
            rows.append([scenario, name, median(values), median(values) / base, len(values)])
        results["rates"][scenario] = {name: {"median": median(v), "samples": v, "ratio": median(v) / base}
                                      for name, v in rates.items()}
    print_table("Env steps per CPU-second (random actions, resets included, one torch thread; median of repeats; "
                f"ratio to the serial env {'before issue 20' if args.before else 'of the full setting'})",
                ["scenario", "env", "steps/CPU-s", "x baseline", "n"], rows)

    if args.ppo:
        rows = []
        for scenario in args.scenarios:
            vec = ppo_rate(scenario, args.ppo_envs, "vector", {}, args.ppo_rollouts)
            before = ppo_rate(scenario, args.ppo_base_envs, "dummy", FULL, args.ppo_rollouts * 4)
            rows.append([scenario, f"vector {args.ppo_envs}", vec, f"dummy {args.ppo_base_envs}, full", before,
                         vec / before])
            results["ppo"][scenario] = {"vector": vec, "before": before, "ratio": vec / before}
        print_table("MaskablePPO training steps per CPU-second (learner included)",
                    ["scenario", "env", "steps/CPU-s", "before", "steps/CPU-s", "x before"], rows)

    arith = [fit_arithmetic(k, args.fit_rows, "cpu") for k in (1, 8, 32, 128)]
    if gpu:
        arith.append(fit_arithmetic(args.gpu_k, args.fit_rows, "cuda"))
    full_macs = WARM_STEPS * 3 * WARM_BATCH * (64 * 128 + 128 * 10)
    print_table(f"The cheap surrogates' arithmetic per round ({CHEAP_RECIPE.steps} steps of {CHEAP_RECIPE.batch} rows, "
                f"{CHEAP_RECIPE.hidden} hidden units; the full schedule is {full_macs / 1e6:.0f} M multiply-adds per "
                f"surrogate and round)",
                ["K", "device", "M multiply-adds / round", "per surrogate", "ms / round", "GFLOP/s"],
                [[a["k"], a["device"], a["macs_per_round"] / 1e6, a["macs_per_round"] / a["k"] / 1e6,
                  1e3 * a["seconds_per_round"], a["gflops"]] for a in arith])
    results["arithmetic"] = {"cheap": arith, "full_macs_per_surrogate_round": full_macs,
                             "cheap_macs_per_surrogate_round": CHEAP_RECIPE.steps * ensemble.step_macs(
                                 ensemble.SmallMLP(64, CHEAP_RECIPE.hidden, 10), CHEAP_RECIPE.batch)}
    print("machine:", machine())
    if args.json:
        write_json("bench_vector_env", args, results)


if __name__ == "__main__":
    main()
