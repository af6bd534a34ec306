"""What bodies and brains must not be able to do, and figures that must not depend on who asks.

Regression tests for the foundation review: an attacker cannot edit its wallet, a defence cannot serve
for free or rewrite the ledger, shared data cannot be edited in place, the referee's audit does not
disturb the game, and envs are not kept alive by caches.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest

from extractgym.envs.api import Budget, Client, DefenderView, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import InvalidQuery
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.base import InputSpec
from extractgym.victims.datasets import get_dataset


class TinyVictim:
    name, n_classes = "tiny", 3
    input_spec = InputSpec(kind="image", shape=(4,))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = x @ np.arange(12, dtype=np.float64).reshape(4, 3)
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class Screen:
    knobs = ()

    def __init__(self, answer: int) -> None:
        self.answer = answer

    def bind(self, view, rng) -> None: ...
    def end_round(self, round_index: int, knobs) -> None: ...

    def screen(self, account, x, knobs) -> int:
        account.banned = False  # a misbehaving defence edits what it was given: only a copy
        return self.answer

    def shape(self, probs, account, x, knobs):
        return probs


def _api(*defences, **terms) -> PredictionAPI:
    api = PredictionAPI([Service(ServiceConfig("svc", **terms), TinyVictim())], list(defences))
    api.register_owner("a", Budget(queries=10, money=1.0, accounts=1))
    return api


def test_client_wallet_and_accounts_are_copies() -> None:
    api = _api(price_per_query=0.1)
    client = Client(api, "a")
    acc = client.open_account("svc")
    client.wallet.money = -100.0
    client.wallet.budget = Budget()
    acc.free_left = 10**6
    assert api.wallets["a"].money == 0.0 and api.wallets["a"].budget.queries == 10
    client.query(acc, np.full((3, 4), 0.5))
    assert api.wallets["a"].money == pytest.approx(0.3)


@pytest.mark.parametrize("answer", [-1, -5, 10**6])
def test_screen_answers_are_clamped(answer: int) -> None:
    api = _api(Screen(answer))
    acc = api.open_account("a", "svc")
    r = api.query("a", acc.id, np.full((4, 4), 0.5))
    served = min(4, max(0, answer))
    assert r.n_answered == served == len(r.outputs) == api.wallets["a"].queries
    assert api.accounts[acc.id].banned == (served < 4)


def test_lone_surrogate_text_is_invalid_and_nothing_is_charged() -> None:
    api = PredictionAPI([Service(ServiceConfig("t", price_per_query=1.0), type("V", (), {
        "name": "t", "n_classes": 2, "input_spec": InputSpec(kind="text"),
        "predict_proba": lambda self, x: np.full((len(x), 2), 0.5)})())])
    api.register_owner("a", Budget())
    acc = api.open_account("a", "t")
    before = len(api.ledger)
    with pytest.raises(InvalidQuery, match="Unicode"):
        api.query("a", acc.id, ["fine", "bad \ud800"])
    assert api.wallets["a"].queries == 0 and api.wallets["a"].money == 0 and len(api.ledger) == before


def test_defender_view_is_read_only() -> None:
    api = _api()
    acc = api.open_account("a", "svc")
    view = DefenderView(api)
    assert not hasattr(view.ledger, "append")
    view.account(acc.id).banned = True
    assert not api.accounts[acc.id].banned
    assert len(view.ledger) == len(api.ledger) and view.ledger.digest() == api.ledger.digest()


def test_shared_data_and_raw_outputs_are_read_only() -> None:
    ds = get_dataset("digits")
    with pytest.raises(ValueError):
        ds.x_test[0, 0, 0, 0] = 1.0
    api = _api()
    acc = api.open_account("a", "svc")
    raw = api.query("a", acc.id, np.full((2, 4), 0.5), audit=True).raw
    with pytest.raises(ValueError):
        raw[0, 0] = 0.0


def test_random_attacker_stays_under_a_rate_limit() -> None:
    s = play_episode(make_env("digits-basic", rounds=3, services=[{"name": "api", "victim": "digits-cnn",
                                                                    "rate_limit": 25}]))
    assert s["queries"] == 3 * 25  # 40 wanted per round, 25 allowed: it buys 25, not nothing


def test_summary_between_steps_does_not_change_the_game() -> None:
    def run(peek: bool) -> dict:
        env = make_env("digits-defended", rounds=3)
        obs, _ = env.reset(seed=0)
        brains = env.factory.brains(0)
        while env.agents:
            if peek:
                env.summary()
            obs, *_ = env.step({a: brains[a](obs[a]) for a in env.agents})
        return env.summary()

    assert run(False) == run(True)


def test_round_observation_counts_rounds_played() -> None:
    env = make_env("digits-basic", rounds=4)
    obs, _ = env.reset(seed=0)
    assert obs["attacker_0"][0] == 0.0
    obs, *_ = env.step({a: 0 for a in env.agents})
    assert obs["attacker_0"][0] == pytest.approx(0.25) and obs["defender_0"][0] == pytest.approx(0.25)


def test_bad_action_names_the_seat() -> None:
    env = make_env("digits-basic", rounds=2)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="attacker_0"):
        env.step({"attacker_0": "many", "defender_0": 0})
    with pytest.raises(ValueError, match="defender_0"):
        env.step({"attacker_0": 0, "defender_0": None})


def test_params_are_coerced_as_validated() -> None:
    attackers = [{"body": "random", "params": {"queries_per_round": "20", "train_steps": 5.0},
                  "budget": {"queries": 40}}]
    s = play_episode(make_env("digits-basic", rounds=2, attackers=attackers))
    assert s["queries"] == 40


def test_envs_are_not_kept_alive() -> None:
    env = make_env("digits-basic", rounds=1)
    env.observation_space("attacker_0"), env.action_space("defender_0")
    ref = weakref.ref(env)
    del env
    gc.collect()
    assert ref() is None


def test_seeded_reset_reseeds_random_opponents() -> None:
    import gymnasium

    import extractgym  # noqa: F401

    defenders = [{"body": "gaussian-noise", "brain": "random"}]

    def actions_seen(seed: int) -> list[int]:
        env = gymnasium.make("extractgym/Attacker-v0", scenario="digits-basic", rounds=3, defenders=defenders).unwrapped
        env.reset(seed=seed)
        seen = []
        while env.env.agents:
            seen.append(int(env.brains["defender_0"](env._obs["defender_0"])))
            env.step(0)
        return seen

    assert actions_seen(3) == actions_seen(3)
