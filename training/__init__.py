"""Reinforcement learning for the arena's seats (``extractgym train``, ``psro``, ``rllib``; see docs/rl.md).

* :mod:`~extractgym.training.train`: one seat with stable-baselines3 (masked PPO by default), paired evaluation on
  held-out seeds against the scripted baselines, checkpoints with metadata;
* :mod:`~extractgym.training.imitation`: cloning a teacher (DAgger) before RL;
* :mod:`~extractgym.training.algos`: the algorithms and their defaults for this arena's short, noisy episodes;
* :mod:`~extractgym.training.envs`: the vectorised seat envs SB3 trains on;
* :mod:`~extractgym.training.policies`: saving learned policies (loading: :mod:`extractgym.agents.brains.learned`);
* :mod:`~extractgym.training.psro`: both sides in alternation (PSRO over the tournament runner);
* :mod:`~extractgym.training.rllib`: every seat at once with RLlib (optional ``[ray]`` extra).
"""
