"""Slow reproductions (skipped in CI; run with ``python -m pytest -m slow -q``)."""

from __future__ import annotations

import numpy as np
import pytest

from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode

pytestmark = pytest.mark.slow


def _random_on(victim: str, pool: str, queries: int, seed: int, rounds: int = 5, **params) -> dict:
    scenario = {
        "name": f"{victim}-random-{queries}",
        "rounds": rounds,
        "services": [{"name": "api", "victim": victim}],
        "attackers": [{"body": "random", "params": {"pool": pool, "queries_per_round": queries // rounds, **params},
                       "budget": {"queries": queries}}],
    }
    return play_episode(make_env(scenario), seed=seed)


@pytest.mark.parametrize(("victim", "pool", "budgets"), [("digits-cnn", "digits", (50, 150, 500)),
                                                         ("mnist-cnn", "mnist", (100, 400, 1500))])
def test_random_sampling_fidelity_rises_with_budget(victim: str, pool: str, budgets: tuple[int, ...]) -> None:
    fid = [np.mean([_random_on(victim, pool, q, seed)["fidelity"] for seed in range(3)]) for q in budgets]
    assert fid[0] < fid[1] < fid[2], fid
    assert fid[-1] > 0.9, fid


def test_shifted_domain_pool_still_extracts_digits() -> None:
    """MNIST downsampled to 8x8 is a real shifted domain: extraction works, but below in-domain queries."""
    shifted = np.mean([_random_on("digits-cnn", "mnist8x8", 500, seed)["attacker_accuracy"] for seed in range(3)])
    native = np.mean([_random_on("digits-cnn", "digits", 500, seed)["attacker_accuracy"] for seed in range(3)])
    assert 0.3 < shifted < native, (shifted, native)
