"""Budget invariants of the prediction API, as hypothesis properties over random sequences of operations.

A small reference model predicts, for every operation, whether the API must serve or refuse it (and why) and
what it must charge; after every operation the wallets must stay within their budgets and agree with the
append-only ledger.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extractgym.agents.base import AttackerBase
from extractgym.agents.seats.seat import Seat
from extractgym.envs.api import Budget, Client, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import QueryRefused
from extractgym.victims.base import InputSpec

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class FakeVictim:
    """Softmax of a fixed linear map of 4 features: fast and deterministic."""

    def __init__(self, name: str = "fake", n_classes: int = 3) -> None:
        self.name, self.n_classes = name, n_classes
        self.input_spec = InputSpec(kind="image", shape=(4,))
        self.w = np.random.default_rng(0).normal(size=(4, n_classes))
        self.calls = 0

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        z = np.asarray(x, dtype=np.float64) @ self.w
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


class FirstK:
    """A defence that serves the first ``k`` queries of each account and bans it on the next one."""

    knobs = ()

    def __init__(self, k: int) -> None:
        self.k = k

    def bind(self, view, rng) -> None:
        pass

    def screen(self, account, x, knobs) -> int:
        return max(0, min(len(x), self.k - account.queries))

    def shape(self, probs, account, x, knobs):
        return probs

    def end_round(self, round_index: int, knobs) -> None:
        pass


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 4)).astype(np.float32)


# -- strategies ----------------------------------------------------------------------------------
def opt(s):
    return st.none() | s


EDGES = ("queries", "money", "rate", "free")
money = st.floats(0.0, 5.0, allow_nan=False, allow_infinity=False)
prices = st.sampled_from([0.0, 0.01, 0.1, 0.25, 1.0]) | money
budgets = st.builds(Budget, queries=opt(st.integers(0, 120)), money=opt(st.floats(0.0, 20.0)),
                    accounts=opt(st.integers(0, 4)))
configs = st.builds(ServiceConfig, name=st.just("svc"), price_per_query=prices, account_price=prices,
                    free_quota=st.integers(0, 30), rate_limit=opt(st.integers(1, 40)))
# one operation: (kind, owner index, account pick, batch size, edge, delta); "edge" requests are sized to land
# just below, on or just above one of the account's limits (query budget, money, rate limit, free quota)
ops = st.lists(st.tuples(st.sampled_from(["open", "open", "query", "query", "edge", "edge", "edge", "round", "ban"]),
                         st.integers(0, 1), st.integers(0, 9), st.integers(1, 30), st.sampled_from(EDGES),
                         st.integers(-1, 1)), min_size=8, max_size=50)


# -- the reference model -------------------------------------------------------------------------
def edge_size(api: PredictionAPI, acc, edge: str, delta: int) -> int:
    """The number of queries that just fits ``edge`` (then ``delta`` more), at least 1."""
    cfg, w = api.services[acc.service].config, api.wallets[acc.owner]
    if edge == "queries":
        room = w.left("queries")
    elif edge == "money":
        room = acc.free_left + (w.left("money") // cfg.price_per_query if cfg.price_per_query else math.inf)
    elif edge == "rate":
        room = cfg.rate_limit - acc.round_queries if cfg.rate_limit is not None else math.inf
    else:
        room = acc.free_left
    return int(max(1, min(room, 200) + delta))


def expected_open(api: PredictionAPI, owner: str) -> str | None:
    """The refusal reason the API must give for opening an account, or None if it must open one."""
    w, price = api.wallets[owner], api.services["svc"].config.account_price
    if w.budget.accounts is not None and w.accounts + 1 > w.budget.accounts:
        return "account-budget"
    if w.left("money") < price - 1e-12:
        return "money-budget"
    return None


def expected_query(api: PredictionAPI, acc, n: int) -> tuple[str | None, float]:
    """(refusal reason or None, charge) for ``n`` queries on ``acc`` with no defences."""
    cfg, w = api.services[acc.service].config, api.wallets[acc.owner]
    charge = max(0, n - acc.free_left) * cfg.price_per_query
    if acc.banned:
        return "banned", 0.0
    if cfg.rate_limit is not None and acc.round_queries + n > cfg.rate_limit:
        return "rate-limit", 0.0
    if w.budget.queries is not None and w.queries + n > w.budget.queries:
        return "query-budget", 0.0
    if w.left("money") < charge - 1e-12:
        return "money-budget", 0.0
    return None, charge


def snapshot(api: PredictionAPI):
    return ({o: dataclasses.replace(w) for o, w in api.wallets.items()},
            {a: dataclasses.replace(acc) for a, acc in api.accounts.items()}, len(api.ledger))


def check_invariants(api: PredictionAPI, history: list) -> None:
    for owner, w in api.wallets.items():
        b = w.budget
        assert b.queries is None or w.queries <= b.queries
        assert b.money is None or w.money <= b.money + 1e-9
        assert b.accounts is None or w.accounts <= b.accounts
        mine = [e for e in api.ledger if e.owner == owner]
        assert math.isclose(sum(e.charge for e in mine), w.money, rel_tol=1e-12, abs_tol=1e-9)
        assert sum(e.n for e in mine if e.kind == "query") == w.queries
        assert sum(e.kind == "open" for e in mine) == w.accounts
        assert all(e.charge >= 0 for e in mine)
    # append-only: everything seen before is still there, unchanged, in order
    assert len(api.ledger) >= len(history)
    assert [api.ledger[i] for i in range(len(history))] == history
    assert [e.seq for e in api.ledger] == list(range(len(api.ledger)))
    history[:] = list(api.ledger)


@SETTINGS
@given(budget_a=budgets, budget_b=budgets, config=configs, ops=ops)
def test_random_operations_never_exceed_budgets(budget_a, budget_b, config, ops):
    api = PredictionAPI([Service(config, FakeVictim())])
    owners = ("a", "b")
    api.register_owner("a", budget_a)
    api.register_owner("b", budget_b)
    history: list = []
    round_index = 0
    for op in ops:
        kind = op[0]
        before_wallets, before_accounts, before_len = snapshot(api)
        if kind == "open":
            owner = owners[op[1]]
            reason = expected_open(api, owner)
            if reason is None:
                acc = api.open_account(owner, "svc")
                assert acc.free_left == config.free_quota and not acc.banned
                assert api.wallets[owner].money == before_wallets[owner].money + config.account_price
                assert api.ledger[-1].kind == "open" and api.ledger[-1].account == acc.id
            else:
                with pytest.raises(QueryRefused) as e:
                    api.open_account(owner, "svc")
                assert e.value.reason == reason
        elif kind in ("query", "edge"):
            owner, pick = owners[op[1]], op[2]
            mine = [a for a in api.accounts.values() if a.owner == owner]
            if not mine:
                continue
            acc = mine[pick % len(mine)]
            n = op[3] if kind == "query" else edge_size(api, acc, op[4], op[5])
            reason, charge = expected_query(api, acc, n)
            free_before, served_before = acc.free_left, acc.queries
            if reason is None:
                r = api.query(owner, acc.id, batch(n, seed=len(api.ledger)))
                assert r.n_answered == n and not r.banned and r.outputs.shape == (n, 3)
                assert r.charge == charge
                # the first free_quota queries of an account cost nothing
                free_used = min(n, free_before)
                assert r.charge == (n - free_used) * config.price_per_query
                if served_before + n <= config.free_quota:
                    assert r.charge == 0
                assert acc.free_left == max(0, free_before - n)
                assert api.ledger[-1].kind == "query" and api.ledger[-1].n == n and api.ledger[-1].charge == charge
            else:
                with pytest.raises(QueryRefused) as e:
                    api.query(owner, acc.id, batch(n))
                assert e.value.reason == reason
        elif kind == "ban":
            ids = list(api.accounts)
            if not ids:
                continue
            acc = api.accounts[ids[op[2] % len(ids)]]
            api.ban(acc.id, note="test")
            assert acc.banned
            with pytest.raises(QueryRefused) as e:
                api.query(acc.owner, acc.id, batch(1))
            assert e.value.reason == "banned"
        else:
            round_index += 1
            api.start_round(round_index)
            assert all(a.round_queries == 0 for a in api.accounts.values())
        after_wallets, after_accounts, after_len = snapshot(api)
        if kind != "round" and kind != "ban" and after_len == before_len:
            # a refused request changes neither the wallets, the accounts nor the ledger
            assert after_wallets == before_wallets
            assert after_accounts == before_accounts
        check_invariants(api, history)


def test_ledger_is_append_only():
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=0.5), FakeVictim())])
    api.register_owner("a")
    acc = api.open_account("a", "svc")
    api.query("a", acc.id, batch(3))
    first = list(api.ledger)
    api.query("a", acc.id, batch(2))
    api.ban(acc.id)
    assert list(api.ledger)[:2] == first and len(api.ledger) == 4
    with pytest.raises(TypeError):
        del api.ledger[0]
    with pytest.raises(TypeError):
        api.ledger[0] = first[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        api.ledger[0].charge = 0.0
    for name in ("pop", "remove", "clear", "insert", "extend", "__delitem__", "__setitem__"):
        assert not hasattr(api.ledger, name), name
    # iterating hands out a snapshot: changing it changes nothing
    snapshot_ = list(api.ledger)
    snapshot_.clear()
    assert len(api.ledger) == 4
    # banning twice logs one ban
    api.ban(acc.id)
    assert sum(e.kind == "ban" for e in api.ledger) == 1


def test_banned_account_gets_nothing():
    victim = FakeVictim()
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=0.1), victim)])
    api.register_owner("a", Budget(money=100.0))
    acc = api.open_account("a", "svc")
    api.ban(acc.id)
    calls, wallet, n = victim.calls, dataclasses.replace(api.wallets["a"]), len(api.ledger)
    for _ in range(3):
        with pytest.raises(QueryRefused) as e:
            api.query("a", acc.id, batch(5))
        assert e.value.reason == "banned"
    assert victim.calls == calls and api.wallets["a"] == wallet and len(api.ledger) == n
    assert Client(api, "a").accounts() == []  # the owner sees no live account
    assert len(Client(api, "a").accounts(active=False)) == 1


@pytest.mark.parametrize("free_quota", [0, 1, 7])
def test_free_quota_per_account(free_quota):
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=0.5, free_quota=free_quota), FakeVictim())])
    api.register_owner("a")
    for _ in range(2):  # every account gets its own free quota
        acc = api.open_account("a", "svc")
        charges = [api.query("a", acc.id, batch(1)).charge for _ in range(free_quota + 3)]
        assert charges == [0.0] * free_quota + [0.5] * 3
    acc = api.open_account("a", "svc")
    r = api.query("a", acc.id, batch(free_quota + 4))  # one request straddling the quota
    assert r.charge == pytest.approx(4 * 0.5)


def test_rate_limit_refuses_whole_request_and_resets_each_round():
    limit = 10
    api = PredictionAPI([Service(ServiceConfig("svc", rate_limit=limit), FakeVictim())])
    api.register_owner("a")
    acc = api.open_account("a", "svc")
    other = api.open_account("a", "svc")
    with pytest.raises(QueryRefused) as e:  # one request above the limit: refused, not truncated
        api.query("a", acc.id, batch(limit + 1))
    assert e.value.reason == "rate-limit"
    assert api.wallets["a"].queries == 0 and api.accounts[acc.id].round_queries == 0
    assert api.query("a", acc.id, batch(limit - 2)).n_answered == limit - 2
    n = len(api.ledger)
    with pytest.raises(QueryRefused) as e:
        api.query("a", acc.id, batch(3))
    assert e.value.reason == "rate-limit" and len(api.ledger) == n and api.wallets["a"].queries == limit - 2
    assert api.query("a", acc.id, batch(2)).n_answered == 2  # exactly up to the limit is fine
    assert api.query("a", other.id, batch(limit)).n_answered == limit  # the limit is per account
    api.start_round(1)
    assert api.query("a", acc.id, batch(limit)).n_answered == limit
    with pytest.raises(QueryRefused):
        api.query("a", acc.id, batch(1))


@SETTINGS
@given(k=st.integers(0, 12), n=st.integers(1, 40), price=st.sampled_from([0.0, 0.1, 1.0]),
       free_quota=st.integers(0, 5))
def test_screening_defence_bans_and_serves_only_accepted(k, n, price, free_quota):
    victim = FakeVictim()
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=price, free_quota=free_quota), victim)],
                        [FirstK(k)])
    api.register_owner("a")
    acc = api.open_account("a", "svc")
    x = batch(n)
    r = api.query("a", acc.id, x)
    served = min(k, n)
    assert r.n_answered == served and len(r.outputs) == served
    np.testing.assert_allclose(r.outputs, victim.predict_proba(x[:served]))
    assert r.charge == pytest.approx(max(0, served - free_quota) * price)
    assert api.wallets["a"].queries == served
    assert r.banned == (k < n) and api.accounts[acc.id].banned == (k < n)
    kinds = [e.kind for e in api.ledger]
    assert kinds == ["open", "query"] + (["ban"] if k < n else [])
    assert api.ledger[1].n == served
    if k < n:
        with pytest.raises(QueryRefused) as e:
            api.query("a", acc.id, batch(1))
        assert e.value.reason == "banned"


class Sender(AttackerBase):
    """An attacker body with nothing but :meth:`AttackerBase.send`."""

    def play_round(self, knobs, round_index):
        pass


@SETTINGS
@given(k=st.integers(1, 10), n=st.integers(1, 60), accounts=opt(st.integers(0, 5)),
       queries=opt(st.integers(0, 60)), account_price=st.sampled_from([0.0, 1.0]),
       money=opt(st.floats(0.0, 6.0)), calls=st.integers(1, 3))
def test_send_reopens_accounts_within_budget(k, n, accounts, queries, account_price, money, calls):
    victim = FakeVictim()
    api = PredictionAPI([Service(ServiceConfig("svc", account_price=account_price), victim)], [FirstK(k)])
    budget = Budget(queries=queries, money=money, accounts=accounts)
    api.register_owner("att", budget)
    body = Sender()
    Seat(body).bind(Client(api, "att"), np.random.default_rng(0))
    wallet = api.wallets["att"]
    for c in range(calls):
        x = batch(n, seed=c)
        before_q, before_acc = wallet.queries, wallet.accounts
        idx, out = body.send("svc", x)
        # every account serves k queries before its ban; the attacker opens new ones while it may afford them
        afford_accounts = math.inf if accounts is None else accounts
        if money is not None and account_price > 0:  # the API allows 1e-12 of float slack
            afford_accounts = min(afford_accounts, int((money + 1e-12) // account_price))
        afford_queries = math.inf if queries is None else queries
        expected_total = min(afford_queries, afford_accounts * k)
        answered = wallet.queries - before_q
        assert answered == min(n, expected_total - before_q)
        assert len(idx) == len(out) == answered
        np.testing.assert_array_equal(idx, np.arange(answered))
        if answered:
            np.testing.assert_allclose(out, victim.predict_proba(x[:answered]))
        assert wallet.accounts >= before_acc
        assert accounts is None or wallet.accounts <= accounts
        assert money is None or wallet.money <= money + 1e-9
        assert queries is None or wallet.queries <= queries
        # every account but possibly the last is banned, after serving exactly k queries
        mine = [a for a in api.accounts.values() if a.owner == "att"]
        assert all(a.queries == k and a.banned for a in mine[:-1])


@SETTINGS
@given(n=st.integers(1, 60), price=st.sampled_from([0.01, 0.1, 0.3, 0.7, 1.0]) | st.floats(1e-3, 2.0),
       units=st.integers(0, 40), nudge=st.sampled_from([0.0, -1e-13, -1e-11, -1e-10, 1e-10, 1e-13]),
       free_quota=st.integers(0, 10), queries=opt(st.integers(0, 60)), unlimited=st.booleans())
def test_send_buys_all_it_can_afford(n, price, units, nudge, free_quota, queries, unlimited):
    """Money budgets a hair off a multiple of the price (float sums land there) still buy every affordable query;
    an unlimited money budget with a positive price buys everything the query budget allows."""
    money = None if unlimited else max(0.0, units * price + nudge)
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=price, free_quota=free_quota), FakeVictim())])
    api.register_owner("att", Budget(queries=queries, money=money))
    body = Sender()
    Seat(body).bind(Client(api, "att"), np.random.default_rng(0))
    idx, _ = body.send("svc", batch(n))
    m = len(idx)
    wallet = api.wallets["att"]
    cap = n if queries is None else min(n, queries)
    assert wallet.queries == m <= cap
    if money is None:
        assert m == cap
    elif m < cap:  # stopped by money: one more query would not have fitted
        assert wallet.money <= money + 1e-9
        assert (m + 1 - free_quota) * price > money - 1e-9, (m, money)


class RejectOdd:
    """A defence that rejects every odd-indexed query of a request without banning (Blacklight-style)."""

    knobs = ()

    def bind(self, view, rng) -> None:
        pass

    def screen(self, account, x, knobs):
        from extractgym.envs.api import Verdict

        return Verdict(np.arange(len(x)) % 2 == 0)

    def shape(self, probs, account, x, knobs):
        return probs

    def end_round(self, round_index: int, knobs) -> None:
        pass


@pytest.mark.parametrize("charge_rejected", [False, True])
def test_rejected_queries_are_unanswered_charged_only_if_the_service_says_and_no_ban(charge_rejected: bool) -> None:
    victim = FakeVictim()
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=0.1, charge_rejected=charge_rejected), victim)],
                        [RejectOdd()])
    api.register_owner("a", Budget(queries=100))
    acc = api.open_account("a", "svc")
    x = batch(7)
    r = api.query("a", acc.id, x)
    assert not r.banned and not api.accounts[acc.id].banned
    np.testing.assert_array_equal(r.rows, [0, 2, 4, 6])
    np.testing.assert_allclose(r.outputs, victim.predict_proba(x[[0, 2, 4, 6]]))
    assert r.rejected == 3
    billed = 7 if charge_rejected else 4
    assert r.charge == pytest.approx(0.1 * billed) and api.wallets["a"].queries == billed
    assert [e.kind for e in api.ledger] == ["open", "query", "reject"]
    # through a channel: the rejected queries are dropped, not retried on another account
    body = Sender()
    Seat(body).bind(Client(api, "a"), np.random.default_rng(0))
    idx, out = body.send("svc", batch(5, seed=1))
    np.testing.assert_array_equal(idx, [0, 2, 4])
    assert len([a for a in api.accounts.values() if a.owner == "a"]) == 1


class RejectThenBan:
    """Rejects every odd-indexed query and bans the account at the request's 4th query (Blacklight's ban_after)."""

    knobs = ()

    def bind(self, view, rng) -> None:
        pass

    def screen(self, account, x, knobs):
        from extractgym.envs.api import Verdict

        serve = (np.arange(len(x)) % 2 == 0) & (np.arange(len(x)) < 3)
        return Verdict(serve, ban=len(x) > 3)

    def shape(self, probs, account, x, knobs):
        return probs

    def end_round(self, round_index: int, knobs) -> None:
        pass


@pytest.mark.parametrize("charge_rejected", [False, True])
def test_refused_queries_are_billed_by_the_terms_also_when_the_batch_ends_in_a_ban(charge_rejected: bool) -> None:
    """A ban does not make the refused queries of its request free: with ``charge_rejected`` every query the API
    did not answer is billed and counted (issue 23: 10 of 10 accounts burned at no query cost)."""
    api = PredictionAPI([Service(ServiceConfig("svc", price_per_query=0.1, charge_rejected=charge_rejected),
                                 FakeVictim())], [RejectThenBan()])
    api.register_owner("a", Budget(queries=100))
    acc = api.open_account("a", "svc")
    r = api.query("a", acc.id, batch(8))
    assert r.banned and api.accounts[acc.id].banned
    np.testing.assert_array_equal(r.rows, [0, 2])
    billed = 8 if charge_rejected else 2
    assert r.charge == pytest.approx(0.1 * billed) and api.wallets["a"].queries == billed
    kinds = [e.kind for e in api.ledger]
    # without the term nothing is recorded for the refused rows: ledgers of every other scenario stay as they were
    assert kinds == (["open", "query", "reject", "ban"] if charge_rejected else ["open", "query", "ban"])
    # the budget is never exceeded: the gate checked the whole request before the defence saw it
    api.register_owner("b", Budget(queries=8))
    acc_b = api.open_account("b", "svc")
    api.query("b", acc_b.id, batch(8))
    assert api.wallets["b"].queries == (8 if charge_rejected else 2) <= 8


def test_the_channel_tells_a_refusal_from_an_exhausted_budget() -> None:
    api = PredictionAPI([Service(ServiceConfig("svc", charge_rejected=True), FakeVictim())], [RejectOdd()])
    api.register_owner("a", Budget(queries=12))
    body = Sender()
    Seat(body).bind(Client(api, "a"), np.random.default_rng(0))
    idx, _ = body.send("svc", batch(6))
    last = body.channel.last
    assert len(idx) == 3 and (last.answered, last.refused, last.unsent) == (3, 3, 0) and not last.exhausted
    idx, _ = body.send("svc", batch(10, seed=1))  # 6 queries left (rejections count): 3 answered, 3 refused, 4 unsent
    last = body.channel.last
    assert len(idx) == 3 and (last.refused, last.unsent) == (3, 4) and last.exhausted
    assert last.asked == last.answered + last.withheld + last.refused + last.unsent
    body.send("svc", batch(2, seed=2))
    assert body.channel.last.exhausted and body.channel.last.unsent == 2 and body.channel.last.refused == 0
