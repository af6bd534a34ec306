"""Imitation beyond the victim (seed 000 §3.4, Table 4): victims on disjoint quarters, multi-service attackers.

The quarter victims must really be trained on disjoint, stratified, covering shares of the training split; a
``random`` attacker sending the same batch to several services must train on one sample per answer
(``combine: concat``) or on the mean of the answers (``combine: average``), and reject bad parameters clearly.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from extractgym.agents.attackers.random_sampling import RandomAttacker, average_answers
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.datasets import get_dataset
from extractgym.victims.zoo import VICTIMS, _train_part, load_victim

QUARTERS = [f"digits-cnn-{c}" for c in "abcd"]


# -- victims on disjoint quarters ----------------------------------------------------------------
def test_quarter_victims_are_registered_as_the_full_victims_recipe_on_four_parts() -> None:
    full = VICTIMS["digits-cnn"]
    specs = [VICTIMS[name] for name in QUARTERS]
    assert [s.part for s in specs] == [0, 1, 2, 3]
    for s in specs:
        assert (s.parts, s.dataset, s.arch, s.train, s.featurizer) == (4, full.dataset, full.arch, full.train, None)
    assert full.parts == 1 and VICTIMS["digits-mlp"].arch != full.arch


def test_quarter_split_is_disjoint_covering_and_stratified() -> None:
    ds = get_dataset("digits")
    y = ds.y_train
    ids = np.arange(len(y))  # track which training rows each part gets
    parts = [_train_part(ids, y, p, 4) for p in range(4)]
    taken = np.concatenate([x for x, _ in parts])
    assert len(taken) == len(set(taken.tolist())) == len(y), "the quarters overlap or miss rows"
    for x, yy in parts:
        assert np.array_equal(yy, y[x]), "labels travel with their rows"
        assert abs(len(x) - len(y) / 4) <= 10
    counts = np.array([np.bincount(yy, minlength=10) for _, yy in parts])  # (part, class)
    assert (counts.max(axis=0) - counts.min(axis=0) <= 1).all(), f"not stratified: {counts}"
    with pytest.raises(ValueError, match="part must be in"):
        _train_part(ids, y, 4, 4)


def test_quarter_victims_differ_and_learn() -> None:
    ds = get_dataset("digits")
    preds = [load_victim(name).predict_proba(ds.x_test).argmax(axis=1) for name in QUARTERS]
    for p in preds:
        assert (p == ds.y_test).mean() > 0.6  # well above chance (0.1) on ~225 training images each
    assert any((a != b).any() for a, b in zip(preds, preds[1:], strict=False)), "four identical victims"


# -- the union of several services' answers -----------------------------------------------------
def episode(combine: str, services: list[str], labels: str = "soft") -> tuple[Any, dict[str, Any]]:
    scenario = {"name": "imitation-test", "rounds": 1,
                "services": [{"name": s, "victim": s} for s in services],
                "attackers": [{"body": "random", "budget": {"queries": 10 * len(services)},
                               "params": {"pool": "mnist8x8", "queries_per_round": 10, "services": services,
                                          "combine": combine, "labels": labels, "train_steps": 1},
                               "brain": {"kind": "preset", "knobs": {"service": "all"}}}]}
    env = make_env(scenario)
    summary = play_episode(env, seed=0)
    return env.game.attackers["attacker_0"].seat.body, summary


def bought(body: Any) -> np.ndarray:
    return body.pool[body.order[:body.cursor]]


def test_concat_trains_on_one_sample_per_service_answer() -> None:
    services = QUARTERS[:3]
    body, summary = episode("concat", services)
    x = bought(body)
    assert len(x) == 10 and summary["queries"] == 30, "every service answers the same 10 inputs"
    tx, ty = body.surrogate.transfer_set()
    assert len(tx) == 30
    expected = np.concatenate([load_victim(s).predict_proba(x) for s in services])
    np.testing.assert_allclose(ty, expected, atol=1e-6)
    np.testing.assert_array_equal(tx, np.concatenate([x] * 3))


def test_average_trains_on_the_mean_of_the_answers() -> None:
    services = QUARTERS
    body, summary = episode("average", services)
    x = bought(body)
    tx, ty = body.surrogate.transfer_set()
    assert len(tx) == len(x) == 10 and summary["queries"] == 40
    expected = np.mean([load_victim(s).predict_proba(x) for s in services], axis=0)
    np.testing.assert_allclose(ty, expected, atol=1e-6)
    np.testing.assert_array_equal(tx, x)
    assert not np.allclose(ty, load_victim(services[0]).predict_proba(x), atol=1e-3), "the victims never disagree"


def test_average_with_hard_labels_takes_the_argmax_of_the_mean() -> None:
    body, _ = episode("average", QUARTERS[:2], labels="hard")
    x = bought(body)
    _, ty = body.surrogate.transfer_set()
    mean = np.mean([load_victim(s).predict_proba(x) for s in QUARTERS[:2]], axis=0)
    np.testing.assert_array_equal(ty, mean.argmax(axis=1))


def test_average_answers_keeps_what_some_services_answered() -> None:
    x = np.arange(4.0)[:, None]
    a = (np.array([0, 1, 2]), np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    b = (np.array([1, 2]), np.array([[0.0, 1.0], [0.0, 1.0]]))  # a ban cut this service off after two answers
    kept, mean = average_answers(x, [a, b])
    np.testing.assert_array_equal(kept, x[:3])  # query 3 was answered by no one: dropped
    np.testing.assert_allclose(mean, [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])


# -- bad parameters ------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "words"), [
    ({"combine": "sum"}, "combine must be 'concat' or 'average'"),
    ({"combine": "Average"}, "combine must be"),
    ({"services": []}, "at least one service"),
    ({"services": ["a", "b", "a"]}, "must not repeat"),
    ({"services": ["a", "b"], "target": "c"}, "target 'c' is not among services"),
])
def test_bad_combine_or_services_raise_value_errors(params: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        RandomAttacker(pool="mnist8x8", **params)


def test_unknown_service_is_named_before_the_first_round() -> None:
    scenario = {"name": "x", "services": [{"name": "a", "victim": "digits-cnn-a"}],
                "attackers": [{"body": "random", "params": {"services": ["a", "nope"]}}]}
    with pytest.raises(ScenarioError, match="nope"):
        load_scenario(scenario)


def test_shipped_ensemble_scenario_queries_every_quarter_victim() -> None:
    s = load_scenario("digits-ensemble")
    assert sorted(svc.victim for svc in s.services) == QUARTERS
    params = s.attackers[0].params
    assert params["pool"] == "mnist8x8" and params["combine"] == "average" and len(params["services"]) == 4


# -- the referee's extra evaluation sets (the attacker's own domain) -------------------------------------
def test_evaluation_sets_score_victims_and_attackers_on_the_attackers_domain() -> None:
    from extractgym.scenarios import make_env as _make_env
    from extractgym.scenarios.runner import play_episode as _play
    from extractgym.victims.datasets import get_dataset as _get
    from extractgym.victims.zoo import load_victim as _load

    env = _make_env("digits-two-victims", rounds=2)
    s = _play(env)
    ev = s["evaluations"]["mnist8x8:test"]
    x, y = _get("mnist8x8").split("test")
    for service, victim in (("cnn-api", "digits-cnn"), ("mlp-api", "digits-mlp")):
        assert ev["victims"][service] == pytest.approx(float((_load(victim).predict_proba(x).argmax(1) == y).mean()))
    body = env.game.attackers["attacker_0"].seat.body
    pred = body.predict_proba(x).argmax(1)
    assert ev["attackers"]["attacker_0"]["accuracy"] == pytest.approx(float((pred == y).mean()))
    target = _load("digits-cnn").predict_proba(x).argmax(1)
    assert ev["attackers"]["attacker_0"]["fidelity"] == pytest.approx(float((pred == target).mean()))


@pytest.mark.parametrize("entry,message", [
    ({"dataset": "guardian"}, "is unlabelled"),
    ({"dataset": "mnist"}, "are not valid queries"),
    ({"dataset": "mnist9"}, "unknown dataset 'mnist9'"),
    ({"dataset": "digits", "split": "val"}, "evaluate.0.split"),
])
def test_bad_evaluation_sets_are_named(entry: dict, message: str) -> None:
    from extractgym.scenarios import ScenarioError, load_scenario

    with pytest.raises(ScenarioError, match=message):
        load_scenario("digits-basic", evaluate=[entry])
