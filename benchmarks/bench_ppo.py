"""PPO training throughput on the single-seat attacker env (stable-baselines3, the RL use case: docs/rl.md).

``gymnasium.make("extractgym/Attacker-v0", scenario=SCENARIO)`` trained with
``PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0)`` for ``total_timesteps``; a callback times rollout
collection (env steps + policy forward) apart from the PPO updates and counts finished episodes. In the same run,
the same env is stepped with seeded random actions and no learner (``env_only_steps``), so the ratio
PPO steps/s ÷ env-only steps/s shows what the learner adds on top of the simulation.

One env step is one round of the game, so steps/s is rounds/s; an episode is ``rounds`` steps.

    .venv/bin/python benchmarks/bench_ppo.py
    .venv/bin/python benchmarks/bench_ppo.py --total-timesteps 128 --env-only-steps 40   # quicker
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from _common import machine, parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    scenario: str = "digits-basic"
    total_timesteps: int = 640
    """PPO timesteps (ten rollouts of n_steps=64; ~35 s at ~30 ms per env step)"""
    n_steps: int = 64
    batch_size: int = 32
    seed: int = 0
    env_only_steps: int = 100
    """env steps with random actions and no learner, half before and half after learn() (0: skip)"""
    warmup_steps: int = 10
    """untimed random-action steps first (first torch kernels, victim load)"""
    torch_threads: int = 0
    """process-wide torch intra-op threads (the PPO policy; the env's models follow EXTRACTGYM_TORCH_THREADS);
    0 leaves torch's default"""
    json: bool = True


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback

    import extractgym  # noqa: F401  (registers the Gymnasium ids)

    class Timer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.rollout_s, self.episodes, self.steps, self._t0 = 0.0, 0, 0, 0.0

        def _on_rollout_start(self) -> None:
            self._t0 = time.perf_counter()

        def _on_rollout_end(self) -> None:
            self.rollout_s += time.perf_counter() - self._t0

        def _on_step(self) -> bool:
            self.steps += 1
            self.episodes += int(np.sum(self.locals["dones"]))
            return True

    print(f"bench_ppo: scenario={args.scenario} total_timesteps={args.total_timesteps} n_steps={args.n_steps} "
          f"batch_size={args.batch_size} torch_threads={threads}")
    t0 = time.perf_counter()
    env = gym.make("extractgym/Attacker-v0", scenario=args.scenario)
    model = PPO("MlpPolicy", env, n_steps=args.n_steps, batch_size=args.batch_size, seed=args.seed, verbose=0,
                device="cpu")
    setup_s = time.perf_counter() - t0
    env.action_space.seed(args.seed)

    def env_only(n: int, seed: int) -> tuple[float, int]:
        """``n`` steps with random actions (resets included); returns (seconds, episodes finished)."""
        episodes = 0
        t0 = time.perf_counter()
        env.reset(seed=seed)
        for _ in range(n):
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            if term or trunc:
                episodes += 1
                env.reset()
        return time.perf_counter() - t0, episodes

    env_only(args.warmup_steps, args.seed + 1000)
    before = env_only(args.env_only_steps // 2, args.seed + 1)
    timer = Timer()
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.total_timesteps, callback=timer)
    learn_s = time.perf_counter() - t0
    after = env_only(args.env_only_steps - args.env_only_steps // 2, args.seed + 2)
    rounds = env.unwrapped.env.factory.scenario.rounds

    rows = [["PPO learn (total)", timer.steps, learn_s, timer.steps / learn_s, timer.episodes / learn_s],
            ["  rollout collection", timer.steps, timer.rollout_s, timer.steps / max(timer.rollout_s, 1e-9),
             float("nan")],
            ["  PPO updates + rest", float("nan"), learn_s - timer.rollout_s, float("nan"), float("nan")]]
    results = {"setup_s": setup_s, "learn_s": learn_s, "rollout_s": timer.rollout_s, "steps": timer.steps,
               "episodes": timer.episodes, "steps_per_s": timer.steps / learn_s,
               "episodes_per_s": timer.episodes / learn_s, "rounds_per_episode": rounds}
    if args.env_only_steps > 0:
        env_s, episodes = before[0] + after[0], before[1] + after[1]
        rows.append(["env only, random actions (incl. resets)", args.env_only_steps, env_s,
                     args.env_only_steps / env_s, episodes / env_s])
        results.update(env_only_s=env_s, env_only_steps_per_s=args.env_only_steps / env_s,
                       ppo_over_env_only=(timer.steps / learn_s) / (args.env_only_steps / env_s))

    print_table(f"throughput (setup: gymnasium.make + PPO(...) took {setup_s:.2f} s; an episode is {rounds} steps)",
                ["what", "steps", "seconds", "steps/s", "episodes/s"], rows)
    if args.env_only_steps > 0:
        print(f"\nPPO steps/s / env-only steps/s = {results['ppo_over_env_only']:.3f}; "
              f"rollouts are {100 * timer.rollout_s / learn_s:.1f}% of learn()")
    print("machine:", machine())
    if args.json:
        write_json("bench_ppo", args, results)


if __name__ == "__main__":
    main()
