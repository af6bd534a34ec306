"""Active-learning and data-free attackers: selection functions, bandit stability, DFME's query accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from extractgym.agents import ATTACKERS
from extractgym.agents.attackers.knockoff_adaptive import GradientBandit, RunningScale, build_hierarchy, raw_rewards
from extractgym.agents.extraction.pool import deepfool_distances, entropy, k_center_greedy, stable_softmax, top_k
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode

POOL_ATTACKERS = ("uncertainty", "k-center", "dfal", "dfal-k-center", "knockoff-adaptive")


def _scenario(body: str, queries: int, rounds: int = 2, **params) -> dict:
    return {
        "name": f"active-{body}",
        "rounds": rounds,
        "services": [{"name": "api", "victim": "digits-cnn"}],
        "attackers": [{"body": body, "params": params, "budget": {"queries": queries}}],
        "defenders": [{"body": "none"}],
    }


def _play(body: str, queries: int, rounds: int = 2, seed: int = 0, **params):
    env = make_env(_scenario(body, queries, rounds, **params))
    summary = play_episode(env, seed=seed)
    return env, env.game.attackers["attacker_0"].seat.body, summary


# -- selection functions on fixed inputs -------------------------------------------------------------

def test_entropy_picks_the_most_uncertain_rows() -> None:
    probs = np.array([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.8, 0.1, 0.1], [0.5, 0.5, 0.0]])
    h = entropy(probs)
    assert np.isfinite(h).all() and h[0] == pytest.approx(0.0, abs=1e-9)
    assert h[1] == pytest.approx(np.log(3))
    assert top_k(h, 2).tolist() == [1, 3]


def _k_center_brute(cand: np.ndarray, centers: np.ndarray, k: int) -> list[int]:
    chosen: list[int] = []
    for _ in range(k):
        best, best_d = -1, -1.0
        for i, c in enumerate(cand):
            if i in chosen:
                continue
            pts = list(centers) + [cand[j] for j in chosen]
            d = min(float(((c - p) ** 2).sum()) for p in pts) if pts else np.inf
            if d > best_d:
                best, best_d = i, d
        chosen.append(best)
    return chosen


@pytest.mark.parametrize("n_centers", [0, 1, 4])
def test_k_center_greedy_equals_brute_force(n_centers: int) -> None:
    rng = np.random.default_rng(n_centers)
    cand, centers = rng.random((12, 3)), rng.random((n_centers, 3))
    assert k_center_greedy(cand, centers, 5).tolist() == _k_center_brute(cand, centers, 5)


def test_k_center_never_picks_twice_even_with_duplicates() -> None:
    cand = np.zeros((4, 2))
    assert sorted(k_center_greedy(cand, np.zeros((1, 2)), 4).tolist()) == [0, 1, 2, 3]


def test_deepfool_distance_matches_a_linear_model_and_picks_the_closest() -> None:
    """For a linear classifier DeepFool converges in one step to the exact distance to the nearest boundary."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]))
        model[1].bias.zero_()
    x = np.array([[3.0, 1.0, 0, 0], [3.0, 2.5, 0, 0], [0.2, 5.0, 0, 0], [4.0, -1.0, 0, 0]], dtype=np.float32)
    x = x.reshape(4, 1, 2, 2)
    # logits (x0, x1, 0): the squared distance to the boundary between classes a and b is
    # (l_a - l_b)^2 / ||w_a - w_b||^2, with ||w_0 - w_1||^2 = 2 and ||w_0 - w_2||^2 = ||w_1 - w_2||^2 = 1
    exact = [min(2.0 ** 2 / 2, 3.0 ** 2), min(0.5 ** 2 / 2, 3.0 ** 2), min(4.8 ** 2 / 2, 5.0 ** 2),
             min(5.0 ** 2 / 2, 4.0 ** 2)]
    d = deepfool_distances(model, x, max_iter=20, overshoot=0.0)
    assert d == pytest.approx(exact, rel=1e-2, abs=1e-3)
    assert top_k(-d, 2).tolist() == [1, 0]


# -- KnockoffNets' bandit: numerically stable -----------------------------------------------------------

def test_stable_softmax_handles_extreme_preferences() -> None:
    for h in ([1e308, -1e308, 0.0], [np.inf, 0.0, -np.inf], [np.nan, 1.0, 2.0], [-1e300, -1e300, -1e300]):
        p = stable_softmax(np.array(h))
        assert np.isfinite(p).all() and p.min() >= 0 and p.sum() == pytest.approx(1.0)
    p = stable_softmax(np.array([5.0, 1e308, 0.0]), mask=np.array([True, False, True]))
    assert p[1] == 0.0 and p.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="masked"):
        stable_softmax(np.zeros(2), mask=np.zeros(2, dtype=bool))


def test_bandit_stays_finite_under_extreme_rewards() -> None:
    bandit = GradientBandit(4, lr=10.0)
    for r, b in [(1e308, 0.0), (-np.inf, 1e308), (np.nan, 0.0), (np.inf, -np.inf), (1e300, -1e300)] * 50:
        bandit.update(0, r, b)
        assert np.isfinite(bandit.h).all()
        p = bandit.probs()
        assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0)
    bandit = GradientBandit(3, lr=0.5)
    for _ in range(200):
        bandit.update(2, 1.0, 0.0)
    assert bandit.probs().argmax() == 2  # rewarded arm is preferred


def test_rewards_are_finite_on_degenerate_outputs() -> None:
    y = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    y_hat = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # log(0) would appear without clipping
    r = raw_rewards(y, y_hat, np.zeros(3))
    assert all(np.isfinite(v).all() for v in r.values())
    assert r["certainty"].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert r["loss"][0] > r["loss"][1]  # a wrong confident surrogate is a bigger reward than a right one
    scale = RunningScale()
    for values in ([0.0], [1e308, -1e308], [np.inf, np.nan], [3.0, 4.0]):
        s = scale(np.array(values))
        assert np.isfinite(s).all() and (s >= 0).all() and (s <= 1).all()


def test_hierarchy_partitions_the_pool() -> None:
    x = np.random.default_rng(0).random((60, 1, 2, 2)).astype(np.float32)
    tree = build_hierarchy(x, n_top=4, n_sub=3, seed=0)
    leaves = np.concatenate([leaf for node in tree for leaf in node])
    assert sorted(leaves.tolist()) == list(range(60)) and all(len(leaf) for node in tree for leaf in node)


# -- pool attackers in an episode ----------------------------------------------------------------------

@pytest.mark.parametrize("body", POOL_ATTACKERS)
def test_pool_attackers_spend_their_budget_without_buying_a_sample_twice(body: str) -> None:
    env, att, s = _play(body, queries=67, rounds=3, queries_per_round=30)  # 30 + 30 + 7: last batch trimmed
    assert s["queries"] == 67 and sum(e.n for e in env.game.api.ledger if e.owner == "attacker_0") == 67
    bought = np.concatenate(att.bought)
    assert len(bought) == 67 and len(np.unique(bought)) == 67
    assert int((~att.unsent).sum()) == 67


def test_knockoff_adaptive_is_deterministic_per_seed() -> None:
    a = _play("knockoff-adaptive", queries=60, seed=3, queries_per_round=30)[1]
    b = _play("knockoff-adaptive", queries=60, seed=3, queries_per_round=30)[1]
    assert np.array_equal(np.concatenate(a.bought), np.concatenate(b.bought))
    assert np.array_equal(a.root.h, b.root.h) and np.isfinite(a.root.h).all()


# -- DFME: exact query accounting ------------------------------------------------------------------------

@pytest.mark.parametrize(("budget", "batch", "m"), [(1003, 16, 2), (500, 8, 1), (5, 16, 1)])
def test_dfme_accounting_is_exact(budget: int, batch: int, m: int) -> None:
    env, att, s = _play("dfme", queries=budget, rounds=2, queries_per_round=budget, batch_size=batch, directions=m)
    ledger = sum(e.n for e in env.game.api.ledger if e.owner == "attacker_0")
    assert s["queries"] == ledger == budget  # every query, gradient estimation included, and never more
    assert att.query_counts["gradient"] + att.query_counts["student"] == budget
    assert att.generator_step_queries and all(q == batch * (m + 1) for q in att.generator_step_queries) \
        if budget >= batch * (m + 2) else not att.generator_step_queries
    assert att.query_counts["gradient"] == sum(att.generator_step_queries)


def test_dfme_gradient_estimate_moves_the_generator() -> None:
    att = _play("dfme", queries=400, rounds=1, queries_per_round=400, batch_size=8)[1]
    assert len(att.generator_step_queries) >= 2
    assert all(torch.isfinite(p).all() for p in att.generator.parameters())


# -- parameter validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "params", "match"), [
    ("uncertainty", {"queries_per_round": 0}, "queries_per_round"),
    ("k-center", {"labels": "probs"}, "labels"),
    ("uncertainty", {"pool": "no-such-pool"}, "no-such-pool"),
    ("knockoff-adaptive", {"reward": "surprise"}, "reward"),
    ("knockoff-adaptive", {"lr": 0.0}, "lr"),
    ("knockoff-adaptive", {"n_top": 0}, "n_top"),
    ("dfal", {"preselect": -1}, "preselect"),
    ("dfal", {"overshoot": 1.5}, "overshoot"),
    ("dfal-k-center", {"preselect": 0}, "preselect"),
    ("dfme", {"directions": 0}, "directions"),
    ("dfme", {"epsilon": 0.0}, "epsilon"),
    ("dfme", {"labels": "logits"}, "labels"),
    ("dfme", {"student_steps": 0}, "student_steps"),
])
def test_bad_parameters_are_rejected(body: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ATTACKERS[body](**params)
