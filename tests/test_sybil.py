"""Sybil campaigns at scale (issue 26): identities with fingerprints and their costs, request times, bookkeeping that
never walks every account, the linking defenders, the Sybil tactic's hygiene knobs, and the scenario.

The measured figures (what each choice buys, paired over seeds; the API's cost from 10 to 10^5 accounts; the scale
episode) are in ``benchmarks/bench_sybil.py`` and ``benchmarks/bench_accounts.py``; docs/sybil.md has them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from extractgym.agents import DEFENDERS
from extractgym.agents.seats.channel import Channel
from extractgym.agents.tactics.sybil import Sybil
from extractgym.envs.api import Budget, Client, DefenderView, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import InvalidQuery, QueryRefused
from extractgym.envs.identity import BenignMetadata, Fingerprint, Identities, IdentityRequest
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.base import InputSpec
from extractgym.victims.datasets import get_dataset

FRESH = IdentityRequest(payment=None, network=None, client="unique")


class Stub:
    """A softmax of a fixed linear map of an 8x8 digit's pixels."""

    name, n_classes = "stub", 10

    def __init__(self) -> None:
        self.input_spec = InputSpec(kind="image", shape=(1, 8, 8))
        self.w = np.random.default_rng(0).normal(size=(64, 10))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64).reshape(len(x), -1) @ self.w
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


def make_api(defences=(), identities: bool = True, seed: int = 0, **terms) -> PredictionAPI:
    terms = {"instrument_cost": 1.0, "proxy_cost": 0.5, "client_cost": 0.25, **terms}
    api = PredictionAPI([Service(ServiceConfig("api", **terms), Stub())], [DEFENDERS[d](**p) for d, p in defences],
                        Identities(np.random.default_rng(seed)) if identities else None)
    for i, d in enumerate(api.defences):
        d.bind(DefenderView(api), np.random.default_rng(i))
    return api


def digits(n: int, seed: int = 0, dataset: str = "digits") -> np.ndarray:
    x, _ = get_dataset(dataset).split("pool")
    return x[np.random.default_rng(seed).integers(len(x), size=n)]


def end_round(api: PredictionAPI) -> None:
    for d, knobs in zip(api.defences, api.defence_knobs, strict=True):
        d.end_round(api.round, knobs)
    api.sweep()
    api.start_round(api.round + 1)


# -- identities ---------------------------------------------------------------------------------------------------
def test_fresh_resources_are_charged_and_reuse_is_free_but_shares_the_tokens() -> None:
    api = make_api(account_price=0.1)
    api.register_owner("a", Budget(money=10.0))
    first = api.open_account("a", "api", IdentityRequest(payment=0, network=0, client="tool"))  # buys both
    assert api.wallets["a"].money == pytest.approx(0.1 + 1.0 + 0.5)
    second = api.open_account("a", "api", IdentityRequest(payment=0, network=0, client="tool"))  # reuses both
    assert api.wallets["a"].money == pytest.approx(1.7)
    third = api.open_account("a", "api", FRESH)
    assert api.wallets["a"].money == pytest.approx(1.7 + 0.1 + 1.0 + 0.5 + 0.25)
    fp = [api.identities.of[a.id] for a in (first, second, third)]
    assert fp[0] == fp[1]  # same instrument, exit, tool and zone: linkable
    assert {fp[2].payment, fp[2].network, fp[2].client}.isdisjoint({fp[0].payment, fp[0].network, fp[0].client})
    assert api.identities.held("a") == {"payment": 2, "network": 2}
    entry = api.ledger[len(api.ledger) - 1]
    assert entry.kind == "open" and Fingerprint.decode(entry.note) == fp[2]  # the books record it


def test_an_owner_that_cannot_pay_for_fresh_fingerprints_is_refused_and_nothing_changes() -> None:
    api = make_api()
    api.register_owner("a", Budget(money=1.2))
    assert not api.can_open("a", "api", identity=FRESH)
    assert api.can_open("a", "api", identity=IdentityRequest(payment=0, network=None, client="tool")) is False
    with pytest.raises(QueryRefused, match="money-budget"):
        api.open_account("a", "api", FRESH)
    assert len(api.ledger) == 0 and api.wallets["a"].money == 0.0 and not api.identities.of


def test_owners_tools_differ_and_tokens_do_not_name_the_owner() -> None:
    api = make_api()
    for owner in ("attacker_0", "attacker_1"):
        api.register_owner(owner, Budget())
        api.open_account(owner, "api")
    a, b = (api.identities.of[f"api/{o}/0"] for o in ("attacker_0", "attacker_1"))
    assert a.client != b.client and a.payment != b.payment
    assert not any("attacker" in t for t in (a.payment, a.network, a.client))


def test_replay_rebuilds_the_fingerprints_and_holdings() -> None:
    api = make_api()
    api.register_owner("a", Budget())
    for req in (FRESH, IdentityRequest(payment=0, network=1, client="common"), IdentityRequest()):
        api.open_account("a", "api", req)
    copy = make_api(seed=1)
    copy.register_owner("a", Budget())
    copy.replay(api.ledger)
    assert copy.identities.of == api.identities.of
    assert copy.identities.held("a") == api.identities.held("a")
    assert copy.wallets["a"].money == pytest.approx(api.wallets["a"].money)


def test_without_identities_no_fingerprint_and_an_identity_request_is_an_error() -> None:
    api = make_api(identities=False)
    api.register_owner("a", Budget())
    acc = api.open_account("a", "api")
    assert DefenderView(api).identity(acc.id) is None and api.ledger[0].note == ""
    with pytest.raises(ValueError, match="identities"):
        api.open_account("a", "api", FRESH)


def test_defenders_see_fingerprints_and_request_times_and_bad_times_are_refused_uncharged() -> None:
    api = make_api(price_per_query=0.01)
    api.register_owner("a", Budget())
    acc = api.open_account("a", "api")
    view = DefenderView(api)
    assert view.identity(acc.id) == api.identities.of[acc.id]
    api.query("a", acc.id, digits(2), at=0.25)
    assert view.now == 0.25
    before = (len(api.ledger), api.wallets["a"].money)
    for bad in (1.0, -0.1, float("nan"), "noon", True):
        with pytest.raises(InvalidQuery, match="time of day"):
            api.query("a", acc.id, digits(2), at=bad)
    assert (len(api.ledger), api.wallets["a"].money) == before
    api.query("a", acc.id, digits(2))
    assert view.now is None


def test_benign_metadata_shares_networks_and_cards_as_customers_do_and_costs_them_nothing() -> None:
    requests = BenignMetadata(corporate_share=0.5, corporate_size=20, shared_payment=0.1).requests(
        400, np.random.default_rng(0))
    api = make_api(account_price=0.0)
    api.register_owner("benign", Budget())
    for req in requests:
        api.open_account("benign", "api", req)
    fps = list(api.identities.of.values())
    networks = np.unique([f.network for f in fps], return_counts=True)[1]
    payments = np.unique([f.payment for f in fps], return_counts=True)[1]
    assert networks.max() >= 10 and (networks == 1).sum() > 100  # corporate NATs beside home connections
    assert payments.max() <= 4 and (payments == 1).mean() > 0.8  # family cards, mostly one's own
    assert api.wallets["benign"].money == 0.0  # their own cards and connections
    with pytest.raises(ValueError, match="corporate_share"):
        BenignMetadata(corporate_share=1.5)


# -- scale: nothing on the request or round path walks every account ----------------------------------------------
class NoWalk(dict):
    """An accounts table that fails the test if anything iterates over it."""

    def _walk(self, *a, **k):
        raise AssertionError("walked every account")

    values = items = keys = __iter__ = _walk


def test_queries_rounds_and_openings_do_not_walk_every_account() -> None:
    api = make_api([("metadata-linker", {}), ("timing-linker", {}), ("content-linker", {})], rate_limit=5,
                   ban_delay=1)
    api.register_owner("a", Budget())
    client = Client(api, "a")
    ids = [api.open_account("a", "api", FRESH).id for _ in range(50)]
    api.accounts = NoWalk(api.accounts)
    for r in range(3):
        for k, a in enumerate(ids[r:], start=r):  # the accounts not banned yet
            client.query(client.account(a), digits(2, k), at=(k % 7) / 7)
            assert client.affordable(client.account(a), 10).limit == "rate-limit"
        api.flag(ids[r], "test")  # a delayed ban falls due at the next round's start
        end_round(api)
        client.open_account("api", FRESH)
    assert all(dict.__getitem__(api.accounts, a).round_queries == 0 for a in ids)  # the new round starts at zero
    assert [api.accounts[a].banned for a in ids[:3]] == [True, True, True]


# -- linkers --------------------------------------------------------------------------------------------------------
def test_metadata_linker_bans_accounts_sharing_a_card_and_not_small_legitimate_groups() -> None:
    api = make_api([("metadata-linker", {"min_cluster": 5})])
    api.register_owner("farm", Budget())
    api.register_owner("family", Budget())
    farm = [api.open_account("farm", "api", IdentityRequest(payment=0, network=None, client="unique")).id
            for _ in range(8)]
    family = [api.open_account("family", "api", IdentityRequest(payment=0, network=None, client="unique")).id
              for _ in range(3)]
    loners = [api.open_account("family", "api", FRESH).id for _ in range(5)]
    for a in farm[:3] + family + loners:
        api.query(api.accounts[a].owner, a, digits(1))
    end_round(api)  # accounts that never sent are linked after the round and banned with their cluster
    assert all(api.accounts[a].banned for a in farm)
    assert not any(api.accounts[a].banned for a in family + loners)
    late = api.open_account("farm", "api", IdentityRequest(payment=0, network=None, client="unique"))
    r = api.query("farm", late.id, digits(3))  # joins the banned cluster: banned at its first request
    assert r.n_answered == 0 and r.banned
    linker = api.defences[0]
    assert set(linker.acted) == set(farm) | {late.id} and len(linker.clusters) == 1


def test_metadata_linker_does_not_read_owners() -> None:
    """The same fingerprints give the same clusters whoever owns the accounts."""
    outcomes = []
    for owners in (["farm"] * 6 + ["x"] * 6, [f"o{i}" for i in range(12)]):
        api = make_api([("metadata-linker", {"min_cluster": 4})])
        for o in dict.fromkeys(owners):
            api.register_owner(o, Budget())
        ids = []
        for i, o in enumerate(owners):  # pairs of shared exits and clients, made explicit
            fp = Fingerprint(f"pay-{i}", f"net-{i // 6}", f"cli-{i // 6}", 3)
            api._record(round=0, kind="open", owner=o, account=f"acc{i}", service="api", note=fp.encode())
            ids.append(f"acc{i}")
        for a in ids[::2]:  # half of them send; the others are linked from the books
            api.query(api.accounts[a].owner, a, digits(1))
        end_round(api)
        outcomes.append([api.accounts[a].banned for a in ids])
    assert outcomes[0] == outcomes[1] == [True] * 12


def test_timing_linker_links_synchronised_accounts_not_customers_at_their_own_hours() -> None:
    api = make_api([("timing-linker", {"min_cluster": 10})])
    api.register_owner("farm", Budget())
    api.register_owner("benign", Budget())
    farm = [api.open_account("farm", "api", FRESH).id for _ in range(30)]
    people = [api.open_account("benign", "api", FRESH).id for _ in range(200)]
    rng = np.random.default_rng(0)
    for _ in range(3):
        for a in farm:  # the batch job: every account within the same ten minutes
            if not api.accounts[a].banned:
                api.query("farm", a, digits(2), at=0.25 + rng.random() * 10 / 1440)
        for a in people:
            api.query("benign", a, digits(2), at=float(rng.random()))
        end_round(api)
    assert sum(api.accounts[a].banned for a in farm) == 30
    assert not any(api.accounts[a].banned for a in people)


def test_content_linker_links_jointly_shifted_accounts_and_spares_customers() -> None:
    api = make_api([("content-linker", {"min_cluster": 10})])
    api.register_owner("farm", Budget())
    api.register_owner("benign", Budget())
    farm = [api.open_account("farm", "api", FRESH).id for _ in range(40)]
    people = [api.open_account("benign", "api", FRESH).id for _ in range(200)]
    for r in range(2):
        for k, a in enumerate(farm):  # the campaign's own data: MNIST at 8x8
            if not api.accounts[a].banned:
                api.query("farm", a, digits(10, 1000 * r + k, "mnist8x8"))
        for k, a in enumerate(people):
            api.query("benign", a, digits(10, 5000 + 1000 * r + k))
        end_round(api)
    assert sum(api.accounts[a].banned for a in farm) >= 36
    assert not any(api.accounts[a].banned for a in people)


@pytest.mark.parametrize("action", ["throttle", "poison"])
def test_cluster_actions_other_than_a_ban(action: str) -> None:
    api = make_api([("metadata-linker", {"min_cluster": 3, "action": action})])
    api.register_owner("farm", Budget())
    ids = [api.open_account("farm", "api").id for _ in range(3)]  # the default: one card, one exit, one tool
    x = digits(4)  # linked at the first request (with the accounts opened before it, from the books)
    r = api.query("farm", ids[2], x, audit=True)
    assert not r.banned and not api.accounts[ids[2]].banned
    if action == "throttle":
        assert r.n_answered == 0 and r.rejected == 4 and api.ledger[len(api.ledger) - 1].kind == "reject"
    else:
        assert r.n_answered == 4
        assert (r.outputs.argmax(1) != r.raw.argmax(1)).all()  # every answer names another class


# -- the Sybil tactic's hygiene ------------------------------------------------------------------------------------
class Body:
    """Sends ``n`` pool digits a round through its channel."""

    def __init__(self, channel: Channel, n: int) -> None:
        self.channel, self.n = channel, n

    def play(self) -> int:
        idx, _ = self.channel.send("api", digits(self.n, self.channel.round, "mnist8x8"))
        return len(idx)


def campaign(knobs: dict, rounds: int = 2, n: int = 200, **params) -> tuple[PredictionAPI, Sybil, list[int]]:
    api = make_api(account_price=0.1, price_per_query=0.001)
    api.register_owner("attacker_0", Budget(money=1000.0))
    sybil = Sybil(accounts=10, rotate_every=20, **params)
    channel = Channel([sybil])
    channel.bind(Client(api, "attacker_0"), np.random.default_rng(0))
    values = {**{k.name: k.choices[k.default] for k in channel.knobs}, **knobs}
    answered = []
    for r in range(rounds):
        api.start_round(r)
        channel.begin_round(values)
        answered.append(Body(channel, n).play())
    return api, sybil, answered


def test_hygiene_knobs_appear_only_when_asked_for() -> None:
    assert [k.name for k in Sybil(accounts=1).knobs] == ["accounts", "rotate_every"]
    names = [k.name for k in Sybil(payment_reuse=10, proxy_reuse=1, pacing="human", cover=0.5).knobs]
    assert names == ["accounts", "rotate_every", "payment_reuse", "proxy_reuse", "pacing", "cover"]
    with pytest.raises(ValueError, match="cover"):
        Sybil(cover=1.0)


@pytest.mark.parametrize("reuse", [1, 5, 1000])
def test_payment_reuse_buys_one_instrument_per_so_many_accounts(reuse: int) -> None:
    api, sybil, answered = campaign({"payment_reuse": reuse, "proxy_reuse": 1000}, payment_reuse=reuse,
                                    proxy_reuse=1000)
    opened = sybil.opened
    assert answered == [200, 200] and opened == 20
    assert api.identities.held("attacker_0") == {"payment": math.ceil(opened / reuse), "network": 1}
    spent_on_cards = math.ceil(opened / reuse) * 1.0
    assert api.wallets["attacker_0"].money == pytest.approx(opened * 0.1 + spent_on_cards + 0.5 + 400 * 0.001)


def test_human_pacing_caps_each_account_and_follows_its_zone_while_burst_is_synchronised() -> None:
    times: dict[str, list[float]] = {}
    for pacing in ("burst", "human"):
        api, sybil, answered = campaign({"pacing": pacing}, pacing=pacing, human_queries=5)
        per_round = {}
        for e in api.ledger:
            if e.kind == "query":
                per_round[(e.account, e.round)] = per_round.get((e.account, e.round), 0) + e.n
        if pacing == "human":
            assert max(per_round.values()) <= 5 and sybil.opened == 10 and answered == [50, 50]
        else:
            assert answered == [200, 200]
        times[pacing] = sybil.times.values()
    burst = np.array(list(times["burst"]))
    assert ((burst >= 0.25) & (burst < 0.25 + 10 / 1440)).all()
    assert np.ptp(np.array(list(times["human"]))) > 0.1


def test_cover_traffic_is_paid_for_and_never_reaches_the_body() -> None:
    api, sybil, answered = campaign({"cover": 0.5}, cover=0.5)
    queries = sum(e.n for e in api.ledger if e.kind == "query")
    assert answered == [200, 200] and sybil.cover_sent == 400 and queries == 800


@pytest.mark.parametrize(("identities", "path"), [({"corporate_share": 2.0}, "identities: corporate_share"),
                                                 ({"corporate_sise": 10}, "identities.corporate_sise"),
                                                 ({"common_clients": 0}, "identities.common_clients"),
                                                 ({"spread": float("nan")}, "identities.spread")])
def test_bad_identities_are_refused_naming_the_field(identities: dict, path: str) -> None:
    with pytest.raises(ScenarioError, match=path):
        load_scenario("sybil-campaign", identities=identities)


def test_hygiene_needs_a_scenario_that_keeps_identities() -> None:
    with pytest.raises(ScenarioError, match="identities"):
        load_scenario("sybil-campaign", identities=None)
    data = load_scenario("rl-sybil").model_dump()
    data["attackers"][0]["tactics"]["sybil"]["pacing"] = "burst"
    with pytest.raises(ScenarioError, match="attackers.0.tactics.sybil.*identities"):
        load_scenario(data)


# -- the scenario --------------------------------------------------------------------------------------------------
def test_sybil_campaign_reports_false_positives_per_customer_and_replays_from_its_seed() -> None:
    runs = [play_episode(make_env("sybil-campaign", rounds=2, seed=3), seed=3) for _ in range(2)]
    assert runs[0]["ledger_digest"] == runs[1]["ledger_digest"]
    s = runs[0]
    assert {"benign_customers_hit", "benign_accounts_throttled", "benign_hit_rate", "linking"} <= set(s)
    assert set(s["linking"]) == {"defender_0", "defender_1", "defender_2"}
    assert s["accounts_banned"] > 0.5 * s["accounts_created"]  # the preset reuses its fingerprints: linked
    assert s["benign_customers_hit"] <= 0.01 * s["benign_accounts"]


def test_recycle_sends_augmented_passes_once_the_pool_is_exhausted() -> None:
    from extractgym.agents.attackers.random_sampling import RandomAttacker

    api = make_api(identities=False)
    api.register_owner("a", Budget())
    pool, _ = get_dataset("digits").split("pool")
    batches = []
    for recycle in (None, 0.05, 0.05):
        body = RandomAttacker(pool="digits", recycle=recycle)
        channel = Channel()
        channel.bind(Client(api, "a"), None)
        body.bind(channel, np.random.default_rng(0))
        batches.append([body.next_batch(400) for _ in range(3)])
    plain, a, b = batches
    assert [len(x) for x in plain] == [400, 139, 0]  # as published: the pool runs out
    assert [len(x) for x in a] == [400, 400, 400]
    np.testing.assert_array_equal(np.concatenate(a), np.concatenate(b))  # the seat's generator decides
    second = a[2]
    assert second.min() >= 0.0 and second.max() <= 1.0
    flat = pool.reshape(len(pool), -1)
    nearest = ((second.reshape(len(second), -1)[:, None, :] - flat[None]) ** 2).sum(-1).min(1)
    assert (nearest > 0).all()  # new inputs near the pool's, not copies
