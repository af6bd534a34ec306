"""Training and learned brains (extractgym.training, agents/brains/learned.py): reproducible training, policy files that
play seats in scenarios, and clear errors for bad or mismatched policy files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from extractgym.agents.brains.learned import META, LearnedBrain, PolicyError, load_brain, load_policy, read_meta
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.cli import app
from extractgym.scenarios.evaluate import HELD_OUT, Evaluator
from extractgym.scenarios.schema import read_yaml, shipped_scenarios
from extractgym.training.envs import EpisodeSeeds, choose_vec_env, seat_env
from extractgym.training.train import TrainConfig, TrainResult, train

WIDE = {"COLUMNS": "200"}
FAST = {"rounds": 2}  # digits-basic: the cheapest game with an attacker and a defender seat
TINY = {"n_steps": 8, "batch_size": 8, "n_epochs": 2}


def tiny_config(out: Path, seed: int = 0, algo: str = "maskable-ppo", vec: str = "dummy") -> TrainConfig:
    params = {**TINY} if algo != "dqn" else {"learning_starts": 8, "batch_size": 8, "train_freq": 4}
    return TrainConfig("digits-basic", "attacker_0", algo, timesteps=16, n_envs=2, seed=seed, out=out, vec=vec,
                       eval_seeds=0, params=params, overrides=FAST, progress=False)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_policy(path)[1].state_dict()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A maskable-PPO attacker policy for digits-basic (16 steps)."""
    return train(tiny_config(tmp_path_factory.mktemp("policy"))).policy


def scenario_with(policy: str | Path, folder: Path, name: str = "learned", **brain) -> Path:
    data = read_yaml(shipped_scenarios()["digits-basic"])
    data.update(name=name, rounds=2)
    data["attackers"][0]["brain"] = {"policy": str(policy), **brain}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- training ------------------------------------------------------------------------------------
def test_same_seed_same_model_other_seed_other_model(tmp_path, trained):
    again = train(tiny_config(tmp_path / "again", vec="subproc")).policy  # worker processes: the same model
    other = train(tiny_config(tmp_path / "other", seed=1)).policy
    a, b, c = weights(trained), weights(again), weights(other)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_checkpoint_records_scenario_seat_spaces_knobs_versions(trained):
    meta = read_meta(trained)
    env = make_env("digits-basic", action_space="multi", **FAST)
    assert meta["scenario"] == "digits-basic" and meta["seat"] == "attacker_0" and meta["role"] == "attacker"
    assert meta["observation"]["shape"] == list(env.observation_space("attacker_0").shape)
    assert meta["action"] == {"kind": "multi", "nvec": [int(n) for n in env.action_space("attacker_0").nvec]}
    assert [k["name"] for k in meta["knobs"]] == [k.name for k in env.knobs("attacker_0")]
    assert meta["versions"]["extractgym"] and meta["versions"]["stable-baselines3"]
    assert meta["training"]["algo"] == "maskable-ppo" and meta["training"]["steps_done"] >= 16


def test_learned_brain_plays_as_the_model_predicts(trained):
    from sb3_contrib import MaskablePPO

    model = MaskablePPO.load(trained, device="cpu")  # still an ordinary SB3 file
    env = make_env("digits-basic", action_space="multi", **FAST)
    brain = load_brain(trained, env, "attacker_0")
    knobs = env.knobs("attacker_0")
    rng = np.random.default_rng(0)
    for _ in range(20):
        obs = rng.random(env.observation_space("attacker_0").shape).astype(np.float32)
        action, _ = model.predict(obs, deterministic=True)
        assert brain(obs) == int(np.ravel_multi_index(tuple(action), [len(k.choices) for k in knobs]))


def test_dqn_trains_on_the_flat_space_and_plays(tmp_path):
    result = train(tiny_config(tmp_path, algo="dqn"))
    meta = read_meta(result.policy)
    assert meta["action"]["kind"] == "flat"
    env = make_env("digits-basic", **FAST)
    brain = load_brain(result.policy, env, "attacker_0")
    action = brain(np.zeros(env.observation_space("attacker_0").shape, dtype=np.float32))
    assert 0 <= action < env.action_space("attacker_0").n
    with pytest.raises(PolicyError, match="DQN"):
        load_brain(result.policy, env, "attacker_0", deterministic=False)


def test_training_envs_seed_every_episode_and_avoid_the_evaluation_seeds():
    env = seat_env("digits-basic", "attacker_0", overrides=FAST, monitor=False)
    assert isinstance(env, EpisodeSeeds)
    seeds = []
    for s in (5, None, None, 5, None, None):
        env.reset(seed=s)
        seeds.append(env.episode_seed)
    assert seeds[:3] == seeds[3:] and len(set(seeds[:3])) == 3
    assert all(s >= 2**20 for s in seeds)  # never the harness's training (0..) or held-out (10_000..) seeds


def test_vec_env_rule():
    assert choose_vec_env(1, cpus=16) == "dummy"
    assert choose_vec_env(2, cpus=1) == "dummy"
    assert choose_vec_env(2, cpus=2) == "subproc"
    assert choose_vec_env(4, "dummy", cpus=16) == "dummy"
    with pytest.raises(ValueError, match="dummy"):
        choose_vec_env(2, "threads")


# -- learned brains in scenarios -----------------------------------------------------------------
def test_learned_brain_plays_reproducibly_through_extractgym_run(tmp_path, trained):
    path = scenario_with(trained, tmp_path)
    summaries = []
    for out in ("a", "b"):
        result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / out)], env=WIDE)
        assert result.exit_code == 0, result.output
        s = json.loads((tmp_path / out / "summary.json").read_text())
        s.pop("wall_seconds")
        summaries.append(s)
    assert summaries[0] == summaries[1]
    assert summaries[0]["queries"] > 0


def test_stochastic_learned_brain_is_reproducible_from_its_seed(tmp_path, trained):
    env = make_env(scenario_with(trained, tmp_path, stochastic=True), action_space="multi")
    obs = np.full(env.observation_space("attacker_0").shape, 0.5, dtype=np.float32)
    a = [env.factory.brains(3)["attacker_0"](obs) for _ in range(2)]
    brain3, brain4 = env.factory.brains(3)["attacker_0"], env.factory.brains(4)["attacker_0"]
    draws3, draws4 = [brain3(obs) for _ in range(30)], [brain4(obs) for _ in range(30)]
    assert a[0] == a[1]
    assert draws3 != draws4 or len(set(draws3)) == 1  # different seeds draw differently unless the policy is sure


def test_relative_policy_path_is_read_from_the_scenario_folder(tmp_path, trained):
    folder = tmp_path / "scenarios"
    folder.mkdir()
    (folder / "p.zip").write_bytes(trained.read_bytes())
    s = load_scenario(scenario_with("p.zip", folder))
    assert Path(s.attackers[0].brain.policy) == (folder / "p.zip").resolve()


def test_learned_brain_is_a_contestant_in_eval_and_tournaments(tmp_path, trained):
    result = CliRunner().invoke(app, ["eval", "digits-basic", "--rounds", "2", "--seeds", "2", "--policy", "preset",
                                      "--policy", str(trained)], env=WIDE)
    assert result.exit_code == 0, result.output
    from extractgym.league import tournament

    spec = {"name": "learned", "seeds": 1,
            "scenarios": [{"scenario": "digits-basic", "overrides": FAST}],
            "attackers": [{"name": "preset", "body": "random", "params": {"queries_per_round": 40}},
                          {"name": "learned", "body": "random", "params": {"queries_per_round": 40},
                           "brain": {"policy": str(trained)}}],
            "defenders": [{"name": "none", "body": "none"}]}
    league, raw, base, cells = tournament.prepare(spec)
    stats = tournament.play(league, raw, base, cells, tmp_path / "league", workers=0)
    assert stats.failed == 0 and stats.ran == 2


# -- bad input -----------------------------------------------------------------------------------
def _clean_failure(result) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, (PolicyError, AttributeError,
                                                                                     KeyError, TypeError))


@pytest.mark.parametrize("case", ["missing", "not a zip", "plain sb3 model", "bad weights"])
def test_bad_policy_file_fails_before_round_1_without_traceback(tmp_path, trained, case):
    bad = tmp_path / "bad.zip"
    if case == "not a zip":
        bad.write_text("hello")
    elif case == "plain sb3 model":
        with zipfile.ZipFile(trained) as src, zipfile.ZipFile(bad, "w") as dst:
            for name in src.namelist():
                if name != META:
                    dst.writestr(name, src.read(name))
    elif case == "bad weights":
        with zipfile.ZipFile(trained) as src, zipfile.ZipFile(bad, "w") as dst:
            for name in src.namelist():
                dst.writestr(name, b"garbage" if name == "policy.pth" else src.read(name))
    path = scenario_with(bad, tmp_path)
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out")], env=WIDE)
    _clean_failure(result)
    assert "bad.zip" in result.output
    assert not (tmp_path / "out" / "summary.json").exists()
    result = CliRunner().invoke(app, ["eval", "digits-basic", "--rounds", "2", "--seeds", "2", "--policy", str(bad)],
                                env=WIDE)
    if case == "missing":  # not a file: named as a missing policy file
        assert result.exit_code == 2 and "not found" in result.output and "bad.zip" in result.output
    else:
        _clean_failure(result)
        assert "bad.zip" in result.output


def test_mismatched_spaces_fail_naming_both(tmp_path, trained):
    data = read_yaml(shipped_scenarios()["digits-similarity"])
    data["attackers"][0]["brain"] = {"policy": str(trained)}
    with pytest.raises(ScenarioError) as e:
        load_scenario(data)
    msg = str(e.value)
    assert "attackers.0.brain.policy" in msg
    assert "knobs queries[" in msg and "x service[" in msg and "x eps_scale[" in msg  # the policy's and the seat's
    path = tmp_path / "sim.yaml"
    path.write_text(yaml.safe_dump(data))
    _clean_failure(CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "o")], env=WIDE))
    env = make_env("digits-basic", **FAST)
    with pytest.raises(PolicyError, match="defender"):
        load_brain(trained, env, "defender_0")  # an attacker's policy in a defender seat


def test_brain_spec_policy_options_are_checked():
    data = read_yaml(shipped_scenarios()["digits-basic"])
    for brain, named in (({"policy": "x.zip", "kind": "random"}, "kind"),
                         ({"policy": "x.zip", "knobs": {"queries": 10}}, "knobs"),
                         ({"kind": "preset", "stochastic": True}, "stochastic")):
        data["attackers"][0]["brain"] = brain
        with pytest.raises(ScenarioError, match=named):
            load_scenario(data)


def test_train_cli_writes_policy_logs_and_curves_and_rejects_bad_options(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "digits-basic", "--rounds", "2", "--timesteps", "16", "--envs", "1",
                                      "--eval-seeds", "2", "--baseline", "preset", "--param", "n_steps=8",
                                      "--param", "batch_size=8", "--param", "learning_rate=1e-3", "--out", str(out),
                                      "--no-progress"], env=WIDE)
    assert result.exit_code == 0, result.output
    for name in ("policy.zip", "result.json", "evaluations.csv", "episodes.csv", "learning_curve.png",
                 "logs/progress.csv"):
        assert (out / name).exists(), name
    res = json.loads((out / "result.json").read_text())
    assert res["held_out_seeds"] == [10_000, 10_001] and "preset" in res["final"]["versus"]
    assert res["config"]["hyperparameters"]["learning_rate"] == 1e-3  # 1e-3 is a number, though YAML 1.1 disagrees
    for args, named in ((["--algo", "sac"], "sac"), (["--param", "n_stepz=3"], "n_stepz"),
                        (["--param", "learning_rate=fast"], "learning_rate"),
                        (["--param", "n_steps=0"], "n_steps"),
                        (["--seat", "attacker_9"], "attacker_9"), (["--param", "oops"], "KEY=VALUE")):
        result = CliRunner().invoke(app, ["train", "digits-basic", "--timesteps", "8", "--out", str(tmp_path / "x"),
                                          *args], env=WIDE)
        _clean_failure(result)
        assert named in result.output


# -- imitation before PPO -----------------------------------------------------------------------
def test_imitation_clones_a_script_that_reads_the_observation(tmp_path):
    """The cloned network plays the teacher's actions on held-out seeds (so the same returns, seed by seed), and
    the DAgger rounds were played by the learner and labelled by the teacher."""
    cfg = TrainConfig("rl-duel", "attacker_0", "maskable-ppo", timesteps=8, n_envs=1, seed=0, out=tmp_path,
                      vec="dummy", eval_seeds=3, baselines=("label-if-softened", "preset"), params=TINY,
                      overrides={"rounds": 3}, progress=False, imitate="label-if-softened", imitate_episodes=12,
                      imitate_rounds=2)
    result = train(cfg)
    rep = result.imitation
    assert rep.teacher == "label-if-softened" and rep.samples == 2 * 12 * 3 and len(rep.learner_returns) == 1
    assert rep.agreement[-1] >= 0.95
    clone = result.evaluations[0]  # step 0: the clone, before PPO
    assert clone.step == 0 and clone.versus["label-if-softened"]["mean"] == pytest.approx(0.0, abs=1e-9)
    # label smoothing: the clone is confident in the teacher's choices, yet not certain (PPO still explores)
    cloned = LearnedBrain(tmp_path / "clone.zip", "attacker", Evaluator("rl-duel", rounds=3).knobs)
    env = make_env("rl-duel", action_space="multi", rounds=3)
    obs, _ = env.reset(seed=HELD_OUT)
    top = [p.max() for p in cloned.probabilities(obs["attacker_0"])]
    assert all(0.8 < t < 0.995 for t in top), top
    # the script reads the answers: on a defended episode it switches to labels, which no constant does
    ev = Evaluator("rl-duel", "attacker_0", rounds=3)
    brain = LearnedBrain(result.policy, "attacker", ev.knobs)
    script = [ev.brain("label-if-softened", HELD_OUT + i) for i in range(3)]
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["imitation"]["teacher"] == "label-if-softened" and saved["config"]["imitate"]["rounds"] == 2
    played = ev.play(lambda seed: brain, [HELD_OUT + i for i in range(3)]).returns
    taught = ev.play(lambda seed: script[seed - HELD_OUT], [HELD_OUT + i for i in range(3)]).returns
    assert np.allclose(played, taught)


def test_eval_traces_show_what_each_policy_did_beside_the_opponents(tmp_path):
    """``eval --trace`` prints, and ``--out`` stores, every seat's knob values per round: the script's switch from
    probabilities to labels is visible in the round after the defender's reverse sigmoid."""
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["eval", "rl-duel", "--rounds", "3", "--seeds", "2", "--policy",
                                      "label-if-softened", "--policy", "constant:service=api-label", "--trace", "2",
                                      "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["results"]
    script = rows[0]["traces"]
    assert len(script) == 2 and all(len(t["attacker_0"]) == 3 and len(t["defender_0"]) == 3 for t in script)
    for t in script:
        services = [r["service"] for r in t["attacker_0"]]
        defended = t["defender_0"][0]["defence"] != "none"
        assert services == (["api", "api-label", "api-label"] if defended else ["api"] * 3)
    assert all(r["service"] == "api-label" for t in rows[1]["traces"] for r in t["attacker_0"])
    assert "seed 10000" in result.output and "defender_0: defence=" in result.output
    assert "service=api x1 | " in result.output or "service=api x3" in result.output


def test_imitation_with_plain_ppo_is_reproducible_from_its_seed(tmp_path):
    """SB3's PPO (no masks) clones too, and the same seed gives the same clone and the same model."""
    def run(out: Path) -> TrainResult:
        return train(TrainConfig("rl-duel", "attacker_0", "ppo", timesteps=8, n_envs=1, seed=3, out=out, vec="dummy",
                                 eval_seeds=0, params=TINY, overrides={"rounds": 2}, progress=False,
                                 imitate="label-if-softened", imitate_episodes=6, imitate_rounds=2))

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    ra, rb = a.imitation.row(), b.imitation.row()
    ra.pop("cpu_seconds"), rb.pop("cpu_seconds")
    assert ra == rb and a.imitation.agreement[-1] >= 0.9
    for name in ("clone.zip", "policy.zip"):
        wa, wb = weights(tmp_path / "a" / name), weights(tmp_path / "b" / name)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_imitation_options_are_checked_before_any_episode(tmp_path):
    for args, named in ((["--imitate", "no-such-script"], "no-such-script"),
                        (["--imitate", "label-if-softened"], "service"),  # digits-basic has no service knob
                        (["--imitate", "preset", "--algo", "dqn"], "dqn"),
                        (["--imitate", "best-constant"], "constant:K=V"),
                        (["--imitate", ""], "needs a teacher"),
                        (["--imitate", "preset", "--imitate-smoothing", "1.5"], "smoothing")):
        result = CliRunner().invoke(app, ["train", "digits-basic", "--timesteps", "8", "--eval-seeds", "2",
                                          "--out", str(tmp_path / "x"), "--no-progress", *args], env=WIDE)
        _clean_failure(result)
        assert named in result.output
        assert not (tmp_path / "x").exists()  # nothing written, no baseline played


# -- PSRO ----------------------------------------------------------------------------------------
def test_psro_runs_an_iteration_and_writes_its_tables_and_plots(tmp_path):
    out = tmp_path / "psro"
    result = CliRunner().invoke(app, ["psro", "digits-basic", "--rounds", "2", "--iterations", "1", "--timesteps",
                                      "16", "--envs", "1", "--episodes", "2", "--workers", "0", "--param", "n_steps=8",
                                      "--param", "batch_size=8", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "psro.json").read_text())
    first, last = record["iterations"][0], record["iterations"][-1]
    assert len(last["attackers"]) == len(first["attackers"]) + 1 and last["attackers"][-1] == "br0"
    assert len(last["defenders"]) == len(first["defenders"]) + 1
    for it in record["iterations"]:
        assert abs(sum(it["attacker_meta_strategy"]) - 1) < 1e-9 and abs(sum(it["defender_meta_strategy"]) - 1) < 1e-9
    g = record["gains"][0]
    # the gain is the new row against the old defender mixture minus the old value, from the stored matrices
    sd = np.asarray(first["defender_meta_strategy"])
    assert g["attacker_gain"] == pytest.approx(np.asarray(last["attacker_payoffs"])[-1, :len(sd)] @ sd
                                               - first["attacker_value"])
    for name in ("gains.csv", "psro.png", "final_payoffs.csv", "final_payoffs.md", "iter_0/attacker/policy.zip",
                 "iter_0/defender/policy.zip", "league/results.jsonl"):
        assert (out / name).exists(), name


def test_psro_meta_solver_nash_and_uniform():
    from extractgym.training.psro import meta_strategy

    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    sa, sd = meta_strategy(rps, -rps, "nash")
    assert np.allclose(sa, 1 / 3, atol=1e-6) and np.allclose(sd, 1 / 3, atol=1e-6)
    dominant = np.array([[1.0, 1.0], [0.0, 0.0]])
    sa, sd = meta_strategy(dominant, -dominant, "nash")
    assert sa[0] == pytest.approx(1.0)
    sa, _ = meta_strategy(dominant, -dominant, "uniform")
    assert np.allclose(sa, 0.5)
    with pytest.raises(ValueError, match="uniform"):
        meta_strategy(dominant, -dominant, "alpharank")
