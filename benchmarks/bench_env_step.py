"""Wall time of one ``env.step`` (one round) on a scenario's ParallelEnv with the scenario's own brains.

Plays ``warmup_episodes`` untimed episodes (first-call costs: victim load, torch kernels), then times every
``env.step`` of ``episodes`` episodes (each reset with a different seed) and reports the median and p90 per step,
by round index too (the transfer set grows every round). Then plays ``profile_episodes`` more under cProfile and
breaks a step down: the direct callees of ``Game.step`` (attacker play_round, benign traffic, referee scoring,
observations) and of each attacker body's ``play_round`` (API queries vs surrogate training), as % of the
profiled step time, plus the heaviest functions by own time.

    .venv/bin/python benchmarks/bench_env_step.py
    .venv/bin/python benchmarks/bench_env_step.py --scenario digits-basic --episodes 5 --torch-threads 0
"""

from __future__ import annotations

import cProfile
import time
from dataclasses import dataclass

from _common import (callees, machine, median, parse_args, print_table, quantile, set_torch_threads, top_functions,
                     write_json)


@dataclass
class Args:
    scenario: str = "digits-basic"
    episodes: int = 10
    warmup_episodes: int = 1
    profile_episodes: int = 1
    seed: int = 0
    """episode ``i`` is reset with ``seed + i``"""
    torch_threads: int = 0
    """process-wide torch intra-op threads; 0 leaves torch's default (see README)"""
    top: int = 12
    json: bool = True


def play(env, seed: int, step_times: list[list[float]] | None = None) -> float:
    """One episode with the scenario's brains; append each step's wall time to ``step_times[round]``."""
    t0 = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    reset_s = time.perf_counter() - t0
    brains = env.factory.brains(seed)
    r = 0
    while env.agents:
        actions = {a: brains[a](obs[a]) for a in env.agents}
        t0 = time.perf_counter()
        obs, _, _, _, _ = env.step(actions)
        dt = time.perf_counter() - t0
        if step_times is not None:
            while len(step_times) <= r:
                step_times.append([])
            step_times[r].append(dt)
        r += 1
    return reset_s


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)
    from extractgym.scenarios import make_env

    env = make_env(args.scenario)
    print(f"bench_env_step: scenario={args.scenario} rounds={env.factory.scenario.rounds} "
          f"seats={env.possible_agents} torch_threads={threads}")
    t0 = time.perf_counter()
    for i in range(args.warmup_episodes):
        play(env, args.seed + 10_000 + i)
    warmup_s = time.perf_counter() - t0

    by_round: list[list[float]] = []
    resets = []
    t0 = time.perf_counter()
    for i in range(args.episodes):
        resets.append(play(env, args.seed + i, by_round))
    timed_s = time.perf_counter() - t0
    steps = [t for r in by_round for t in r]
    ms = lambda v: 1e3 * v  # noqa: E731
    print_table(f"env.step wall time over {args.episodes} episodes ({len(steps)} steps; "
                f"warm-up {args.warmup_episodes} episode(s) took {warmup_s:.2f} s)",
                ["what", "n", "median ms", "p90 ms", "min ms", "max ms"],
                [["step (all rounds)", len(steps), ms(median(steps)), ms(quantile(steps, 0.9)), ms(min(steps)),
                  ms(max(steps))],
                 ["reset", len(resets), ms(median(resets)), ms(quantile(resets, 0.9)), ms(min(resets)),
                  ms(max(resets))],
                 ["episode (reset + steps)", args.episodes, ms(timed_s / args.episodes), float("nan"), float("nan"),
                  float("nan")]])
    print_table("env.step by round index (the transfer set grows each round)",
                ["round", "n", "median ms", "p90 ms"],
                [[r, len(v), ms(median(v)), ms(quantile(v, 0.9))] for r, v in enumerate(by_round)])

    results = {"step_s": {"median": median(steps), "p90": quantile(steps, 0.9), "samples": steps},
               "reset_s": {"median": median(resets), "samples": resets},
               "by_round_median_s": [median(v) for v in by_round], "episodes_per_s": args.episodes / timed_s}

    if args.profile_episodes > 0:
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.profile_episodes):
            play(env, args.seed + 20_000 + i)
        prof.disable()
        step_total, step_rows = callees(prof, "envs/game.py", "step")
        n_steps = args.profile_episodes * env.factory.scenario.rounds
        print_table(f"Game.step under cProfile ({n_steps} steps, {1e3 * step_total / n_steps:.1f} ms/step profiled): "
                    "direct callees, % of Game.step cumulative time",
                    ["function", "calls", "% of step", "ms/step"],
                    [[r["function"], r["calls"], r["cumtime_pct"], 1e3 * r["cumtime_s"] / n_steps]
                     for r in step_rows[:args.top]])
        results["profile"] = {"steps": n_steps, "game_step_cumtime_s": step_total, "game_step_callees": step_rows}
        bodies = {type(a.seat.body) for a in env.game.attackers.values()} if env.game else set()
        for cls in bodies:
            module_file = cls.__module__.replace("extractgym.", "").replace(".", "/") + ".py"
            total, rows = callees(prof, module_file, "play_round")
            if not rows:
                continue
            print_table(f"{cls.__name__}.play_round: direct callees, % of Game.step time",
                        ["function", "calls", "% of step", "ms/step"],
                        [[r["function"], r["calls"], 100 * r["cumtime_s"] / step_total, 1e3 * r["cumtime_s"] / n_steps]
                         for r in rows[:args.top]])
            results["profile"][f"{cls.__name__}.play_round_callees"] = rows
        tops = top_functions(prof, args.top, "tottime")
        print_table(f"top {args.top} functions by own time (whole profiled episodes, incl. reset)",
                    ["function", "calls", "tottime %", "cumtime %"],
                    [[r["function"], r["calls"], r["tottime_pct"], r["cumtime_pct"]] for r in tops])
        results["profile"]["by_tottime"] = tops

    print("machine:", machine())
    if args.json:
        write_json("bench_env_step", args, results)


if __name__ == "__main__":
    main()
