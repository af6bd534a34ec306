"""Adaptive tactics (Sybil accounts, query blinding, query filtering): budgets, valid inputs, what is sent."""

from __future__ import annotations

import numpy as np
import pytest

from extractgym.agents.base import DefenderBase
from extractgym.agents.seats.seat import Seat, build_channel
from extractgym.agents.tactics.blinding import IMAGE_DEFAULTS, TEXT_DEFAULTS, transform_images, transform_texts
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.datasets import get_dataset


def _scenario(tactics: dict, defender: str = "none", body: str = "random", queries: int = 200, rounds: int = 2,
              budget: dict | None = None, service: dict | None = None, params: dict | None = None) -> dict:
    return {
        "name": "tactics", "rounds": rounds, "seed": 0,
        "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01, "account_price": 1.0,
                      **(service or {})}],
        "attackers": [{"body": body, "params": {"pool": "digits", "queries_per_round": queries // rounds, **(params or {})},
                       "budget": budget or {"queries": queries, "money": 100.0, "accounts": 20},
                       "tactics": tactics}],
        "defenders": [{"body": defender}],
    }


def _attacker_entries(env, kind: str = "query") -> list:
    return [e for e in env.game.api.ledger if e.owner == "attacker_0" and e.kind == kind]


# -- Sybil ------------------------------------------------------------------------------------------
def test_sybil_spreads_each_batch_over_its_accounts() -> None:
    env = make_env(_scenario({"sybil": {"accounts": 4}}, rounds=1, queries=100))
    play_episode(env)
    per_account: dict[str, int] = {}
    for e in _attacker_entries(env):
        per_account[e.account] = per_account.get(e.account, 0) + e.n
    assert sorted(per_account.values()) == [25, 25, 25, 25]
    assert len(_attacker_entries(env, "open")) == 4


def test_sybil_rotates_after_rotate_every_queries() -> None:
    env = make_env(_scenario({"sybil": {"accounts": 2, "rotate_every": 30}}, rounds=3, queries=180))
    s = play_episode(env)
    per_account: dict[str, int] = {}
    for e in _attacker_entries(env):
        per_account[e.account] = per_account.get(e.account, 0) + e.n
    assert s["queries"] == 180
    assert max(per_account.values()) <= 30
    assert len(per_account) == 6


def test_sybil_defeats_a_per_account_rate_limit() -> None:
    plain = play_episode(make_env(_scenario({}, rounds=1, queries=80, service={"rate_limit": 20})))
    sybil = play_episode(make_env(_scenario({"sybil": {"accounts": 4}}, rounds=1, queries=80,
                                            service={"rate_limit": 20})))
    assert plain["queries"] == 20
    assert sybil["queries"] == 80
    assert sybil["accounts_created"] == 4


@pytest.mark.parametrize("accounts,money,parallel,queries", [
    (3, 100.0, 8, 600), (20, 4.5, 8, 600), (2, 100.0, 16, 600), (5, 2.2, 1, 600), (20, 100.0, 2, 130),
    (20, 100.0, 16, 90)])
def test_sybil_stays_in_budget_and_never_buys_an_account_it_does_not_use(accounts: int, money: float, parallel: int,
                                                                         queries: int) -> None:
    budget = {"queries": queries, "money": money, "accounts": accounts}
    env = make_env(_scenario({"sybil": {"accounts": parallel, "rotate_every": 25}}, defender="similarity",
                             body="jb-top3", queries=600, rounds=3, budget=budget))
    s = play_episode(env)
    wallet = env.game.api.wallets["attacker_0"]
    assert s["accounts_created"] == wallet.accounts <= accounts
    assert wallet.money <= money + 1e-9
    assert s["queries"] <= queries
    opened = [e.account for e in _attacker_entries(env, "open")]
    used = {e.account for e in _attacker_entries(env) if e.n > 0}
    assert len(opened) == wallet.accounts
    assert set(opened) <= used, "every account the seat paid for answered at least one query"
    # an account opened only after the query budget was spent would be waste
    ledger = [e for e in env.game.api.ledger if e.owner == "attacker_0"]
    for i, e in enumerate(ledger):
        if e.kind == "open":
            assert sum(x.n for x in ledger[:i] if x.kind == "query") < queries


# -- blinding -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [*sorted(IMAGE_DEFAULTS), "autoencoder"])
def test_image_blinding_sends_valid_inputs(name: str) -> None:
    """Through the send path: what reaches the API has the query's shape and dtype and lies in the input range."""
    body, recorder, _ = _bound_attacker({"blinding": {"transform": name}}, budget_queries=1000)
    x = get_dataset("digits").split("pool")[0][:64]
    body.body.send("api", x)
    sent = np.concatenate(recorder.seen)
    assert sent.shape == x.shape and sent.dtype == np.float32
    assert sent.min() >= 0.0 and sent.max() <= 1.0 and np.isfinite(sent).all()
    assert not np.allclose(sent, x), "a transform with r > 0 must change the queries"
    if name != "autoencoder":  # the raw transform is reproducible from the generator state
        raw = transform_images(x, name, IMAGE_DEFAULTS[name], np.random.default_rng(0))
        again = transform_images(x, name, IMAGE_DEFAULTS[name], np.random.default_rng(0))
        assert np.array_equal(raw, again)


@pytest.mark.parametrize("name", sorted(TEXT_DEFAULTS))
def test_text_blinding_transforms_keep_words(name: str) -> None:
    texts = np.array(["a gripping, well acted film; the ending drags", "dull", "funny and sharp: a delight"],
                     dtype=object)
    out = transform_texts(texts, name, 0.5, np.random.default_rng(0))
    assert out.shape == texts.shape
    assert transform_texts(np.array([""], dtype=object), name, 0.5, np.random.default_rng(0))[0] == ""
    for before, after in zip(texts, out, strict=True):
        assert after.strip()
        words = lambda t: set(t.replace(",", " ").replace(";", " ").replace(":", " ").split())  # noqa: E731
        assert words(after) <= words(before)


class _Recorder(DefenderBase):
    """A defence that serves everything and remembers what the API received."""

    def bind(self, view, rng) -> None:
        super().bind(view, rng)
        self.seen: list[np.ndarray] = []

    def screen(self, account, x, knobs):
        self.seen.append(np.array(x))
        return len(x)


def _bound_attacker(tactics: dict, budget_queries: int = 100):
    from extractgym.agents import ATTACKERS
    from extractgym.envs.api import Budget, Client, PredictionAPI, Service, ServiceConfig
    from extractgym.victims.zoo import load_victim

    recorder = _Recorder()
    api = PredictionAPI([Service(ServiceConfig("api"), load_victim("digits-cnn"))], [recorder])
    from extractgym.envs.api import DefenderView

    recorder.bind(DefenderView(api), np.random.default_rng(0))
    api.register_owner("a", Budget(queries=budget_queries))
    seat = Seat(ATTACKERS["random"](pool="digits"), build_channel(tactics))
    seat.bind(Client(api, "a"), np.random.default_rng(0))
    seat.play_round({k.name: k.choices[k.default] for k in seat.knobs} | {"queries": 0}, 0)  # the round's knob values
    return seat, recorder, api


def test_blinding_sends_transformed_queries_in_range_and_answers_the_originals() -> None:
    body, recorder, _ = _bound_attacker({"blinding": {"transform": "gaussian", "strength": 0.1}})
    x = get_dataset("digits").split("pool")[0][:40]
    idx, out = body.body.send("api", x)
    sent = np.concatenate(recorder.seen)
    assert list(idx) == list(range(40)) and out.shape == (40, 10)
    assert sent.shape == x.shape and sent.min() >= 0.0 and sent.max() <= 1.0
    assert not np.allclose(sent, x)
    body.channel.begin_round({"blind_level": 0.0})  # the knob turns blinding off
    recorder.seen.clear()
    body.body.send("api", x[:10])
    assert np.array_equal(np.concatenate(recorder.seen), x[:10])


def test_blinding_a_text_service_with_an_image_transform_is_a_clear_error() -> None:
    with pytest.raises(ScenarioError, match="tactics.blinding.transform: 'scale' is for images, but the target takes text"):
        make_env({"name": "t", "rounds": 1,
                    "services": [{"name": "api", "victim": "minilm-sentiment", "output": "label"}],
                    "attackers": [{"body": "random", "params": {"pool": "guardian", "queries_per_round": 5},
                                   "budget": {"queries": 5}, "tactics": {"blinding": {"transform": "scale"}}}],
                  "defenders": [{"body": "none"}]})


# -- filtering ----------------------------------------------------------------------------------------
def test_a_filter_with_threshold_zero_filters_nothing() -> None:
    plain = make_env(_scenario({}, defender="similarity", body="jba-pgd", queries=300))
    zero = make_env(_scenario({"filter": {"detector": "similarity", "threshold": 0.0}}, defender="similarity",
                              body="jba-pgd", queries=300))
    a, b = play_episode(plain, seed=3), play_episode(zero, seed=3)
    seat = zero.game.attackers["attacker_0"].seat
    assert seat.stats()["filter_withheld"] == 0 and seat.stats()["filter_considered"] > 0
    assert [e.digest for e in _attacker_entries(plain)] == [e.digest for e in _attacker_entries(zero)]
    assert a["accounts_banned"] == b["accounts_banned"]


@pytest.mark.parametrize("detector", ["similarity", "prada"])
def test_filter_withholds_repeats_and_withheld_queries_cost_nothing(detector: str) -> None:
    body, recorder, api = _bound_attacker({"filter": {"detector": detector}}, budget_queries=1000)
    x = get_dataset("digits").split("pool")[0][:30]
    idx, _ = body.body.send("api", x)
    assert len(idx) > 0
    first = sum(len(s) for s in recorder.seen)
    idx2, _ = body.body.send("api", x[idx])  # exact repeats of what the account already sent
    assert len(idx2) == 0
    assert sum(len(s) for s in recorder.seen) == first  # nothing more reached the API
    assert api.wallets["a"].queries == first  # and nothing more was charged
    assert body.stats()["filter_withheld"] >= len(idx)


def test_filtering_with_victim_like_data_cuts_the_accounts_burned() -> None:
    none = play_episode(make_env(_scenario({}, defender="similarity", body="jba-pgd", queries=600, rounds=3)))
    filt = play_episode(make_env(_scenario({"filter": {"detector": "similarity", "data": "digits"}},
                                           defender="similarity", body="jba-pgd", queries=600, rounds=3)))
    assert none["accounts_banned"] >= 3
    assert filt["accounts_banned"] < none["accounts_banned"]


# -- composition, knobs, schema -----------------------------------------------------------------------
def test_tactic_knobs_join_the_seat_and_same_seed_same_transcript() -> None:
    sc = _scenario({"sybil": {"accounts": 3, "rotate_every": 50}, "blinding": {"transform": "rotate"}},
                   defender="similarity", body="jba-pgd", queries=300)
    env = make_env(sc)
    names = [k.name for k in env.knobs("attacker_0")]
    assert {"queries", "eps_scale", "accounts", "rotate_every", "blind_level"} <= set(names)
    a = play_episode(make_env(sc), seed=5)
    b = play_episode(make_env(sc), seed=5)
    assert a["ledger_digest"] == b["ledger_digest"]
    assert a["accounts_created"] >= 3


@pytest.mark.parametrize("tactics,where", [
    ({"teleport": {}}, "attackers.0.tactics.teleport: unknown tactic"),
    ({"sybil": {"accounts": 0}}, "attackers.0.tactics.sybil: accounts must be >= 1"),
    ({"sybil": {"acounts": 2}}, "attackers.0.tactics.sybil.acounts: unknown parameter"),
    ({"blinding": {"transform": "blur"}}, "attackers.0.tactics.blinding: unknown transform 'blur'"),
    ({"blinding": {"transform": "word-dropout"}}, "attackers.0.tactics.blinding.transform: 'word-dropout' is for text"),
    ({"filter": {"detector": "vae"}}, "attackers.0.tactics.filter: unknown detector 'vae'"),
    ({"filter": {"data": "guardian"}}, "attackers.0.tactics.filter.data: 'guardian' is a text dataset"),
    ({"filter": {"data": "mnist"}}, "attackers.0.tactics.filter.data: 'mnist' samples .*are not valid queries"),
    ({"blinding": {"transform": "autoencoder", "data": "mnist"}}, "attackers.0.tactics.blinding.data: 'mnist' images"),
])
def test_bad_tactics_are_named_by_their_path(tactics: dict, where: str) -> None:
    with pytest.raises(ScenarioError, match=where.replace(".", r"\.").replace(r"\.*", ".*").replace("(", r"\(")):
        load_scenario(_scenario(tactics))


@pytest.mark.parametrize("body", sorted(__import__("extractgym.agents", fromlist=["ATTACKERS"]).ATTACKERS))
def test_tactics_compose_with_every_attacker(body: str) -> None:
    """Blinding over rotating Sybil accounts, on each attacker: the budget is spent exactly, never exceeded."""
    from extractgym.agents import ATTACKERS
    from extractgym.agents.registry import parameters

    params = {k: v for k, v in {"pool": "digits", "queries_per_round": 60}.items() if k in parameters(ATTACKERS[body])}
    sc = _scenario({"sybil": {"accounts": 2, "rotate_every": 40}, "blinding": {"transform": "scale"}},
                   body=body, queries=120, budget={"queries": 120, "money": 100.0, "accounts": 5})
    sc["attackers"][0]["params"] = params
    env = make_env(sc)
    s = play_episode(env)
    assert s["queries"] == 120
    assert 3 <= s["accounts_created"] <= 5
    stats = env.game.attackers["attacker_0"].seat.stats()
    assert stats["blinded"] >= 120 and stats["sybil_opened"] == s["accounts_created"]


def test_dfme_gradient_queries_bypass_blinding_and_filtering() -> None:
    """Seed 003 §VII: tactics apply to DFME's labelling queries; the finite-difference points go out untouched."""
    sc = _scenario({"filter": {"detector": "prada", "threshold": 1e9}}, body="dfme", queries=3000, rounds=3)
    sc["attackers"][0]["params"] = {"queries_per_round": 1000}
    env = make_env(sc)
    s = play_episode(env)
    seat = env.game.attackers["attacker_0"].seat
    body = seat.body
    steps = body.generator_step_queries
    # a filter that withholds everything it can stops each round's substitute training early; the gradient
    # points of every generator step still all went out
    assert len(steps) == 3 and all(q == body.batch_size * (body.m + 1) for q in steps)
    assert seat.stats()["filter_withheld"] > 0  # ... while the substitute-training batches were filtered
    assert body.query_counts["student"] < seat.stats()["filter_considered"]
    assert s["queries"] == body.query_counts["gradient"] + body.query_counts["student"]
