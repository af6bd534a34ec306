"""The served prediction API through FastAPI's TestClient: keys, status codes, bad requests, idempotency, the
durable books (append-only, committed before the answer, rebuilt after a failed commit and on restart) and
contest submissions."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from extractgym.cli import app as cli
from extractgym.envs.api import LedgerEntry
from extractgym.envs.errors import InvalidQuery
from extractgym.envs.validation import validate_queries
from extractgym.serve import ServerConfig, ServiceServer
from extractgym.serve.app import serve_app
from extractgym.victims.datasets import get_dataset
from extractgym.victims.snapshot import ModelSnapshot
from extractgym.victims.zoo import load_victim

ADMIN = {"X-Admin-Key": "test-admin-key"}
POOL = get_dataset("digits").split("pool")[0]
SPEC = get_dataset("digits").spec

SCENARIO: dict[str, Any] = {
    "name": "served", "description": "two digits services for the service tests", "rounds": 3,
    "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01, "account_price": 1.0,
                  "free_quota": 2},
                 {"name": "limited", "victim": "digits-cnn", "rate_limit": 5}],
    "attackers": [{"body": "random", "budget": {"queries": 100, "money": 5.0, "accounts": 3}}],
}


def make_server(tmp_path, scenario: Any = None, **kw: Any) -> ServiceServer:
    return ServiceServer(ServerConfig(scenario or SCENARIO, tmp_path / "books.db", admin_key=ADMIN["X-Admin-Key"],
                                      owner_keys={"attacker_0": "owner-key-0"}, **kw))


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> ServiceServer:
    s = make_server(tmp_path_factory.mktemp("served"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server) -> TestClient:
    return TestClient(serve_app(server), raise_server_exceptions=False)


_owners = iter(range(10**6))


def new_owner(client: TestClient, **budget: Any) -> dict[str, str]:
    """A fresh owner (own budget) and its owner-key header."""
    r = client.post("/v1/admin/owners", json={"owner": f"o{next(_owners)}", "budget": budget}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return {"X-Owner-Key": r.json()["owner_key"]}


def new_account(client: TestClient, owner: dict[str, str], service: str = "api") -> dict[str, str]:
    r = client.post("/v1/accounts", json={"service": service}, headers=owner)
    assert r.status_code == 201, r.text
    return {"X-API-Key": r.json()["api_key"]}


def predict(client: TestClient, key: dict[str, str], x: Any, service: str = "api", **headers: str):
    inputs = x.tolist() if isinstance(x, np.ndarray) else x
    return client.post(f"/v1/services/{service}/predict", json={"inputs": inputs}, headers={**key, **headers})


def books(client: TestClient) -> tuple[int, str]:
    r = client.get("/v1/admin/ledger", params={"limit": 1}, headers=ADMIN).json()
    return r["total"], r["digest"]


# -- accounts and keys ------------------------------------------------------------------------------
def test_open_account_is_charged_and_its_key_is_stored_only_as_a_hash(server, client):
    owner = new_owner(client, money=10.0)
    r = client.post("/v1/accounts", json={"service": "api"}, headers=owner)
    assert r.status_code == 201
    body = r.json()
    assert body["charge"] == 1.0 and body["service"] == "api"
    me = client.get("/v1/account", headers={"X-API-Key": body["api_key"]}).json()
    assert me["account"] == body["account"] and me["wallet"]["spent"] == {"queries": 0, "money": 1.0, "accounts": 1}
    raw = sqlite3.connect(server.store.path).execute("SELECT hash FROM account_keys").fetchall()
    assert (hashlib.sha256(body["api_key"].encode()).hexdigest(),) in raw
    files = [server.store.path, server.store.path.with_name(server.store.path.name + "-wal")]
    assert not any(body["api_key"].encode() in f.read_bytes() for f in files if f.exists())


def test_predict_serves_the_victims_answers_and_charges_after_the_free_quota(client):
    key = new_account(client, new_owner(client))
    r = predict(client, key, POOL[:3])
    assert r.status_code == 200
    out = r.json()
    assert out["n_answered"] == 3 and out["charge"] == pytest.approx(0.01)  # 2 free, then 0.01 each
    np.testing.assert_allclose(out["outputs"], load_victim("digits-cnn").predict_proba(POOL[:3]), atol=1e-12)
    assert client.get("/v1/account", headers=key).json()["free_left"] == 0


def test_keys_isolate_accounts_and_owners(client):
    alice, bob = new_owner(client), new_owner(client)
    a_key, b_key = new_account(client, alice), new_account(client, bob)
    a_acc = client.get("/v1/account", headers=a_key).json()
    b_acc = client.get("/v1/account", headers=b_key).json()
    assert a_acc["owner"] != b_acc["owner"] and a_acc["account"] != b_acc["account"]
    assert predict(client, a_key, POOL[:1]).status_code == 200
    assert client.get("/v1/account", headers=b_key).json()["queries"] == 0  # alice's query is not bob's
    # an owner sees its own accounts only; another owner's is as unknown as one that does not exist (a 403 would
    # let an owner count the others' accounts)
    assert [a["account"] for a in client.get("/v1/owner", headers=alice).json()["accounts"]] == [a_acc["account"]]
    theirs = client.get(f"/v1/owner/accounts/{b_acc['account']}", headers=alice)
    missing = client.get(f"/v1/owner/accounts/{b_acc['account']}9", headers=alice)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["reason"] == missing.json()["reason"] == "unknown-account"
    assert client.get(f"/v1/owner/accounts/{a_acc['account']}", headers=alice).status_code == 200
    # a key of one kind is no key of another, and unknown keys are unknown
    for headers, path in [({"X-Owner-Key": a_key["X-API-Key"]}, "/v1/owner"),
                          ({"X-API-Key": alice["X-Owner-Key"]}, "/v1/account"),
                          ({"X-Admin-Key": alice["X-Owner-Key"]}, "/v1/admin/owners"),
                          ({"X-API-Key": "not-a-key"}, "/v1/account"), ({}, "/v1/account")]:
        r = client.get(path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert "key" in r.json()["detail"]
    # an account answers only on its own service
    r = predict(client, a_key, POOL[:1], service="limited")
    assert r.status_code == 403 and "api" in r.json()["detail"]


# -- status codes -----------------------------------------------------------------------------------
def test_budgets_answer_402_and_charge_nothing(client):
    owner = new_owner(client, queries=4, money=1.015, accounts=1)
    key = new_account(client, owner)
    r = predict(client, key, POOL[:5])
    assert r.status_code == 402 and r.json()["reason"] == "query-budget"
    r = predict(client, key, POOL[:4])  # 2 free + 2 x 0.01 > the 0.015 left
    assert r.status_code == 402 and r.json()["reason"] == "money-budget"
    assert predict(client, key, POOL[:3]).json()["charge"] == pytest.approx(0.01)
    r = client.post("/v1/accounts", json={"service": "api"}, headers=owner)
    assert r.status_code == 402 and r.json()["reason"] == "account-budget"
    wallet = client.get("/v1/account", headers=key).json()["wallet"]
    assert wallet["spent"] == {"queries": 3, "money": pytest.approx(1.01), "accounts": 1}


def test_a_banned_account_gets_403(client):
    key = new_account(client, new_owner(client))
    account = client.get("/v1/account", headers=key).json()["account"]
    r = client.post("/v1/admin/bans", json={"account": account, "note": "test"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["banned"]
    n, _ = books(client)
    r = predict(client, key, POOL[:1])
    assert r.status_code == 403 and r.json()["reason"] == "banned"
    assert books(client)[0] == n


def test_rate_limit_answers_429_until_the_round_closes_and_never_a_false_retry_after(client):
    key = new_account(client, new_owner(client), "limited")
    assert predict(client, key, POOL[:5], service="limited").status_code == 200
    r = predict(client, key, POOL[:1], service="limited")
    assert r.status_code == 429 and r.json()["reason"] == "rate-limit"
    assert "Retry-After" not in r.headers  # only the operator closes rounds here: nobody knows when
    assert client.post("/v1/admin/rounds/next", headers=ADMIN).status_code == 200
    assert predict(client, key, POOL[:1], service="limited").status_code == 200


def test_unknown_service_is_404(client):
    r = client.get("/v1/services/nope")
    assert r.status_code == 404 and "api" in r.json()["detail"]
    r = client.post("/v1/accounts", json={"service": "nope"}, headers=new_owner(client))
    assert r.status_code == 404


# -- bad requests: 4xx with a clear message, nothing charged ---------------------------------------
def _nan_body() -> str:
    rows = POOL[:2].tolist()
    return '{"inputs": ' + str(rows).replace("0.0", "NaN", 1) + "}"


BAD = [
    ("malformed JSON", '{"inputs": [1,', 400, "malformed JSON"),
    ("not an object", "[1, 2]", 422, "body"),
    ("no inputs", '{"x": 1}', 422, "inputs"),
    ("extra field", '{"inputs": [[[[0.0]]]], "extra": 1}', 422, "extra"),
    ("empty batch", '{"inputs": []}', 422, "inputs"),
    ("wrong shape", '{"inputs": [[1, 2, 3]]}', 422, "shape (batch, 1, 8, 8)"),
    ("ragged", '{"inputs": [[[[0.0, 1.0]]], [[[0.0]]]]}', 422, "rectangular"),
    ("strings", '{"inputs": [["a"]]}', 422, "numbers"),
    ("booleans", '{"inputs": [[[[true]]]]}', 422, "numbers"),
    ("NaN", _nan_body(), 422, "NaN"),
    ("inf", '{"inputs": ' + str(np.full((1, 1, 8, 8), 1e999).tolist()).replace("inf", "Infinity") + "}", 422,
     "NaN or inf"),
    ("out of range", '{"inputs": ' + str(np.full((1, 1, 8, 8), 2.0).tolist()) + "}", 422, "[0.0, 1.0]"),
    ("too many", '{"inputs": ' + str(np.zeros((1025, 1, 8, 8)).tolist()) + "}", 422, "at most 1024"),
]


@pytest.mark.parametrize("name, body, status, words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_naming_the_problem_and_charge_nothing(client, name, body, status, words):
    key = new_account(client, new_owner(client))
    before = client.get("/v1/account", headers=key).json()
    n = books(client)[0]
    r = client.post("/v1/services/api/predict", content=body,
                    headers={**key, "Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    assert client.get("/v1/account", headers=key).json() == before
    assert books(client)[0] == n


def test_invalid_queries_carry_the_simulators_own_message(client):
    key = new_account(client, new_owner(client))
    x = np.full((2, 1, 8, 8), 0.5)
    x[1, 0, 3, 3] = 1.5
    expected = str(pytest.raises(InvalidQuery, validate_queries, x, SPEC).value)
    r = predict(client, key, x)
    assert r.status_code == 422 and r.json()["detail"] == expected


def test_oversized_bodies_get_413_before_they_are_read(tmp_path):
    s = make_server(tmp_path)
    c = TestClient(serve_app(s, max_body=10_000))
    key = new_account(c, {"X-Owner-Key": "owner-key-0"})
    n = books(c)[0]
    r = predict(c, key, np.zeros((100, 1, 8, 8)))
    assert r.status_code == 413 and "10000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(100):
            yield b" " * 1000

    r = c.post("/v1/services/api/predict", content=chunks(), headers={**key, "Content-Type": "application/json"})
    assert r.status_code == 413
    assert books(c)[0] == n
    assert predict(c, key, POOL[:1]).status_code == 200
    s.close()


# -- idempotency ------------------------------------------------------------------------------------
def test_a_retry_with_the_same_idempotency_key_is_neither_charged_nor_counted_twice(client):
    key = new_account(client, new_owner(client))
    first = predict(client, key, POOL[:4], **{"Idempotency-Key": "req-1"})
    n = books(client)[0]
    again = predict(client, key, POOL[:4], **{"Idempotency-Key": "req-1"})
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers.get("Idempotent-Replayed") == "true" and "Idempotent-Replayed" not in first.headers
    assert books(client)[0] == n
    assert client.get("/v1/account", headers=key).json()["queries"] == 4
    r = predict(client, key, POOL[4:8], **{"Idempotency-Key": "req-1"})
    assert r.status_code == 422 and "different request" in r.json()["detail"]
    other = new_account(client, new_owner(client))  # keys are per account: another account's req-1 is its own
    assert predict(client, other, POOL[:4], **{"Idempotency-Key": "req-1"}).headers.get("Idempotent-Replayed") is None


# -- the books ------------------------------------------------------------------------------------
def test_ledger_rows_are_append_only(server, client):
    key = new_account(client, new_owner(client))
    predict(client, key, POOL[:1])
    db = sqlite3.connect(server.store.path)
    for sql in ("UPDATE ledger SET charge = 0", "DELETE FROM ledger", "DELETE FROM query_data",
                "UPDATE rounds SET round = 7"):
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            db.execute(sql)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_ledger_export_matches_the_apis_ledger(server, client):
    r = client.get("/v1/admin/ledger", params={"limit": 100_000}, headers=ADMIN).json()
    assert [tuple(e.values()) for e in r["entries"]] == [tuple(vars(e).values()) for e in server.api.ledger]
    assert r["digest"] == server.api.ledger.digest() and r["total"] == len(server.api.ledger)


def test_a_failed_commit_charges_nothing_and_the_state_is_rebuilt_from_the_books(tmp_path, monkeypatch):
    s = make_server(tmp_path)
    c = TestClient(serve_app(s), raise_server_exceptions=False)
    key = new_account(c, {"X-Owner-Key": "owner-key-0"})
    assert predict(c, key, POOL[:3]).status_code == 200
    before, n = c.get("/v1/account", headers=key).json(), books(c)

    def broken() -> None:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(s.store, "commit", broken)
    r = predict(c, key, POOL[3:6])
    assert r.status_code == 500 and "nothing was charged" in r.json()["detail"]
    monkeypatch.undo()
    assert c.get("/v1/account", headers=key).json() == before  # memory rebuilt: the failed query is gone
    assert books(c) == n
    assert predict(c, key, POOL[3:6]).json()["request"] == 1  # the next query takes the failed one's place
    assert books(c)[0] == n[0] + 1
    s.close()


def test_restart_restores_accounts_wallets_bans_keys_and_detectors(tmp_path):
    """Requests, a restart, more requests == the same requests on a server that never stopped."""
    scenario = {**SCENARIO, "services": [SCENARIO["services"][0]],
                "attackers": [{"body": "random", "budget": {"queries": 1000, "money": 50.0, "accounts": 5}}],
                "defenders": [{"body": "similarity", "params": {"threshold": 0.5, "ban_pairs": 100}},
                              {"body": "gaussian-noise", "params": {"sigma": 0.05}}]}

    def session(server: ServiceServer, keys: list[dict[str, str]] | None, part: int) -> tuple[list, list]:
        c = TestClient(serve_app(server))
        if keys is None:
            keys = [new_account(c, {"X-Owner-Key": "owner-key-0"}) for _ in range(2)]
        answers = []
        for i in range(4):
            for k in keys:
                x = np.clip(POOL[:10] + 0.002 * (part * 4 + i), 0, 1)  # near-copies: similar pairs pile up
                answers.append(predict(c, k, x).json())
            if i == 1:
                c.post("/v1/admin/rounds/next", headers=ADMIN)
        return keys, answers

    steady = make_server(tmp_path / "steady", scenario)
    keys, _ = session(steady, None, 0)
    _, expected = session(steady, keys, 1)

    crashed = make_server(tmp_path / "crashed", scenario)
    keys2, _ = session(crashed, None, 0)
    crashed.close()  # the books stay; the memory goes
    restarted = ServiceServer(ServerConfig(scenario, tmp_path / "crashed" / "books.db", admin_key="test-admin-key"))
    assert restarted.round == steady.round - 1 and len(restarted.api.ledger) > 0
    _, after = session(restarted, keys2, 1)  # the old keys still work
    assert after == expected  # answers (noise draws included), bans, charges and seq numbers
    assert restarted.api.ledger.digest() == steady.api.ledger.digest()
    # the first requests after the restart are banned: only a detector that remembers the 60 similar pairs sent
    # before it can get past ban_pairs=100 there (these 10 near-copies add 40)
    assert expected[0]["banned"] and expected[1]["banned"] and 0 < expected[0]["n_answered"] < 10
    for owner in steady.api.wallets:
        assert vars(restarted.api.wallets[owner]) == vars(steady.api.wallets[owner])
    steady.close()
    restarted.close()


def test_a_database_of_another_scenario_is_refused(tmp_path):
    make_server(tmp_path).close()
    with pytest.raises(ValueError, match="another scenario"):
        make_server(tmp_path, {**SCENARIO, "seed": 1})


# -- contest mode -----------------------------------------------------------------------------------
def test_submissions_are_scored_on_the_hidden_test_set_in_the_servers_code(tmp_path):
    s = make_server(tmp_path, max_submissions=2, upload_burst=5)
    c = TestClient(serve_app(s))
    owner = {"X-Owner-Key": "owner-key-0"}
    victim = load_victim("digits-cnn")
    snap = ModelSnapshot.of(victim.model, "digits-cnn", 10, (1, 8, 8)).to_bytes()
    r = c.post("/v1/submissions", content=snap, headers={**owner, "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert r.json()["fidelity"] == 1.0 and r.json()["accuracy"] == pytest.approx(s.game.referee.victim_accuracy("api"))
    for bad, words in [(b"not a snapshot", "safetensors"),
                       (ModelSnapshot.of(victim.model, "mnist-cnn", 10, (1, 8, 8)).to_bytes(), "parameters")]:
        r = c.post("/v1/submissions", content=bad, headers=owner)
        assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert c.post("/v1/submissions", content=snap).status_code == 401
    assert c.post("/v1/submissions", content=snap, headers=owner).status_code == 201
    r = c.post("/v1/submissions", content=snap, headers=owner)
    assert r.status_code == 403 and "submissions" in r.json()["detail"] and "Retry-After" not in r.headers
    assert len(c.get("/v1/submissions", headers=owner).json()) == 2
    s.close()


# -- the command line -------------------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["no-such-scenario"], "unknown scenario"),
    (["digits-remote"], "remote"),
    (["digits-basic", "--owner-key", "attacker_0=long-enough-key"], "visible to every local user"),
    (["digits-basic", "--admin-key", "long-enough-key"], "visible to every local user"),
    (["digits-basic", "--owner-keys", "/no/such/file"], "--owner-keys"),
])
def test_serve_rejects_bad_input_with_exit_code_2(tmp_path, args, words):
    result = CliRunner().invoke(cli, ["serve", *args, "--db", str(tmp_path / "x.db")], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert words in result.output


# -- rounds on a timer, and the store's request batches ---------------------------------------------
def test_rounds_close_on_the_timer_and_retry_after_counts_down_to_the_next(tmp_path):
    import time

    s = make_server(tmp_path, round_seconds=0.2)
    s.start_timer()
    deadline = time.monotonic() + 30
    while s.round < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.round >= 2 and s.retry_after() == 1  # the next round is at most 0.2 s away: rounded up to 1 s
    s.stop_timer()
    closed = s.round
    assert [r for r, _ in s.store.rounds()] == list(range(closed))
    s.close()
    assert ServiceServer(ServerConfig(SCENARIO, tmp_path / "books.db", admin_key="k" * 8)).round == closed


def test_stored_batches_round_trip_exactly(tmp_path):
    from extractgym.serve.store import Store

    store = Store(tmp_path / "s.db")
    texts = np.empty(3, dtype=object)
    texts[:] = ["a film", "ünïcode ✓", "x" * 500]
    images = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    with store.transaction():
        for seq in (0, 1):
            store.add_entry(LedgerEntry(seq=seq, round=0, kind="query", owner="o", account="a", service="s"))
        store.add_query_data(0, texts)
        store.add_query_data(1, images)
    data = store.query_data()
    assert data[0].dtype == object and list(data[0]) == list(texts)
    assert data[1].dtype == np.float32 and np.array_equal(data[1], images)
    store.close()
