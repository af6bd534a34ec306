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


# -- the seat boundary (issue 9): each T-path below worked through the public protocol before the boundary ----------
from extractgym.agents.attackers.random_sampling import RandomAttacker  # noqa: E402
from extractgym.agents.refs import AttackerData, split_of  # noqa: E402
from extractgym.agents.registry import ATTACKERS, register_attacker  # noqa: E402
from extractgym.scenarios import ScenarioError, load_scenario  # noqa: E402


def _isolation() -> bool | str:
    """The sandbox where bubblewrap works here, else the plain child process (the same protocol)."""
    from extractgym.agents.seats.sandbox import sandbox_problem

    return True if sandbox_problem() is None else "process"


def _one_attacker(body: str, queries: int = 100, rounds: int = 3, isolate: bool | str = False, **params) -> list[dict]:
    return [{"body": body, "params": {"pool": "digits", "queries_per_round": queries // rounds, **params},
             "budget": {"queries": queries, "money": 10.0, "accounts": 3}, "isolate": isolate}]


@register_attacker("test-spy")
class SpyAttacker(RandomAttacker):
    """T1: records every input its own code is shown, and buys answers for anything it has seen."""

    seen: list = []

    def predict_proba(self, x):
        SpyAttacker.seen.append(np.array(x, copy=True))
        return super().predict_proba(x)

    def play_round(self, knobs, round_index):
        for x in SpyAttacker.seen:  # buy the referee's test inputs, if they were ever shown
            idx, out = self.send(self.target, x)
            self.surrogate.add(x[idx], out)
        super().play_round(knobs, round_index)


def test_t1_no_attacker_code_ever_sees_a_test_input() -> None:
    SpyAttacker.seen = []
    s = play_episode(make_env("digits-basic", rounds=3, attackers=_one_attacker("test-spy", queries=1200)))
    x_test = get_dataset("digits").split("test")[0]
    shown = {row.tobytes() for batch in SpyAttacker.seen for row in np.asarray(batch, dtype=np.float32)}
    assert not any(row.tobytes() in shown for row in x_test.astype(np.float32))
    assert s["fidelity"] < 0.995  # before the boundary: 1.0 after one round, from the test set's own answers


@register_attacker("test-exploit")
class ExploitAttacker(RandomAttacker):
    """T2/T3: reaches for the API through the client a body used to hold (and, in isolation, through the channel)."""

    reached: list = []

    def play_round(self, knobs, round_index):
        from extractgym.envs.api import Budget

        for path in ("client._api", "channel._client._api"):
            obj = self
            try:
                for attr in path.split("."):
                    obj = getattr(obj, attr)
            except AttributeError:
                continue
            ExploitAttacker.reached.append(path)
            obj.wallets[self.channel_owner()].budget = Budget()  # unlimited queries
            obj.wallets[self.channel_owner()].money = 0.0
            obj.ledger._entries.clear()  # T3: erase the books
        super().play_round({**knobs, "queries": 300}, round_index)

    def channel_owner(self) -> str:
        return "attacker_0"


def test_t2_t3_a_body_cannot_raise_its_budget_or_erase_the_ledger_through_its_handle() -> None:
    ExploitAttacker.reached = []
    s = play_episode(make_env("digits-basic", rounds=3, attackers=_one_attacker("test-exploit", queries=100)))
    assert "client._api" not in ExploitAttacker.reached  # bodies hold a channel, not the client
    if "channel._client._api" not in ExploitAttacker.reached:  # (in-process code can walk further: see isolation)
        assert s["queries"] <= 100 and s["cost"] > 0


def test_isolated_body_cannot_reach_the_api_and_plays_honestly() -> None:
    ExploitAttacker.reached = []
    env = make_env("digits-basic", rounds=2, attackers=_one_attacker("test-exploit", queries=100, isolate=_isolation()))
    s = play_episode(env)
    body = env.game.attackers["attacker_0"].seat.body
    env.close()
    assert ExploitAttacker.reached == []  # this process's copy of the class was never run
    assert s["queries"] == 100 and s["cost"] > 0 and s["ledger_entries"] > 0
    assert body._launched.process.poll() is not None  # the child is gone once the env is closed


def test_isolated_seat_plays_the_same_digits_episode_as_in_process() -> None:
    attackers = [{"body": "jb-top3", "params": {"pool": "digits", "queries_per_round": 200},
                  "budget": {"queries": 1000, "money": 30.0, "accounts": 25}}]
    plain = play_episode(make_env("digits-similarity", rounds=3, attackers=attackers), seed=2)
    iso = play_episode(make_env("digits-similarity", rounds=3, attackers=[{**attackers[0], "isolate": _isolation()}]),
                       seed=2)
    for key in ("attacker_accuracy", "fidelity", "queries", "cost", "accounts_banned", "ledger_digest", "returns"):
        assert iso[key] == plain[key], key


def test_t4_editing_a_loaded_victim_does_not_change_the_next_episode() -> None:
    import torch

    from extractgym.victims.zoo import load_victim

    before = play_episode(make_env("digits-basic", rounds=1))["victim_accuracy"]
    victim = load_victim("digits-cnn", 0)
    with torch.no_grad():
        for p in victim.model.parameters():
            p.zero_()
    assert play_episode(make_env("digits-basic", rounds=1))["victim_accuracy"] == before > 0.9


def test_t5_service_terms_are_copies() -> None:
    api = _api(price_per_query=0.1)
    client = Client(api, "a")
    object.__setattr__(client.service_terms("svc"), "price_per_query", 0.0)
    n_classes, spec = client.service_info("svc")
    object.__setattr__(spec, "high", 1e9)
    acc = client.open_account("svc")
    assert client.query(acc, np.full((3, 4), 0.5)).charge == pytest.approx(0.3)
    assert api.services["svc"].victim.input_spec.high == 1.0


class Keeper:
    """T6: a defence that keeps the arrays it screened (as a stateful detector keeps history)."""

    knobs = ()

    def __init__(self) -> None:
        self.kept: list[np.ndarray] = []

    def bind(self, view, rng) -> None: ...
    def end_round(self, round_index: int, knobs) -> None: ...

    def screen(self, account, x, knobs) -> int:
        self.kept.append(x)
        return len(x)

    def shape(self, probs, account, x, knobs):
        return probs


def test_t6_the_sender_cannot_change_a_query_after_sending_it() -> None:
    keeper = Keeper()
    api = _api(keeper)
    acc = api.open_account("a", "svc")
    x = np.full((2, 4), 0.5, dtype=np.float32)
    digest = api.query("a", acc.id, x).n_answered and api.ledger[-1].digest
    x[:] = 0.9  # after sending
    np.testing.assert_array_equal(keeper.kept[0], np.full((2, 4), 0.5, dtype=np.float32))
    assert api.ledger[-1].digest == digest


# -- a new attacker with a new data parameter: one file, no schema edit ---------------------------------------------
@register_attacker("test-aux-data")
class AuxDataAttacker(RandomAttacker):
    """Random sampling that also reads an auxiliary dataset (declared by its type, never named in the schema)."""

    def __init__(self, aux: AttackerData = "digits", aux_split: split_of("aux") = "train", **params) -> None:
        super().__init__(**params)
        self.aux, self.aux_split = aux, aux_split


@pytest.mark.parametrize("params, path, words", [
    ({"aux": "nope"}, "attackers.0.params.aux", "unknown dataset 'nope'"),
    ({"aux": "guardian"}, "attackers.0.params.aux", "not valid queries for service 'api'"),
    ({"aux": "mnist"}, "attackers.0.params.aux", "(1, 28, 28)"),
    ({"aux_split": "tset"}, "attackers.0.params.aux_split", "unknown split 'tset'"),
    ({"aux_split": "test"}, "attackers.0.params.aux_split", "held-out test set"),
])
def test_a_new_data_parameter_is_checked_by_its_type(params: dict, path: str, words: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("digits-basic", attackers=[{"body": "test-aux-data", "params": params}])
    assert f"{path}: " in str(e.value) and words in str(e.value)
    load_scenario("digits-basic", attackers=[{"body": "test-aux-data", "params": {"aux": "mnist8x8"}}])
    assert "aux" in __import__("extractgym.agents.registry", fromlist=["parameters"]).parameters(ATTACKERS["test-aux-data"])
