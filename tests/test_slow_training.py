"""Slow training runs (``-m slow``): the learned policies of issue 11's Done-when, and a PSRO run.

Each run is the ``extractgym train`` / ``extractgym psro`` configuration measured for the issue (PPO started from
a clone of the scenario's observation-reading script, ``--imitate``). Training takes up to 15 CPU-minutes on 2
cores (``result.json``'s ``training_cpu_seconds``; timings are reported, never asserted), plus the baselines
(rl-sybil's best-constant search plays 500 constant actions on 4 training seeds). The assertion is the issue's:
the learned policy's mean return over at least 10 held-out seeds beats the preset, the random policy and the best
constant action, paired, with a one-sided p < 0.05.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from extractgym.training.psro import Psro, PsroConfig
from extractgym.training.train import TrainConfig, train

pytestmark = pytest.mark.slow

RUNS = {  # scenario -> (seat, timesteps, teacher cloned first, held-out seeds): the measured configurations
    "rl-sybil": ("attacker_0", 20_000, "rotate-on-refusal:rotate_every=25", 20),
    "rl-duel": ("attacker_0", 20_000, "label-if-softened", 20),
    "rl-defender": ("defender_0", 12_000, "perturb-young-probs", 30),
}


@pytest.mark.parametrize("scenario", sorted(RUNS))
def test_learned_policy_beats_preset_random_and_best_constant(scenario, tmp_path):
    seat, timesteps, teacher, seeds = RUNS[scenario]
    result = train(TrainConfig(scenario, seat, "maskable-ppo", timesteps, 2, 0, tmp_path, eval_seeds=seeds,
                               max_constants=512, train_seeds=4, imitate=teacher, progress=False))
    final = result.final
    assert set(final.versus) == {"preset", "random", "best-constant"}
    for name, d in final.versus.items():
        assert d["mean"] > 0 and d["p_better"] < 0.05, (name, d)


def test_psro_three_iterations_gains_fall(tmp_path):
    loop = Psro(PsroConfig("rl-duel", iterations=3, out=tmp_path, timesteps=3000, episodes=6, workers=2))
    gains = loop.run()
    assert len(gains) == 3
    total = [g["total_gain"] for g in gains]
    assert total[-1] < total[0]
    record = json.loads((tmp_path / "psro.json").read_text())
    final = record["iterations"][-1]
    assert np.isclose(sum(final["attacker_meta_strategy"]), 1) and (tmp_path / "final_payoffs.md").exists()
    assert (tmp_path / "psro.png").exists()
