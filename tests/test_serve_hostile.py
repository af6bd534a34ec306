"""The service under hostile or careless traffic: bounded work before authentication (the gate), contest upload
caps and rate, truthful Retry-After, revocable and rotatable keys, group commit (shared flushes, nothing answered
before it is durable, a failed flush refuses everything), snapshots (a restart from one equals a full replay), and
the smaller faults: JSON ``true`` in a batch, ``accounts: false``, the predict body's schema, offline docs, the
per-account request number."""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from extractgym.serve import ServerConfig, ServiceServer
from extractgym.serve.app import Gate, create_app, serve_app
from extractgym.victims.datasets import get_dataset

ADMIN = {"X-Admin-Key": "hostile-admin-key"}
OWNER = {"X-Owner-Key": "hostile-owner-key"}
POOL = get_dataset("digits").split("pool")[0]
SCENARIO: dict[str, Any] = {
    "name": "hostile", "description": "the service tried as a hostile client would",
    "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01},
                 {"name": "limited", "victim": "digits-cnn", "rate_limit": 2}],
    "attackers": [{"body": "random", "budget": {"queries": 10_000, "money": 100.0, "accounts": 20}}],
}


def make(tmp_path, scenario: Any = None, **kw: Any) -> ServiceServer:
    return ServiceServer(ServerConfig(scenario or SCENARIO, tmp_path / "books.db", admin_key=ADMIN["X-Admin-Key"],
                                      owner_keys={"attacker_0": OWNER["X-Owner-Key"]}, **kw))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = make(tmp_path_factory.mktemp("hostile"), max_batch=16)
    yield s
    s.close()


@pytest.fixture(scope="module")
def client(server) -> TestClient:
    return TestClient(serve_app(server), raise_server_exceptions=False)


def account(client: TestClient, service: str = "api") -> dict[str, str]:
    r = client.post("/v1/accounts", json={"service": service}, headers=OWNER)
    assert r.status_code == 201, r.text
    return {"X-API-Key": r.json()["api_key"]}


def books(server: ServiceServer) -> int:
    return len(server.api.ledger)


# -- the gate: authentication from the headers, the body bounded while it streams ---------------------
def call_gate(gate: Gate, path: str, headers: dict[str, str], chunks: list[bytes]) -> tuple[int, int]:
    """Drive the ASGI gate directly: ``(status, chunks it read)``."""
    read, sent = [0], []

    async def receive() -> dict[str, Any]:
        i = read[0]
        read[0] += 1
        return {"type": "http.request", "body": chunks[i], "more_body": i + 1 < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()], "root_path": ""}
    asyncio.run(gate(scope, receive, send))
    return sent[0]["status"], read[0]


def test_a_request_without_a_valid_key_is_answered_before_its_body_is_read(server):
    gate = serve_app(server)
    huge = [b"[0]," * 2**18] * 64  # 64 MiB offered in chunks: none of it is read
    for headers in ({}, {"X-API-Key": "not-a-key"}):
        assert call_gate(gate, "/v1/services/api/predict", headers, huge) == (401, 0)
    assert call_gate(gate, "/v1/submissions", {"X-Owner-Key": "nope"}, huge) == (401, 0)
    assert call_gate(gate, "/v1/admin/owners", {"X-Admin-Key": "nope"}, huge) == (401, 0)


def test_a_batch_of_too_many_items_is_refused_while_it_streams(server, client):
    key = account(client)
    n = books(server)
    rows = [b'{"inputs": ['] + [b"[0]," * 1000] * 1000 + [b"[0]]}"]  # a million one-element rows, ~4 MB
    status, read = call_gate(serve_app(server), "/v1/services/api/predict", key, rows)
    assert status == 413 and read < 10  # refused after a few chunks, never parsed
    r = client.post("/v1/services/api/predict", content=b"".join(rows), headers=key)
    assert r.status_code == 413 and r.json()["reason"] == "too-large"  # its Content-Length alone is over the limit
    assert books(server) == n


def test_a_text_batch_counts_strings_not_the_quotes_inside_them(tmp_path):
    from extractgym.serve.state import BodyCounter, Caps

    c = Caps(10**6, 4 * 2 + 64, (b'"',), b'\\"')
    quoted = b'{"inputs": [' + b",".join([b'"he said \\"no\\" twice"'] * 2) + b"]}"
    assert BodyCounter(c).feed(quoted) is None  # escaped quotes are not strings
    many = b'{"inputs": [' + b",".join([b'"a"'] * 100) + b"]}"
    assert BodyCounter(c).feed(many)[0] == 413
    split = BodyCounter(c)  # an escape split across two chunks is still an escape
    assert split.feed(b'"x\\') is None and split.items == 1 and split.feed(b'"y"') is None and split.items == 2


# -- contest uploads: capped before parsing, counted against the upload rate -------------------------
def safetensors_header(tensors: int) -> bytes:
    header = json.dumps({f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
                         for i in range(tensors)}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 4 * tensors


def test_uploads_are_capped_before_parsing_and_every_upload_counts_against_the_rate(tmp_path, monkeypatch):
    import extractgym.serve.contest as contest

    s = make(tmp_path, max_tensors=8, upload_burst=3, upload_seconds=600)
    c = TestClient(serve_app(s), raise_server_exceptions=False)
    parsed = []
    monkeypatch.setattr(contest, "score_snapshot", lambda *a: parsed.append(a) or (_ for _ in ()).throw(
        AssertionError("parsed")))
    r = c.post("/v1/submissions", content=safetensors_header(200), headers=OWNER)
    assert r.status_code == 422 and "200 tensors" in r.json()["detail"]
    r = c.post("/v1/submissions", content=struct.pack("<Q", 2**40) + b"{}", headers=OWNER)
    assert r.status_code == 422 and "header" in r.json()["detail"]
    r = c.post("/v1/submissions", content=b"x" * (s.config.max_upload + 1), headers=OWNER)
    assert r.status_code == 413
    r = c.post("/v1/submissions", content=safetensors_header(2), headers=OWNER)  # the 4th upload in a burst of 3
    assert r.status_code == 429 and r.json()["reason"] == "upload-rate"
    assert 590 <= int(r.headers["Retry-After"]) <= 600  # the three tokens are spent: the next one is 600 s away
    assert parsed == [] and s.store.submissions() == []
    s.close()


# -- Retry-After --------------------------------------------------------------------------------------
def test_retry_after_is_when_a_retry_succeeds(tmp_path):
    s = make(tmp_path, round_seconds=1.0)
    s.next_round_at = time.monotonic() + 1.0  # the round clock, as the timer sets it (no timer thread here)
    c = TestClient(serve_app(s), raise_server_exceptions=False)
    key = account(c, "limited")
    assert c.post("/v1/services/limited/predict", json={"inputs": POOL[:2].tolist()}, headers=key).status_code == 200
    r = c.post("/v1/services/limited/predict", json={"inputs": POOL[:1].tolist()}, headers=key)
    assert r.status_code == 429
    wait = int(r.headers["Retry-After"])
    time.sleep(wait)
    r = c.post("/v1/services/limited/predict", json={"inputs": POOL[:1].tolist()}, headers=key)
    assert r.status_code == 200, r.text  # the first request at the promised time finds the new round
    s.close()


# -- keys ---------------------------------------------------------------------------------------------
def test_rotated_and_revoked_keys_fail_at_once_and_after_a_restart(tmp_path):
    s = make(tmp_path)
    c = TestClient(serve_app(s), raise_server_exceptions=False)
    owner = c.post("/v1/admin/owners", json={"owner": "carol"}, headers=ADMIN).json()["owner_key"]
    r = c.post("/v1/admin/owners/carol/keys", headers=ADMIN)
    assert r.status_code == 201 and r.json()["revoked"] == 1
    new = r.json()["owner_key"]
    assert c.get("/v1/owner", headers={"X-Owner-Key": owner}).status_code == 401
    assert c.get("/v1/owner", headers={"X-Owner-Key": new}).status_code == 200
    assert c.delete("/v1/admin/owners/attacker_0/keys", headers=ADMIN).json()["revoked"] == 1
    assert c.get("/v1/owner", headers=OWNER).status_code == 401
    assert c.post("/v1/admin/owners/nobody/keys", headers=ADMIN).status_code == 404
    assert c.post("/v1/admin/owners/carol/keys").status_code == 401
    s.close()
    # restart with a new configured key for attacker_0: its revoked key stays revoked, and so does any other
    s = ServiceServer(ServerConfig(SCENARIO, tmp_path / "books.db", admin_key=ADMIN["X-Admin-Key"],
                                   owner_keys={"attacker_0": "a-new-owner-key"}))
    c = TestClient(serve_app(s), raise_server_exceptions=False)
    assert c.get("/v1/owner", headers={"X-Owner-Key": owner}).status_code == 401
    assert c.get("/v1/owner", headers=OWNER).status_code == 401
    assert c.get("/v1/owner", headers={"X-Owner-Key": new}).status_code == 200
    assert c.get("/v1/owner", headers={"X-Owner-Key": "a-new-owner-key"}).status_code == 200
    s.close()
    with pytest.raises(ValueError, match="revoked"):  # a revoked key cannot be configured back
        ServiceServer(ServerConfig(SCENARIO, tmp_path / "books.db", admin_key=ADMIN["X-Admin-Key"],
                                   owner_keys={"attacker_0": OWNER["X-Owner-Key"]}))
    s = ServiceServer(ServerConfig(SCENARIO, tmp_path / "books.db", admin_key=ADMIN["X-Admin-Key"],
                                   owner_keys={"attacker_0": "a-third-owner-key"}))  # replaces a-new-owner-key
    assert TestClient(serve_app(s)).get("/v1/owner", headers={"X-Owner-Key": "a-new-owner-key"}).status_code == 401
    s.close()


def test_owner_keys_come_from_a_file_or_the_environment():
    from extractgym.cli.service import parse_owner_keys

    assert parse_owner_keys("# keys\nattacker_0 = k-0-long-key\n\nattacker_1=k-1-long-key  # second\n", "f") == \
        {"attacker_0": "k-0-long-key", "attacker_1": "k-1-long-key"}
    assert parse_owner_keys("attacker_0=a-long-key,attacker_1=b-long-key", "env") == \
        {"attacker_0": "a-long-key", "attacker_1": "b-long-key"}


# -- group commit ---------------------------------------------------------------------------------------
def test_nothing_is_answered_before_its_flush_and_concurrent_requests_share_flushes(tmp_path, monkeypatch):
    s = make(tmp_path)
    acc = s.open_account("attacker_0", "api")["account"]
    gate, calls = threading.Event(), []
    real = s.store._fsync

    def slow_fsync() -> bool:
        calls.append(s.store.committed)
        gate.wait(30)
        return real()

    monkeypatch.setattr(s.store, "_fsync", slow_fsync)
    done: list[int] = []
    threads = [threading.Thread(target=lambda i=i: done.append(s.predict(acc, "attacker_0", "api",
                                                                          POOL[i:i + 1].tolist())[0]["request"]))
               for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while s.store.committed < 1 + 8 + 2 and time.monotonic() < deadline:  # meta+keys, open, 8 requests
        time.sleep(0.01)
    time.sleep(0.2)
    assert done == []  # all eight committed, none answered: the flush has not happened
    gate.set()
    for t in threads:
        t.join()
    assert sorted(done) == list(range(8))
    assert len(calls) <= 3 < 8  # the first flush began before most commits; one more covered all the rest
    s.close()


def test_a_failed_flush_refuses_everything_until_a_restart(tmp_path, monkeypatch):
    s = make(tmp_path)
    c = TestClient(serve_app(s), raise_server_exceptions=False)
    key = account(c)
    monkeypatch.setattr(s.store, "_fsync", lambda: False)
    r = c.post("/v1/services/api/predict", json={"inputs": POOL[:1].tolist()}, headers=key)
    assert r.status_code == 503 and r.json()["reason"] == "not-durable"
    assert c.get("/v1/account", headers=key).status_code == 503
    assert c.get("/v1/services").status_code == 503
    s.close()


# -- snapshots ------------------------------------------------------------------------------------------
def test_a_restart_from_a_snapshot_equals_a_full_replay_and_a_server_that_never_stopped(tmp_path):
    scenario = {**SCENARIO, "services": [SCENARIO["services"][0]],
                "defenders": [{"body": "similarity", "params": {"threshold": 0.5, "ban_pairs": 60}},
                              {"body": "gaussian-noise", "params": {"sigma": 0.05}}],
                "benign": [{"dataset": "digits", "split": "pool", "customers": 2, "queries_per_round": 5}]}

    def traffic(s: ServiceServer, accounts: list[str], part: int) -> list[Any]:
        out = []
        for i in range(5):
            for a in accounts:
                x = np.clip(POOL[:6] + 0.002 * (part * 5 + i), 0, 1).tolist()
                try:
                    out.append(s.predict(a, "attacker_0", "api", x)[0])
                except Exception as e:  # noqa: BLE001  # banned: the refusal is part of the transcript
                    out.append(str(e))
            if i == 2:
                s.advance_round()
        return out

    servers, after = {}, {}
    for name, every in (("steady", 7), ("snapshot", 7), ("replay", 0)):
        s = make(tmp_path / name, scenario, benign=True, snapshot_every=every)
        accounts = [s.open_account("attacker_0", "api")["account"] for _ in range(2)]
        traffic(s, accounts, 0)
        servers[name] = (s, accounts)
    expected = traffic(*servers["steady"], 1)
    for name in ("snapshot", "replay"):
        s, accounts = servers[name]
        s.close()
        s = make(tmp_path / name, scenario, benign=True, snapshot_every=7)
        assert s.replayed < 7 if name == "snapshot" else s.replayed == len(s.api.ledger)  # its tail, or all of it
        assert traffic(s, accounts, 1) == expected  # answers (noise draws included), bans, charges
        after[name] = (s.api.ledger.digest(), {o: vars(w) for o, w in s.api.wallets.items()})
        s.close()
    # the same books either way (the benign customers' generator is re-seeded on any restart, so their later
    # traffic differs from the server that never stopped; the attackers' answers above do not)
    assert after["snapshot"] == after["replay"]
    assert any(isinstance(a, str) and "banned" in a for a in expected)  # the detector's memory mattered
    servers["steady"][0].close()


def test_a_database_handed_over_cannot_run_code_through_a_snapshot(tmp_path):
    """Snapshots are signed under the operator's secret: a forged one (a pickle that would run code) is skipped
    unread, and the restart replays the books instead."""
    import pickle

    from extractgym.serve.snapshot import code_fingerprint

    s = make(tmp_path, snapshot_every=1000)
    a = s.open_account("attacker_0", "api")["account"]
    s.predict(a, "attacker_0", "api", POOL[:3].tolist())
    n = len(s.api.ledger)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (marker.write_text, ("ran",))

    forged = b"\0" * 32 + pickle.dumps(Payload())  # what a stranger's database could hold
    with s.store.transaction():
        s.store.add_snapshot(n, s.round, code_fingerprint(), 0.0, forged)
    s.close()
    s = make(tmp_path, snapshot_every=1000)
    assert not marker.exists()
    assert s.replayed == n - s.snapshot_at and s.snapshot_at == 0  # the whole ledger replayed instead
    assert s.api.accounts[a].queries == 3
    s.close()


# -- the smaller faults -----------------------------------------------------------------------------------
def test_json_true_inside_a_batch_is_not_a_number_and_charges_nothing(server, client):
    key = account(client)
    n = books(server)
    rows = json.dumps({"inputs": POOL[:2].tolist()})
    body = rows.replace("0.0", "true", 1)
    r = client.post("/v1/services/api/predict", content=body, headers={**key, "Content-Type": "application/json"})
    assert r.status_code == 422 and "boolean" in r.json()["detail"], r.text
    assert books(server) == n


@pytest.mark.parametrize("budget", [{"accounts": False}, {"queries": True}, {"money": "10"}])
def test_a_budget_of_booleans_or_strings_is_refused(client, budget):
    r = client.post("/v1/admin/owners", json={"owner": "strict", "budget": budget}, headers=ADMIN)
    assert r.status_code == 422, r.text
    r = client.put("/v1/admin/owners/attacker_0/budget", json=budget, headers=ADMIN)
    assert r.status_code == 422, r.text


def test_the_spec_constrains_a_batchs_items():
    spec = TestClient(create_app(None)).get("/openapi.json").json()
    body = spec["paths"]["/v1/services/{name}/predict"]["post"]["requestBody"]["content"]["application/json"]
    schemas = spec["components"]["schemas"]
    items = schemas[body["schema"]["$ref"].rsplit("/", 1)[1]]["properties"]["inputs"]["items"]["anyOf"]
    assert {"type": "string", "maxLength": 100_000} in items
    nested = next(i for i in items if i.get("type") == "array")
    numbers = schemas[nested["items"]["$ref"].rsplit("/", 1)[1]]
    assert {"type": "number"} in numbers["anyOf"]  # numbers in nested lists, nothing else


def test_swagger_ui_and_redoc_load_from_the_server_not_a_cdn():
    c = TestClient(create_app(None))
    for page, assets in (("/docs", ("swagger-ui-bundle.js", "swagger-ui.css")), ("/redoc", ("redoc.standalone.js",))):
        html = c.get(page).text
        assert "cdn" not in html.lower() and "googleapis" not in html
        for asset in assets:
            assert f"/docs-assets/{asset}" in html
            r = c.get(f"/docs-assets/{asset}")
            assert r.status_code == 200 and len(r.content) > 100_000


def test_an_answer_reveals_only_its_own_accounts_request_count(server, client):
    a, b = account(client), account(client)
    for _ in range(3):
        r = client.post("/v1/services/api/predict", json={"inputs": POOL[:1].tolist()}, headers=a)
    assert r.json()["request"] == 2
    first = client.post("/v1/services/api/predict", json={"inputs": POOL[:1].tolist()}, headers=b).json()
    assert first["request"] == 0 and "seq" not in first  # nothing about anyone else's traffic
