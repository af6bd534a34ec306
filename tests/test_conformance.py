"""The checkers of PettingZoo, Gymnasium and stable-baselines3 on every shipped scenario, warnings as errors."""

from __future__ import annotations

import pickle
import warnings

import gymnasium
import numpy as np
import pytest
from pettingzoo.test import api_test, parallel_api_test
from pettingzoo.utils.conversions import parallel_to_aec
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import extractgym  # noqa: F401  (registers the gym ids)
from extractgym.scenarios import make_env

# Conformance does not depend on episode length: every shipped scenario is played for a few rounds.
SHORT = {"rounds": 2}



# Attackers and defenders observe different things, so their observation Boxes differ in length (each seat's also
# carries its own previous action). PettingZoo's AEC checker says so in two UserWarnings; they are informational
# (the API allows per-agent spaces, and RLlib trains separate policies on them), so only those are allowed. The AEC
# checker also warns on MultiDiscrete actions, which is why the flat Discrete option exists: it checks "flat"; the
# parallel checker (no such warning) checks both.
SHAPES = ("Agents have different observation space sizes", "Observations are different shapes")


@pytest.mark.parametrize("action_space", ["flat", "multi"])
def test_parallel_api(scenario_name: str, action_space: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parallel_api_test(make_env(scenario_name, action_space=action_space, **SHORT), num_cycles=10)


def test_aec_api(scenario_name: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for message in SHAPES:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        api_test(parallel_to_aec(make_env(scenario_name, action_space="flat", **SHORT)), num_cycles=10)


def test_spaces_are_cached_objects(scenario_name: str) -> None:
    env = make_env(scenario_name, **SHORT)
    for agent in env.possible_agents:
        assert env.observation_space(agent) is env.observation_space(agent)
        assert env.action_space(agent) is env.action_space(agent)


@pytest.mark.parametrize("env_id", ["extractgym/Attacker-v0", "extractgym/Defender-v0"])
def test_gymnasium_check_env(scenario_name: str, env_id: str) -> None:
    from gymnasium.utils.env_checker import check_env

    env = gymnasium.make(env_id, scenario=scenario_name, **SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ["extractgym/Attacker-v0", "extractgym/Defender-v0"])
def test_sb3_check_env(env_id: str) -> None:
    env = gymnasium.make(env_id, scenario="digits-basic", **SHORT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sb3_check_env(env.unwrapped, warn=True)


def _play(env, steps: int, seed: int) -> dict:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    transcript = {"obs": [obs], "rewards": [], "infos": []}
    for _ in range(steps):
        if not env.agents:
            break
        actions = {a: int(rng.integers(0, env.action_space(a).n)) for a in env.agents}
        obs, rewards, _, _, infos = env.step(actions)
        transcript["obs"].append(obs)
        transcript["rewards"].append(rewards)
        transcript["infos"].append(infos)
    transcript["summary"] = env.summary()
    return transcript


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return a == b


def test_n_step_determinism() -> None:
    """Two instances, same seed, random actions from the same stream: identical observations, rewards,
    ledger and referee figures for a whole episode (PettingZoo's seed test checks one step only)."""
    first = _play(make_env("digits-basic", rounds=6), steps=6, seed=7)
    second = _play(make_env("digits-basic", rounds=6), steps=6, seed=7)
    for key in ("obs", "rewards", "infos"):
        assert _equal(first[key], second[key]), key
    s1, s2 = first["summary"], second["summary"]
    assert s1["ledger_entries"] == s2["ledger_entries"] > 0
    assert _equal(s1, s2)  # includes the ledger digest and every referee figure
    other = _play(make_env("digits-basic", rounds=6), steps=6, seed=8)
    assert other["summary"]["ledger_digest"] != first["summary"]["ledger_digest"]


def test_unseeded_resets_are_reproducible_and_differ() -> None:
    env_a, env_b = make_env("digits-basic", rounds=2), make_env("digits-basic", rounds=2)
    digests = []
    for env in (env_a, env_b):
        run = []
        for _ in range(2):
            env.reset()
            while env.agents:
                env.step({a: 0 for a in env.agents})
            run.append(env.summary()["ledger_digest"])
        digests.append(run)
    assert digests[0] == digests[1]  # same scenario seed, same sequence of episodes
    assert digests[0][0] != digests[0][1]  # successive episodes differ


def test_pickle_round_trip() -> None:
    env = make_env("digits-basic", rounds=4)
    obs, _ = env.reset(seed=3)
    actions = {a: 0 for a in env.agents}
    env.step(actions)
    clone = pickle.loads(pickle.dumps(env))
    out_a = env.step(actions)
    out_b = clone.step(actions)
    for x, y in zip(out_a, out_b, strict=True):
        assert _equal(x, y)
    assert env.summary()["ledger_digest"] == clone.summary()["ledger_digest"]
    fresh = pickle.loads(pickle.dumps(make_env("digits-basic", rounds=2)))
    fresh.reset(seed=1)
    assert fresh.agents == fresh.possible_agents


def test_ppo_short_run(tmp_path) -> None:
    """A few thousand PPO steps on the attacker seat complete and log."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.logger import configure

    from extractgym.victims.training import torch_threads

    fast_attacker = [{"body": "random", "params": {"pool": "digits", "queries_per_round": 40, "train_steps": 10},
                      "budget": {"queries": 320}}]  # a cheap surrogate update: this test is about SB3, not accuracy
    env = gymnasium.make("extractgym/Attacker-v0", scenario="digits-basic", rounds=8, attackers=fast_attacker)
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=0, verbose=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    with torch_threads(1):  # PPO's small MLP updates are far faster single-threaded on 2 busy cores
        model.learn(total_timesteps=2048)
    assert torch.get_num_threads() >= 1
    log = (tmp_path / "progress.csv").read_text().splitlines()
    assert len(log) >= 2 and "rollout/ep_rew_mean" in log[0]
    assert model.num_timesteps >= 2048
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)
