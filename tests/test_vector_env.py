"""The vector env (issue 20): K episodes in lockstep, the same episodes as the serial env, batched work exact."""

from __future__ import annotations

import json

import gymnasium
import numpy as np
import pytest
import torch

import extractgym  # noqa: F401  (registers the gym ids)
from extractgym.envs.vector_env import SeatVectorEnv
from extractgym.victims.ensemble import Fit, Member, Schedule, SmallMLP, deferred_fits, resolve_device, train


def make_vec(k: int, scenario: str = "rl-duel", seat: str = "Attacker", **kwargs):
    return gymnasium.make_vec(f"extractgym/{seat}-v0", num_envs=k, vectorization_mode="vector_entry_point",
                              scenario=scenario, **kwargs)


def summary_text(summary: dict) -> str:
    return json.dumps({k: v for k, v in summary.items() if k != "wall_seconds"}, sort_keys=True, default=float)


def play_serial(scenario: str, seed: int, actions: list, seat: str = "Attacker", **kwargs):
    env = gymnasium.make(f"extractgym/{seat}-v0", scenario=scenario, **kwargs)
    obs, _ = env.reset(seed=seed)
    trace = [obs]
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        trace.append((obs, reward, term, info))
    return trace, env.unwrapped.summary()


# -- the API -----------------------------------------------------------------------------------------------
def test_make_vec_gives_a_gymnasium_vector_env_with_batched_spaces_and_masks():
    venv = make_vec(3)
    assert isinstance(venv, gymnasium.vector.VectorEnv) and isinstance(venv, SeatVectorEnv)
    assert venv.num_envs == 3 and venv.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP
    single = gymnasium.make("extractgym/Attacker-v0", scenario="rl-duel")
    assert venv.single_observation_space == single.observation_space
    assert venv.single_action_space == single.action_space
    obs, info = venv.reset(seed=5)
    assert obs.shape == (3, *single.observation_space.shape) and obs.dtype == np.float32
    assert venv.observation_space.contains(obs)
    masks = venv.action_masks()
    assert masks.shape == (3, int(single.action_space.nvec.sum())) and masks.dtype == bool and masks.all()
    obs, rewards, terms, truncs, infos = venv.step(venv.action_space.sample())
    assert rewards.shape == terms.shape == truncs.shape == (3,) and not terms.any()
    assert infos["round"].tolist() == [1, 1, 1] and infos["_round"].all()
    venv.close()


def test_bad_input_is_refused_naming_the_problem_and_nothing_is_half_played():
    venv = make_vec(2)
    venv.reset(seed=0)
    good = venv.action_space.sample()
    bad = good.copy()
    bad[1, 0] = 99
    with pytest.raises(ValueError, match="sub-env 1: bad action for attacker_0"):
        venv.step(bad)
    assert [env.env.game.round for env in venv.envs] == [0, 0]  # neither game played its round
    with pytest.raises(ValueError, match="one row per sub-env"):
        venv.step(good[:1])
    with pytest.raises(ValueError, match="num_envs"):
        make_vec(0)
    with pytest.raises(ValueError, match="autoreset_mode"):
        make_vec(2, autoreset_mode="sometimes")
    with pytest.raises(ValueError, match="2 seeds"):
        venv.reset(seed=[1, 2, 3])


def test_scenarios_the_vector_env_cannot_batch_are_refused_with_a_message():
    with pytest.raises(ValueError, match="cannot batch remote services"):
        make_vec(2, "digits-remote")
    with pytest.raises(ValueError, match="cannot batch isolated seats"):
        make_vec(2, "digits-basic", attackers=[{"body": "random", "params": {"queries_per_round": 20},
                                                "isolate": True}])


# -- same game, serial or vector -------------------------------------------------------------------------
@pytest.mark.parametrize("scenario,seat,kwargs", [
    ("rl-duel", "Attacker", {}),
    ("rl-sybil", "Attacker", {"rounds": 6}),
    ("rl-defender", "Defender", {"rounds": 6}),
    ("digits-basic", "Attacker", {"rounds": 2}),  # full-setting surrogates: trained one after the other
])
def test_each_sub_env_plays_the_serial_episode_of_its_seed_exactly(scenario, seat, kwargs):
    k, seed = 3, 40
    venv = make_vec(k, scenario, seat, **kwargs)
    rounds = venv.factory.scenario.rounds
    venv.action_space.seed(7)
    actions = [venv.action_space.sample() for _ in range(rounds)]
    obs, _ = venv.reset(seed=seed)
    vec = [obs]
    for a in actions:
        vec.append(venv.step(a))
    summaries = venv.summaries()
    for i in range(k):
        trace, summary = play_serial(scenario, seed + i, [a[i] for a in actions], seat, **kwargs)
        assert summary_text(summary) == summary_text(summaries[i]), f"sub-env {i}"
        assert np.array_equal(trace[0], vec[0][i])
        for (obs, reward, term, info), (v_obs, v_rew, v_term, _, v_info) in zip(trace[1:], vec[1:], strict=True):
            assert np.array_equal(obs, v_obs[i]) and reward == v_rew[i] and term == v_term[i]
            assert info["round"] == v_info["round"][i]


def test_next_step_autoreset_plays_the_serial_envs_next_episode():
    venv = make_vec(2, "rl-duel", rounds=2)
    serial = gymnasium.make("extractgym/Attacker-v0", scenario="rl-duel", rounds=2)
    venv.action_space.seed(1)
    actions = [venv.action_space.sample() for _ in range(6)]
    venv.reset(seed=3)
    serial_obs, _ = serial.reset(seed=4)  # sub-env 1
    for t, a in enumerate(actions):
        obs, rewards, terms, _, _ = venv.step(a)
        if t % 3 == 2:  # the step after an episode's end resets it: its action is ignored, reward 0
            serial_obs, _ = serial.reset()
            assert rewards[1] == 0.0 and not terms[1] and obs[1][0] == 0.0
        else:
            serial_obs, reward, term, _, _ = serial.step(a[1])
            assert rewards[1] == reward and terms[1] == term
        assert np.array_equal(obs[1], serial_obs)


def test_same_step_autoreset_reports_the_final_observation_and_info():
    venv = make_vec(2, "rl-duel", rounds=1, autoreset_mode="same-step")
    venv.reset(seed=0)
    obs, rewards, terms, _, infos = venv.step(venv.action_space.sample())
    assert terms.all() and infos["_final_obs"].all()
    assert infos["final_obs"][0][0] == 1.0 and obs[0][0] == 0.0  # the final round's progress, then a fresh episode
    assert infos["final_info"]["_accuracy"].all() and infos["final_info"]["round"].tolist() == [1, 1]
    assert infos["round"].tolist() == [0, 0]  # the reset's info


# -- the batched work is exact ------------------------------------------------------------------------------
def test_ensemble_members_trained_together_get_the_weights_they_get_alone():
    arch, schedule = SmallMLP(64, 32, 10), Schedule(steps=5, batch=16, lr=1e-2)
    rng = np.random.default_rng(0)
    data = [(torch.from_numpy(rng.random((n, 64), dtype=np.float32)),
             torch.softmax(torch.from_numpy(rng.normal(size=(n, 10)).astype(np.float32)), dim=1))
            for n in (3, 40, 129, 7, 64, 300)]
    alone = [Member.new(arch, i) for i in range(len(data))]
    together = [Member.new(arch, i) for i in range(len(data))]
    for r in range(3):
        for i, m in enumerate(alone):
            train([Fit(m, *data[i], seed=10 * r + i)], schedule)
        with deferred_fits() as queue:
            for i, m in enumerate(together[:4 + r]):  # a different batch every round; the rest alone
                queue.add(Fit(m, *data[i], seed=10 * r + i), schedule, _Owner())
        for i, m in enumerate(together[4 + r:], start=4 + r):
            train([Fit(m, *data[i], seed=10 * r + i)], schedule)
    for a, b in zip(alone, together, strict=True):
        assert a.updates == b.updates == 15
        assert torch.equal(a.params, b.params) and torch.equal(a.m, b.m) and torch.equal(a.v, b.v)
    assert not torch.equal(alone[0].params, Member.new(arch, 0).params)  # it did train


class _Owner:
    def fitted(self) -> None:
        pass


def test_the_referee_scores_a_snapshot_the_same_alone_or_in_a_batch():
    env = gymnasium.make("extractgym/Attacker-v0", scenario="rl-duel")
    env.reset(seed=0)
    referee = env.unwrapped.env.game.referee
    from extractgym.victims.snapshot import ModelSnapshot

    arch = SmallMLP(64, 32, 10)
    snaps = [ModelSnapshot("mlp-32", 10, (1, 8, 8), None, arch.state(Member.new(arch, i).params)) for i in range(5)]
    batch = referee.score_many([(s, "api") for s in snaps])
    assert batch == [referee.score(s, "api") for s in snaps]
    assert len({s.accuracy for s in batch}) > 1


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda")


# -- the cheap surrogate, the answer table ------------------------------------------------------------------
def test_a_queued_fit_is_trained_before_the_surrogate_is_read():
    from extractgym.agents.extraction.surrogate import build_surrogate
    from extractgym.victims.datasets import get_dataset

    x, _ = get_dataset("digits").split("pool")
    y = np.eye(10)[np.arange(40) % 10]
    spec = get_dataset("digits").spec
    now, later = build_surrogate(spec, 10, "cheap", seed=3), build_surrogate(spec, 10, "cheap", seed=3)
    for s in (now, later):
        s.add(x[:40], y)
    now.fit()
    with deferred_fits() as queue:
        later.fit()
        assert len(queue.pending) == 1
        assert np.array_equal(later.predict_proba(x[:5]), now.predict_proba(x[:5]))  # flushed on read
        assert not queue.pending
    assert now.snapshot().arch == "mlp-32" and now.fits == later.fits == 1


def test_the_answer_table_answers_known_rows_as_the_victim_and_computes_the_others():
    from extractgym.victims.answers import AnswerTable, TabledVictim
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import load_victim

    victim = load_victim("digits-cnn")
    table = AnswerTable(victim, [("digits", "pool")])
    x, _ = get_dataset("digits").split("pool")
    rng = np.random.default_rng(0)
    q = x[rng.choice(len(x), 64)].copy()
    q[::5] *= 0.9  # blinded rows: not in the table
    rows = table.lookup(q)
    assert (rows[::5] == -1).all() and (rows[np.arange(64) % 5 != 0] >= 0).all()
    assert all(np.array_equal(q[i], x[r]) for i, r in enumerate(rows) if r >= 0)
    tabled = TabledVictim(victim, table).predict_proba(q)
    np.testing.assert_allclose(tabled, victim.predict_proba(q), rtol=0, atol=1e-6)  # the same up to rounding
    assert np.array_equal(tabled[::5], victim.predict_proba(q[::5]))  # unknown rows: computed as the victim does
    one = TabledVictim(victim, table).predict_proba(q[1:2])
    assert np.array_equal(one[0], tabled[1])  # a known row's answer does not depend on its batch


# -- training on the vector env -------------------------------------------------------------------------------
def test_training_on_the_vector_env_gives_the_model_of_the_serial_envs(tmp_path):
    from extractgym.agents.brains.learned import load_policy
    from extractgym.training.envs import choose_vec_env
    from extractgym.training.train import TrainConfig, train

    def run(vec: str, out: str):
        cfg = TrainConfig("digits-basic", "attacker_0", "maskable-ppo", timesteps=16, n_envs=2, seed=0,
                          out=tmp_path / out, vec=vec, eval_seeds=0, params={"n_steps": 8, "batch_size": 8,
                                                                               "n_epochs": 2},
                          overrides={"rounds": 2}, progress=False)
        result = train(cfg)
        assert result.vec == vec and len(result.episodes) == 8
        return load_policy(result.policy)[1].state_dict()

    vector, dummy = run("vector", "v"), run("dummy", "d")
    assert all(torch.equal(vector[k], dummy[k]) for k in vector)
    assert choose_vec_env(8, scenario="rl-duel") == "vector"
    assert choose_vec_env(8, scenario="digits-remote", cpus=1) == "dummy"


def test_train_envs_k_uses_the_vector_env_and_the_same_seed_gives_the_same_model(tmp_path):
    from typer.testing import CliRunner

    from extractgym.agents.brains.learned import load_policy
    from extractgym.cli import app

    def run(out: str):
        result = CliRunner().invoke(app, ["train", "rl-duel", "--envs", "4", "--timesteps", "16", "--rounds", "2",
                                          "--eval-seeds", "0", "--no-progress", "--param", "n_steps=4",
                                          "--param", "batch_size=8", "--param", "n_epochs=1", "--out",
                                          str(tmp_path / out)], env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        assert "vector vec env" in result.output
        return load_policy(tmp_path / out / "policy.zip")[1].state_dict()

    a, b = run("a"), run("b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    bad = CliRunner().invoke(app, ["train", "rl-duel", "--set", "surrogates=tiny", "--timesteps", "8"])
    assert bad.exit_code == 2 and "surrogates" in bad.output
