"""Bad requests at the API boundary and bad actions at the env boundary: named precisely, nothing charged or logged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from extractgym.envs.api import Budget, Client, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import InvalidQuery, QueryRefused
from extractgym.victims.base import InputSpec

MAX_CHARS = 40


class FakeImageVictim:
    name, n_classes = "fake-image", 3
    input_spec = InputSpec(kind="image", shape=(4,))

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        z = np.exp(x[:, :3] - x[:, :3].max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


class FakeTextVictim:
    name, n_classes = "fake-text", 2
    input_spec = InputSpec(kind="text", max_chars=MAX_CHARS)

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, x) -> np.ndarray:
        self.calls += 1
        p = np.array([min(len(s), MAX_CHARS) / MAX_CHARS for s in x])
        return np.stack([p, 1 - p], axis=1)


@pytest.fixture
def api():
    api = PredictionAPI([Service(ServiceConfig("img", price_per_query=0.1, account_price=1.0), FakeImageVictim()),
                         Service(ServiceConfig("txt", price_per_query=0.1), FakeTextVictim())])
    api.register_owner("alice", Budget(queries=100, money=50.0, accounts=5))
    api.register_owner("bob", Budget())
    return api


def state(api: PredictionAPI):
    return ({o: dataclasses.replace(w) for o, w in api.wallets.items()},
            {a: dataclasses.replace(acc) for a, acc in api.accounts.items()}, len(api.ledger), api.ledger.digest(),
            tuple(s.victim.calls for s in api.services.values()))


def good_images(n: int = 2) -> np.ndarray:
    return np.full((n, 4), 0.5, dtype=np.float32)


def with_value(value: float, row: int = 1) -> np.ndarray:
    x = good_images(3).astype(np.float64)
    x[row, 2] = value
    return x


BAD_IMAGES = {
    "nan": (with_value(np.nan), ["nan", "rows [1]"]),
    "inf": (with_value(np.inf), ["inf"]),
    "-inf": (with_value(-np.inf, row=0), ["inf", "rows [0]"]),
    "wrong-shape": (np.zeros((2, 5), dtype=np.float32), ["shape", "(2, 5)"]),
    "wrong-ndim-1d": (np.zeros(4, dtype=np.float32), ["shape"]),
    "wrong-ndim-3d": (np.zeros((2, 4, 1), dtype=np.float32), ["shape"]),
    "scalar-array": (np.array(0.5), ["shape"]),
    "int-dtype": (np.zeros((2, 4), dtype=np.int64), ["dtype", "int64"]),
    "bool-dtype": (np.zeros((2, 4), dtype=bool), ["dtype", "bool"]),
    "complex-dtype": (np.zeros((2, 4), dtype=np.complex64), ["dtype"]),
    "object-array": (np.array([[0.5] * 4] * 2, dtype=object), ["dtype", "object"]),
    "str-array": (np.array([["a"] * 4] * 2), ["dtype"]),
    "list": ([[0.5] * 4] * 2, ["numpy array", "list"]),
    "tuple": (((0.5,) * 4,) * 2, ["numpy array", "tuple"]),
    "none": (None, ["numpy array", "NoneType"]),
    "empty-batch": (np.zeros((0, 4), dtype=np.float32), ["empty"]),
    "above-range": (with_value(1.5), ["range", "[0.0, 1.0]"]),
    "below-range": (with_value(-0.01), ["range"]),
}

BAD_TEXTS = {
    "empty-string": (["fine", ""], ["empty", "text query 1"]),
    "whitespace-only": (["fine", " \t\n "], ["empty", "text query 1"]),
    "non-str-item": (["fine", 3], ["text query 1", "int", "not str"]),
    "none-item": ([None], ["text query 0", "NoneType"]),
    "bytes-item": ([b"bytes"], ["bytes", "not str"]),
    "bare-str": ("a single sentence", ["single str"]),
    "too-long": (["fine", "x" * (MAX_CHARS + 1)], ["text query 1", str(MAX_CHARS + 1), "limit"]),
    "empty-list": ([], ["empty"]),
    "empty-array": (np.array([], dtype=object), ["empty"]),
    "2d-array": (np.array([["a", "b"]], dtype=object), ["1-d"]),
    "not-a-list": (3.0, ["list of str", "float"]),
}


# service -> (its bad queries, a good batch of 2 for the same account afterwards)
BAD_INPUTS = {"img": (BAD_IMAGES, good_images), "txt": (BAD_TEXTS, lambda: ["fine", "x" * MAX_CHARS])}


@pytest.mark.parametrize("service,case", [(svc, c) for svc, (bad, _) in BAD_INPUTS.items() for c in bad])
def test_bad_queries_are_rejected_and_not_charged(api, service, case):
    bad, good = BAD_INPUTS[service]
    x, words = bad[case]
    acc = api.open_account("alice", service)
    before = state(api)
    with pytest.raises(InvalidQuery) as e:
        api.query("alice", acc.id, x)
    message = str(e.value).lower()
    for w in words:
        assert w.lower() in message, (case, str(e.value))
    assert state(api) == before  # nothing charged, logged or served
    # the same account still works afterwards
    assert api.query("alice", acc.id, good()).n_answered == 2


def test_invalid_query_is_a_value_error_and_not_a_refusal():
    assert issubclass(InvalidQuery, ValueError) and not issubclass(InvalidQuery, QueryRefused)


def test_valid_inputs_are_accepted(api):
    acc = api.open_account("bob", "img")
    for x in (good_images().astype(np.float64), good_images().astype(np.float16), np.zeros((1, 4), np.float32),
              np.ones((1, 4), np.float32), np.asfortranarray(np.full((3, 4), 0.25))):
        r = api.query("bob", acc.id, x)
        assert r.n_answered == len(x) and np.isfinite(r.outputs).all()
    t = api.open_account("bob", "txt")
    for x in (["a"], ("two", "texts"), np.array(["an", "array"], dtype=object)):
        assert api.query("bob", t.id, x).n_answered == len(x)


def test_validation_comes_before_budget_checks(api):
    """An invalid request is named as invalid even when it would also exceed a budget; nothing is charged."""
    api.register_owner("poor", Budget(queries=1, money=1.0))  # exactly one account, no paid query
    acc = api.open_account("poor", "img")
    before = state(api)
    with pytest.raises(InvalidQuery):
        api.query("poor", acc.id, np.full((5, 4), np.nan, dtype=np.float32))
    assert state(api) == before


@pytest.mark.parametrize("who, account, reason", [
    ("alice", "img/alice/99", "unknown-account"),
    ("alice", "", "unknown-account"),
    ("bob", "img/alice/0", "not-owner"),
    ("mallory", "img/alice/0", "not-owner"),
])
def test_refusals_name_the_reason(api, who, account, reason):
    api.open_account("alice", "img")
    before = state(api)
    with pytest.raises(QueryRefused) as e:
        api.query(who, account, good_images())
    assert e.value.reason == reason
    assert reason in str(e.value)
    assert state(api) == before


def test_unknown_service_is_refused_with_known_names(api):
    before = state(api)
    for call in (lambda: api.open_account("alice", "nope"), lambda: Client(api, "alice").service_terms("nope"),
                 lambda: Client(api, "alice").service_info("nope")):
        with pytest.raises(QueryRefused) as e:
            call()
        assert e.value.reason == "unknown-service"
        assert "nope" in str(e.value) and "img" in str(e.value) and "txt" in str(e.value)
    assert state(api) == before


def test_a_client_cannot_use_someone_elses_account(api):
    acc = api.open_account("alice", "img")
    with pytest.raises(QueryRefused) as e:
        Client(api, "bob").query(acc, good_images())
    assert e.value.reason == "not-owner"
    # editing a copy of an account changes nothing at the API
    mine = Client(api, "bob").open_account("img")
    mine.free_left, mine.banned = 10**6, True
    assert api.accounts[mine.id].free_left == 0 and not api.accounts[mine.id].banned


@pytest.mark.parametrize("config", [
    dict(price_per_query=-1.0), dict(account_price=float("nan")), dict(free_quota=-1), dict(rate_limit=0),
    dict(output="logits"), dict(top_k=-1), dict(price_per_query=float("inf")),
])
def test_bad_service_config_is_rejected(config):
    with pytest.raises(ValueError) as e:
        ServiceConfig("svc", **config)
    assert next(iter(config)) in str(e.value)


# -- the env boundary ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def env():
    from extractgym.scenarios import make_env

    return make_env("digits-basic", rounds=2)


def preset(env) -> dict[str, np.ndarray]:
    return {a: np.array([k.default for k in env.knobs(a)]) for a in env.agents}


def test_out_of_range_knob_actions_name_the_knob(env):
    env.reset(seed=0)
    for seat in env.agents:
        for i, knob in enumerate(env.knobs(seat)):
            for bad in (len(knob.choices), -1, 0.5, 10**6):
                actions = preset(env)
                actions[seat] = actions[seat].astype(np.float64)
                actions[seat][i] = bad
                ledger = len(env.game.api.ledger)
                with pytest.raises(ValueError) as e:
                    env.step(actions)
                assert repr(knob.name) in str(e.value) or knob.name in str(e.value), str(e.value)
                assert env.game.round == 0 and len(env.game.api.ledger) == ledger  # nothing happened


def test_wrong_action_length_names_the_knobs(env):
    env.reset(seed=0)
    seat = env.agents[0]
    actions = preset(env)
    actions[seat] = np.append(actions[seat], 0)
    with pytest.raises(ValueError) as e:
        env.step(actions)
    for knob in env.knobs(seat):
        assert knob.name in str(e.value)


def test_missing_and_unknown_seats_are_named(env):
    env.reset(seed=0)
    for seat in env.agents:
        actions = preset(env)
        del actions[seat]
        with pytest.raises(ValueError) as e:
            env.step(actions)
        assert seat in str(e.value)
    actions = {**preset(env), "attacker_9": np.array([0, 0])}
    with pytest.raises(ValueError) as e:
        env.step(actions)
    assert "attacker_9" in str(e.value)
    assert env.game.round == 0
