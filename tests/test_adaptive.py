"""Issue 21's pieces: the sampler-switch attacker, the switch's component knobs, the mixture brain (hidden types),
hidden-type evaluation (episode types, per-type best constants, coordinate ascent), policies with memory, the CPU
budget of a training run, and the stress test's defence card."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from extractgym.agents.brains import BRAINS
from extractgym.agents.brains.learned import LearnedBrain, ObsStack, PolicyError, read_meta
from extractgym.agents.registry import ATTACKERS, DEFENDERS
from extractgym.cli import app
from extractgym.envs.protocols import knob_values
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.evaluate import Evaluator, coordinate_ascent
from extractgym.scenarios.runner import play_episode

WIDE = {"COLUMNS": "200"}


def small(defences=("none", "reverse-sigmoid"), rounds: int = 2, **attacker) -> dict:
    """A cheap game: the sampler-switch attacker against a switch whose defence is drawn per episode."""
    return {"name": "small", "rounds": rounds,
            "services": [{"name": "api", "victim": "digits-cnn", "output": "probs", "price_per_query": 0.01}],
            "attackers": [{"body": "sampler-switch", "budget": {"queries": 200, "money": 10.0, "accounts": 2},
                           "params": {"pool": "digits", "queries_per_round": 20, **attacker}}],
            "defenders": [{"body": "switch", "params": {"defences": list(defences)}, "brain": {"kind": "sticky-random"}}],
            "rewards": {"accuracy": 1.0}}


# -- the sampler-switch attacker ------------------------------------------------------------------------------
def test_sampler_switch_holds_only_its_pool_and_synthesises_beyond_it():
    env = make_env(small(rounds=3, pool_size=15), action_space="multi")
    knobs = env.knobs("attacker_0")
    assert [k.name for k in knobs][:2] == ["queries", "sampler"] and "mode" not in [k.name for k in knobs]
    obs, _ = env.reset(seed=0)
    body = env.game.attackers["attacker_0"].seat.body
    pool = body.pool.reshape(len(body.pool), -1)
    natural = {"queries": 20, "sampler": "random"}
    synthetic = {"queries": 20, "sampler": "jbda"}
    for values in (natural, natural, synthetic):
        idx = [k.choices.index(values.get(k.name, k.choices[k.default])) for k in knobs]
        brains = env.factory.brains(0)
        env.step({"attacker_0": idx, "defender_0": brains["defender_0"](obs["defender_0"])})
    # 15 natural samples held: the first round bought them all, the second found none left to buy
    assert body.unsent.sum() == 0 and sum(len(b) for b in body.bought) == 15
    # the synthetic round: one JBDA step from each of the 15 (a generation), then 5 from the next generation
    assert body.synthetic == 20
    synth = body.dx[-body.synthetic:].reshape(body.synthetic, -1)
    # synthetic queries are not pool samples, and they are within the input range
    assert not any(np.isclose(pool, row).all(axis=1).any() for row in synth)
    assert synth.min() >= body.low and synth.max() <= body.high


def test_sampler_switch_samplers_choose_differently_and_bad_parameters_are_named():
    cls = ATTACKERS["sampler-switch"]
    body = cls(samplers=["random", "uncertainty"], sampler="uncertainty")
    sampler = next(k for k in body.knobs if k.name == "sampler")
    assert sampler.choices == ("random", "uncertainty") and sampler.choices[sampler.default] == "uncertainty"
    for bad, match in (({"samplers": ["random", "dfme"]}, "samplers"), ({"sampler": "jbda", "samplers": ["random"]},
                                                                         "not among"),
                       ({"pool_size": 0}, "pool_size"), ({"eps": float("nan")}, "eps")):
        with pytest.raises(ValueError, match=match):
            cls(**bad)
    with pytest.raises(ScenarioError, match="pool_size"):
        load_scenario(small(pool_size=-3))


# -- the switch's component knobs ----------------------------------------------------------------------------
def test_switch_sets_component_knobs_and_exposes_the_active_detectors_pressures():
    sw = DEFENDERS["switch"](defences=["none", "similarity"], knobs={"similarity": {"level": 2.0}})
    assert sw.presets["similarity"]["level"] == 2.0 and sw.pressures == {}
    for knobs, match in (({"mad": {"epsilon": 1.0}}, "not in defences"), ({"similarity": {"levels": 2.0}}, "no knob"),
                         ({"similarity": {"level": 3.3}}, "no choice")):
        with pytest.raises(ValueError, match=match):
            DEFENDERS["switch"](defences=["none", "similarity"], knobs=knobs)
    env = make_env("rl-gauntlet", rounds=1, defenders=[{**load_scenario("rl-gauntlet").defenders[0].model_dump(),
                                                         "brain": {"kind": "preset", "knobs": {"defence": "similarity"}}}])
    s = play_episode(env, seed=0, brains={**env.factory.brains(0)})
    body = env.game.defenders["defender_0"]
    assert body.active == "similarity" and body.pressures is body.components["similarity"].pressures
    assert s["attackers"]["attacker_0"]["queries"] > 0


# -- the mixture brain (hidden types) ---------------------------------------------------------------------------
def test_mixture_draws_one_brain_per_episode_and_holds_it():
    env = make_env("rl-gauntlet-defender", action_space="multi", rounds=2)
    knobs = env.knobs("attacker_0")
    draws = set()
    for seed in range(12):
        brain = env.factory.brains(seed)["attacker_0"]
        obs = np.zeros(24, dtype=np.float32)
        first = brain(obs)
        obs[0] = 0.5  # a later round: same drawn brain (a constant member plays the same action)
        drawn = brain.drawn
        brain(obs)
        assert brain.drawn == drawn
        draws.add(drawn)
        again = env.factory.brains(seed)["attacker_0"]
        assert again(np.zeros(24, dtype=np.float32)) == first and again.drawn == drawn  # seeded by the episode
    assert len(draws) >= 4
    quiet = BRAINS["mixture"](knobs, {}, np.random.default_rng(0), brains=[{"name": "q", "knobs": {"queries": 0}}])
    assert knob_values(knobs, quiet(np.zeros(24)))["queries"] == 0 and quiet.drawn == "q"
    for brains, match in (([], "at least one"), (["nope"], "unknown brain"), ([{"kind": "preset", "oops": 1}], "unknown"),
                          ([{"knobs": {"queries": 7}}], "no choice"), (["random", "random"], "distinct")):
        with pytest.raises(ValueError, match=match):
            BRAINS["mixture"](knobs, {}, None, brains=brains)
    with pytest.raises(ValueError, match="weights"):
        BRAINS["mixture"](knobs, {}, None, brains=["random", "preset"], weights=[1.0])


# -- hidden-type evaluation -----------------------------------------------------------------------------------
def test_coordinate_ascent_finds_separable_optima_and_scores_each_action_once():
    target = (2, 0, 3)
    calls: dict[tuple[int, ...], int] = {}

    def score(c):
        calls[c] = calls.get(c, 0) + 1
        return -sum((a - b) ** 2 for a, b in zip(c, target, strict=True))

    memo: dict[tuple[int, ...], float] = {}

    def memoised(c):
        if c not in memo:
            memo[c] = score(c)
        return memo[c]

    best = coordinate_ascent(memoised, [3, 2, 4], [(0, 1, 0)])
    assert best == target and max(calls.values()) == 1 and len(calls) < 3 * 2 * 4
    # a coupled optimum one knob at a time cannot reach: ascent stops at the local one, a second start finds it
    def coupled(c):
        return 1.0 if c == (1, 1) else (0.5 if c == (0, 0) else 0.0)
    assert coordinate_ascent(coupled, [2, 2], [(0, 0)]) == (0, 0)
    assert coordinate_ascent(coupled, [2, 2], [(0, 0), (0, 1)]) == (1, 1)


def test_episode_types_are_the_hidden_draws_and_the_type_oracle_plays_each_types_constant():
    ev = Evaluator(small(rounds=1))
    types = {ev.episode_type(s) for s in range(30)}
    assert types == {"defence=none", "defence=reverse-sigmoid"}
    typed = ev.typed_seeds(2)
    assert set(typed) == types and all(len(v) == 2 for v in typed.values())
    assert all(ev.episode_type(s) == t for t, seeds in typed.items() for s in seeds)
    results = ev.evaluate(["best-constant", "type-oracle"], seeds=4, train_seeds=1)
    oracle = results[1]
    assert len(oracle.types) == 4 and set(oracle.types) <= types
    assert all(t in oracle.note for t in types)  # the note names each type's constant
    assert set(oracle.by_type()) == set(oracle.types)


def test_eval_by_type_prints_the_value_of_adaptation(tmp_path):
    path = tmp_path / "small.yaml"
    import yaml

    path.write_text(yaml.safe_dump(small(rounds=1)))
    out = tmp_path / "eval.json"
    r = CliRunner().invoke(app, ["eval", str(path), "--policy", "best-constant", "--policy", "type-oracle",
                                 "--seeds", "3", "--train-seeds", "1", "--out", str(out)], env=WIDE)
    assert r.exit_code == 0, r.output
    assert "value of adaptation" in r.output and "defence=reverse-sigmoid" in r.output
    data = json.loads(out.read_text())
    assert {"value", "se", "per_type"} <= set(data["adaptation"]) and len(data["results"][1]["types"]) == 3


# -- memory ---------------------------------------------------------------------------------------------------
def test_obs_stack_matches_sb3_vec_frame_stack():
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

    class Count(gym.Env):
        observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            self.t = 0
            return np.array([0.0, 0.9], np.float32), {}

        def step(self, action):
            self.t += 1
            return np.array([self.t / 4, self.t / 10], np.float32), 0.0, self.t == 3, False, {}

    venv = VecFrameStack(DummyVecEnv([Count]), 3)
    stack = ObsStack(3, 2)
    raw = Count()
    obs, _ = raw.reset()
    assert np.array_equal(venv.reset()[0], stack(obs))
    for _ in range(7):  # across an episode boundary (the vec env resets itself)
        seen, *_ = venv.step([0])
        obs, _, done, _, _ = raw.step(0)
        if done:
            obs, _ = raw.reset()
        assert np.array_equal(seen[0], stack(obs))


def test_training_with_memory_and_a_cpu_budget(tmp_path):
    from extractgym.training.train import TrainConfig, train

    cfg = TrainConfig(small(rounds=2), "attacker_0", "maskable-ppo", timesteps=10_000, n_envs=1, seed=0, out=tmp_path,
                      vec="dummy", eval_seeds=0, params={"n_steps": 8, "batch_size": 8, "n_epochs": 1},
                      progress=False, tensorboard=False, stack=3, cpu_minutes=0.05)
    result = train(cfg)
    meta = read_meta(result.policy)
    assert meta["memory"] == {"stack": 3} and meta["observation"]["shape"] == [3 * 19]  # 16 features + 3 knobs
    stopped = result.config["cpu_budget_stopped_at"]
    assert stopped is not None and stopped < 10_000 and result.training_cpu_seconds < 60
    env = make_env(small(rounds=2), action_space="multi")
    brain = LearnedBrain(result.policy, "attacker", env.knobs("attacker_0"))
    assert brain.stack is not None
    s = play_episode(env, seed=3, brains={**env.factory.brains(3), "attacker_0": brain})
    assert s["rounds"] == 2
    with pytest.raises(ValueError, match="stack"):
        train(TrainConfig(small(), stack=0, out=tmp_path / "bad", eval_seeds=0, progress=False))


def test_a_memory_policy_is_refused_by_a_seat_whose_stack_would_not_fit(tmp_path):
    from extractgym.agents.brains.learned import check_seat

    env = make_env(small(), action_space="multi")
    knobs = env.knobs("attacker_0")
    meta = {"role": "attacker", "seat": "attacker_0", "knobs": [{"name": k.name, "choices": [str(c) for c in k.choices]}
                                                                for k in knobs],
            "observation": {"shape": [19]}, "memory": {"stack": 2}}
    with pytest.raises(PolicyError, match="trained for"):
        check_seat(meta, "p.zip", "attacker", knobs)
    meta["observation"]["shape"] = [38]
    check_seat(meta, "p.zip", "attacker", knobs)
    meta["memory"] = {"stack": 0}
    with pytest.raises(PolicyError, match="memory.stack"):
        check_seat(meta, "p.zip", "attacker", knobs)


# -- the stress test ------------------------------------------------------------------------------------------
def test_stress_writes_a_defence_card(tmp_path):
    path = tmp_path / "small.yaml"
    import yaml

    path.write_text(yaml.safe_dump(small(rounds=1)))
    out = tmp_path / "card"
    r = CliRunner().invoke(app, ["stress", str(path), "--out", str(out), "--cpu-minutes", "0.3", "--seeds", "3",
                                 "--search-seeds", "1", "--no-variants", "--no-rl"], env=WIDE)
    assert r.exit_code == 0, r.output
    card = json.loads((out / "card.json").read_text())
    assert {"passive", "adaptive", "gap", "gap_ci", "strategy", "threat_model"} <= set(card)
    lo, hi = card["gap_ci"]
    assert lo <= card["gap"] <= hi
    assert card["passive"]["name"] == "preset (passive)" and len(card["passive"]["returns"]) == 3
    assert card["threat_model"]["budget"] == {"queries": 200, "money": 10.0, "accounts": 2}
    assert card["strategy"]["trace"] and card["strategy"]["description"]
    assert card["search"]["learning_curve"] and (out / "learning_curve.png").exists()
    html = (out / "card.html").read_text()
    assert "Defence card" in html and "<script" not in html and "data:image/png;base64," in html
    # the same held-out seeds without the defence, and the erosion: the difference in differences, seed by seed
    bare, ero = card["undefended"], card["erosion"]
    assert bare["status"] == "replayed" and ero["status"] == "measured"
    assert {"passive", "adaptive", "gap", "gap_ci"} <= set(bare) and len(bare["adaptive"]["returns"]) == 3
    assert bare["passive"]["accuracy"] is not None and bare["adaptive"]["queries"] > 0
    a, p = np.asarray(card["adaptive"]["returns"]), np.asarray(card["passive"]["returns"])
    ua, up = np.asarray(bare["adaptive"]["returns"]), np.asarray(bare["passive"]["returns"])
    np.testing.assert_allclose(bare["gap"], (ua - up).mean())
    np.testing.assert_allclose(ero["per_seed"], (a - p) - (ua - up))
    np.testing.assert_allclose(ero["mean"], card["gap"] - bare["gap"], atol=1e-12)
    assert ero["ci"][0] <= ero["mean"] <= ero["ci"][1] and 0 <= ero["p_better"] <= 1
    assert card["gap_verdict"] in card["verdict"] and card["erosion_verdict"] in card["verdict"]
    assert "Erosion" in html and "Without the defence" in html
    assert "erosion" in r.output and "without the defence" in r.output


def test_stress_on_an_undefended_scenario_skips_the_replay(tmp_path):
    from extractgym.stress import StressConfig, stress
    from extractgym.stress.search import undefended, without_defence

    data = small(rounds=1)
    data["defenders"] = [{"body": "none"}]
    assert undefended(data) and undefended(without_defence(small())) and not undefended(small())
    assert without_defence(small())["attackers"] == small()["attackers"]
    said = []
    result = stress(StressConfig(data, cpu_minutes=0.02, seeds=2, search_seeds=1, out=tmp_path, rl=False,
                                 variants=False), log=said.append)
    assert result.undefended.status == "undefended scenario" and result.undefended.passive is None
    assert not any("undefended replay" in m for m in said)  # nothing replayed
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["undefended"]["status"] == "undefended scenario" and "passive" not in card["undefended"]
    ero = card["erosion"]
    assert ero["status"] == "zero by construction" and ero["mean"] == 0.0 and ero["ci"] is None  # no fake interval
    assert "0 by construction" in card["verdict"] and "Erosion 0" in (tmp_path / "card.html").read_text()


def test_stress_undefended_replay_can_be_skipped_and_says_what_cannot_be_replayed(tmp_path):
    from extractgym.scenarios.evaluate import HELD_OUT
    from extractgym.stress import StressConfig, stress
    from extractgym.stress.search import Candidate, Search

    result = stress(StressConfig(small(rounds=1), cpu_minutes=0.02, seeds=2, search_seeds=1, out=tmp_path, rl=False,
                                 variants=False, undefended=False))
    assert result.undefended.status == "skipped"
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["erosion"]["status"] == "not measured" and card["erosion"]["mean"] is None
    assert "--no-undefended" in card["erosion_verdict"]
    # a strategy that cannot be replayed without the defence is reported, not a crash
    search = Search(StressConfig(small(rounds=1), seeds=2, out=tmp_path, rl=False, variants=False))
    passive = Candidate("preset (passive)", (), "preset", "passive", np.zeros(1), 0.0)
    gone = Candidate("rl-scratch", (), str(tmp_path / "missing" / "policy.zip"), "rl-scratch", np.ones(1), 0.0)
    bare = search.replay_undefended(passive, gone, [HELD_OUT, HELD_OUT + 1])
    assert bare.status == "not replayable" and "rl-scratch" in bare.note and "not found" in bare.note


def test_stress_refuses_bad_input_with_exit_2(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["stress", "digits-basic", "--out", str(tmp_path / "x"), "--seat", "defender_0"], env=WIDE)
    assert r.exit_code == 2 and "attacker seat" in r.output
    r = runner.invoke(app, ["stress", "no-such-scenario", "--out", str(tmp_path / "y")], env=WIDE)
    assert r.exit_code == 2 and "unknown scenario" in r.output
    r = runner.invoke(app, ["stress", "digits-basic", "--out", str(tmp_path / "z"), "--cpu-minutes", "0"], env=WIDE)
    assert r.exit_code == 2
