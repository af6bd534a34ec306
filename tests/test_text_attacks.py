"""Seed 001's text attacks: RANDOM token queries, natural queries from another domain, soft and label-only surrogates.

Kept fast: the generator runs on toy corpora or the 0.2 s ``guardian-random`` dataset, the game on a tiny budget
(embeddings are cached on disk, so only a cold cache pays for encoding).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from extractgym.agents.attackers.random_sampling import RandomAttacker
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.datasets import SPLITS, get_dataset
from extractgym.victims.text_data import RANDOM_QUERIES, load_guardian_random, random_token_queries, tokenize

TOY = ["the cat sat on the mat .", "a dog ate the bone", "the end", "cats and dogs and the rest"]


def test_random_queries_are_deterministic_for_a_seed() -> None:
    a = random_token_queries(TOY, 200, seed=1)
    assert a.dtype == object and a.shape == (200,) and len(set(a.tolist())) == 200
    assert np.array_equal(a, random_token_queries(TOY, 200, seed=1))
    assert not np.array_equal(a, random_token_queries(TOY, 200, seed=2))


def test_random_queries_follow_the_corpus_unigrams_and_lengths() -> None:
    counts = Counter(w for t in TOY for w in tokenize(t))
    q = random_token_queries(TOY, 3000, seed=0)
    seqs = [t.split(" ") for t in q]
    assert {len(s) for s in seqs} <= {len(tokenize(t)) for t in TOY}
    drawn = Counter(w for s in seqs for w in s)
    assert set(drawn) <= set(counts)
    total, n = sum(counts.values()), sum(drawn.values())
    for w, c in counts.items():  # i.i.d. from the unigram distribution: frequencies within 1.5 points
        assert abs(drawn[w] / n - c / total) < 0.015, (w, drawn[w] / n, c / total)
    top2 = random_token_queries(["a a a b b c", "a b"], 30, seed=0, vocab_size=2)
    assert {w for t in top2 for w in t.split()} == {"a", "b"}


def test_guardian_random_dataset() -> None:
    ds = get_dataset("guardian-random")
    x, y = ds.split("all")
    assert len(x) == RANDOM_QUERIES == len(set(x.tolist())) and x.dtype == object
    assert len(ds.x_pool) == 15_000 == 5 * len(get_dataset("rotten-tomatoes").y_train)  # 5x the victim's training
    assert (y == -1).all() and not ds.labelled and ds.n_classes == 2 and ds.spec.kind == "text"
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not set(ds.split(a)[0].tolist()) & set(ds.split(b)[0].tolist())
    corpus = [tokenize(t) for t in get_dataset("guardian").split("all")[0]]
    vocab, lengths = {w for t in corpus for w in t}, [len(t) for t in corpus]
    tokens = [t.split(" ") for t in ds.x_pool]
    assert {w for t in tokens for w in t} <= vocab
    assert min(lengths) <= min(map(len, tokens)) and max(map(len, tokens)) <= max(lengths)
    headlines = set(get_dataset("guardian").split("all")[0].tolist())
    assert not set(ds.x_pool.tolist()) & headlines  # nonsense, not headlines
    assert np.array_equal(load_guardian_random().x_pool, ds.x_pool)


@pytest.mark.parametrize("kwargs, match", [
    ({"n": 0}, "n must be >= 1"),
    ({"vocab_size": 0}, "vocab_size must be >= 1"),
    ({"corpus": ["", "   "]}, "no tokens"),
    ({"corpus": ["solo"], "n": 3}, "3 distinct sequences"),
])
def test_random_queries_bad_params(kwargs: dict, match: str) -> None:
    args = {"corpus": TOY, "n": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        random_token_queries(args.pop("corpus"), args.pop("n"), **args)


@pytest.mark.parametrize("params, words", [
    ({"pool": "guardian-randum"}, ["'guardian-randum'", "guardian-random", "rt-plots"]),
    ({"pool": "guardian-random", "pool_split": "pol"}, ["'pol'", "pool"]),
    ({"pool": "guardian-random", "labels": "probs"}, ["labels", "'probs'"]),
])
def test_random_attacker_bad_params(params: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        RandomAttacker(**params)
    assert all(w in str(e.value) for w in words), str(e.value)


def _scenario(**attacker: object) -> dict:
    return {"name": "tiny-text", "rounds": 2, "services": [{"name": "api", "victim": "minilm-sentiment"}],
            "attackers": [{"body": "random", "params": attacker, "budget": {"queries": 60}}]}


def test_scenario_names_bad_text_pools() -> None:
    with pytest.raises(ScenarioError, match=r"attackers\.0\.params\.pool: unknown dataset 'guardian-randum'"):
        load_scenario(_scenario(pool="guardian-randum"))
    bad = _scenario(pool="guardian-random")
    bad["services"][0]["victim"] = "digits-cnn"
    with pytest.raises(ScenarioError, match=r"attackers\.0\.params\.pool: 'guardian-random' samples .* not valid"):
        load_scenario(bad)
    ok = load_scenario(_scenario(pool="guardian-random", labels="hard"))
    assert ok.attackers[0].params["pool"] == "guardian-random"


BUDGET = 300  # 200 leaves RANDOM soft-label accuracy 0.62-0.69 over seeds 0-5, too near the 0.578 majority


def _game() -> dict:
    """RANDOM queries with soft labels from a probabilities API; natural Guardian queries turned label-only by the
    attacker (``labels: hard``), and bought from an API that answers labels only (``output: label``). (RANDOM
    label-only needs more than this tiny budget to beat the majority class reliably: 0.61-0.70 over seeds 0-5.)"""
    def seat(pool: str, labels: str, target: str, split: str = "pool") -> dict:
        return {"body": "random", "budget": {"queries": BUDGET, "money": 10.0},
                "params": {"pool": pool, "pool_split": split, "queries_per_round": BUDGET // 2, "labels": labels,
                           "target": target, "train_steps": 150}}

    return {"name": "tiny-text-attacks", "rounds": 2,
            "services": [{"name": "probs-api", "victim": "minilm-sentiment", "price_per_query": 0.001},
                         {"name": "label-api", "victim": "minilm-sentiment", "price_per_query": 0.001,
                          "output": "label"}],
            "attackers": [seat("guardian-random", "soft", "probs-api"), seat("guardian", "hard", "probs-api", "all"),
                          seat("guardian", "soft", "label-api", "all")],
            "defenders": [{"body": "none"}]}


def test_random_and_label_only_text_attackers_in_the_game() -> None:
    """Each spends exactly its budget and beats the majority class on the victim's test split; the soft attacker
    trains on real probabilities, the label-only ones on class labels."""
    env = make_env(_game())
    s = play_episode(env, seed=0)
    ledger = list(env.game.api.ledger)
    _, y_test = get_dataset("rotten-tomatoes").split("test")
    majority = max(np.mean(y_test == c) for c in (0, 1))
    for seat in ("attacker_0", "attacker_1", "attacker_2"):
        info = s["attackers"][seat]
        assert info["queries"] == BUDGET == sum(e.n for e in ledger if e.owner == seat)
        assert info["cost"] == pytest.approx(BUDGET * 0.001)
        assert info["accuracy"] > majority + 0.05, (seat, info, majority)  # 0.66-0.74 over seeds 0-5
        assert info["fidelity"] > 0.7, (seat, info)  # 0.74-0.89 over seeds 0-5
    bodies = [env.game.attackers[f"attacker_{i}"].seat.body for i in range(3)]
    soft_x, soft_y = bodies[0].surrogate.transfer_set()
    assert soft_x.shape == (BUDGET, 384) and soft_y.shape == (BUDGET, 2)  # MiniLM features, probability targets
    assert np.allclose(soft_y.sum(axis=1), 1.0) and (soft_y.max(axis=1) < 0.999).mean() > 0.5  # real soft labels
    _, hard_y = bodies[1].surrogate.transfer_set()
    assert hard_y.shape == (BUDGET,) and set(np.unique(hard_y)) <= {0, 1}  # label-only: class indices
    _, api_y = bodies[2].surrogate.transfer_set()
    assert set(np.unique(api_y)) == {0.0, 1.0} and np.array_equal(api_y.sum(axis=1), np.ones(BUDGET))  # one-hot
