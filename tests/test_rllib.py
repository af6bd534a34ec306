"""RLlib multi-agent training on the PettingZoo env (the run: ``-m rllib``, needs ``pip install -e '.[ray]'``)."""

from __future__ import annotations

import json

import pytest

from extractgym.scenarios import make_env
from extractgym.training.rllib import policy_groups

def test_sides_get_separate_policies_with_their_own_spaces():
    env = make_env("digits-defended", action_space="multi")
    assert policy_groups(env) == {"attacker": ["attacker_0", "attacker_1"], "defender": ["defender_0"]}
    assert env.observation_space("attacker_0").shape != env.observation_space("defender_0").shape


@pytest.mark.rllib
def test_a_tiny_local_rllib_run_trains_both_sides(tmp_path):
    pytest.importorskip("ray.rllib")
    from extractgym.training.rllib import train_rllib

    rows = train_rllib("digits-basic", iterations=2, out=tmp_path, overrides={"rounds": 2}, batch=16, minibatch=8,
                       epochs=1)
    assert len(rows) == 2 and rows[-1]["env_steps"] > rows[0]["env_steps"] > 0
    assert set(rows[-1]["policy_returns"]) == {"attacker", "defender"}
    assert set(rows[-1]["seat_returns"]) == {"attacker_0", "defender_0"}
    saved = json.loads((tmp_path / "rllib.json").read_text())
    assert (tmp_path / "checkpoint").exists() and len(saved["iterations"]) == 2
