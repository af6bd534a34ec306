"""A real ``extractgym serve`` process on loopback, started and stopped (and killed) by the tests: admission
under 1,000 concurrent requests, and a kill -9 in the middle of a stream of requests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from extractgym.serve.launch import in_process
from extractgym.victims.datasets import get_dataset

ADMIN = {"X-Admin-Key": "process-admin-key"}
POOL = get_dataset("digits").split("pool")[0]
SCENARIO = {"name": "process", "description": "served by a separate process in the tests",
            "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01, "account_price": 0.5,
                          "free_quota": 3},
                         {"name": "limited", "victim": "digits-cnn", "rate_limit": 37}],
            "attackers": [{"body": "random"}]}
RACERS = 1000


def start(tmp: Path, db: Path):
    scenario = tmp / "process.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    return in_process([str(scenario), "--db", str(db)], env={"EXTRACTGYM_ADMIN_KEY": ADMIN["X-Admin-Key"]},
                      log=tmp / "serve.log")


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("process")
    with start(tmp, tmp / "books.db") as (base, _):
        yield base


def new_owner(url: str, name: str, **budget: Any) -> dict[str, str]:
    r = httpx.post(url + "/v1/admin/owners", json={"owner": name, "budget": budget}, headers=ADMIN)
    r.raise_for_status()
    return {"X-Owner-Key": r.json()["owner_key"]}


def new_account(url: str, owner: dict[str, str], service: str = "api") -> dict[str, str]:
    r = httpx.post(url + "/v1/accounts", json={"service": service}, headers=owner)
    r.raise_for_status()
    return {"X-API-Key": r.json()["api_key"]}


class Reply:
    """One raw HTTP/1.1 response: status, headers (lower-case names), JSON body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status_code, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def race(url: str, path: str, keys: list[dict[str, str]], body: dict[str, Any]) -> list[Reply]:
    """Send one request per key header at once, each on its own connection, written before any answer is read.

    A bare asyncio HTTP/1.1 client: an HTTP library's per-request cost in this process would pace the race on a
    small machine (what is measured here is the server's admission, not the client).
    """
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()

    async def one(start: asyncio.Event, headers: dict[str, str]) -> Reply:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, "Content-Type": "application/json",
                                                     "Content-Length": len(payload), **headers}.items())
        request = f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + payload
        reader, writer = await asyncio.open_connection(host, int(port))
        await start.wait()
        writer.write(request)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        fields: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            fields[name.strip().lower()] = value.strip()
        reply = Reply(status, fields, await reader.readexactly(int(fields["content-length"])))
        writer.close()
        return reply

    async def main() -> list[Reply]:
        start = asyncio.Event()
        tasks = [asyncio.ensure_future(one(start, k)) for k in keys]
        await asyncio.sleep(0.5)  # let the connections open, then release every request together
        start.set()
        return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


def ledger(url: str) -> list[dict[str, Any]]:
    return httpx.get(url + "/v1/admin/ledger", params={"limit": 100_000}, headers=ADMIN).json()["entries"]


# -- admission --------------------------------------------------------------------------------------
def test_exactly_n_of_1000_concurrent_requests_fit_a_budget_of_n(url):
    n = 123
    owner = new_owner(url, "budgeted", queries=n)
    keys = [new_account(url, owner) for _ in range(8)]  # the race is for the owner's wallet, over 8 accounts
    x = POOL[:1].tolist()
    responses = race(url, "/v1/services/api/predict", [keys[i % 8] for i in range(RACERS)], {"inputs": x})
    codes = [r.status_code for r in responses]
    assert codes.count(200) == n and codes.count(402) == RACERS - n, sorted(set(codes))
    assert all(r.json()["reason"] == "query-budget" for r in responses if r.status_code == 402)
    wallet = httpx.get(url + "/v1/owner", headers=owner).json()["wallet"]
    assert wallet["spent"]["queries"] == n and wallet["left"]["queries"] == 0
    served = [e for e in ledger(url) if e["owner"] == "budgeted" and e["kind"] == "query"]
    assert len(served) == n


def test_exactly_the_rate_limit_of_1000_concurrent_requests_is_served(url):
    key = new_account(url, new_owner(url, "limited-owner"), "limited")
    x = POOL[:1].tolist()
    responses = race(url, "/v1/services/limited/predict", [key] * RACERS, {"inputs": x})
    codes = [r.status_code for r in responses]
    assert codes.count(200) == 37 and codes.count(429) == RACERS - 37, sorted(set(codes))
    assert not any("retry-after" in r.headers for r in responses)  # rounds close by the operator: no false promise
    assert httpx.get(url + "/v1/account", headers=key).json()["round_queries"] == 37


# -- crash ------------------------------------------------------------------------------------------
def test_kill_9_mid_stream_loses_no_acknowledged_charge_and_charges_nothing_twice(tmp_path):
    """Eight clients stream requests, each with its own Idempotency-Key; the server is killed with SIGKILL while
    they are in flight, then restarted on the same database. Every acknowledged query and charge must be there;
    the only other stored queries are requests in flight at the kill (committed, answer lost), and retrying every
    unanswered request with its key serves each exactly once."""
    db = tmp_path / "books.db"
    with start(tmp_path, db) as (url, proc):
        owner = new_owner(url, "streamer", money=1000.0)
        keys = [new_account(url, owner) for _ in range(8)]
        accounts = {k["X-API-Key"]: httpx.get(url + "/v1/account", headers=k).json()["account"] for k in keys}
        sent: list[tuple[dict[str, str], str, list]] = []  # (account key, idempotency key, inputs)
        acked: dict[str, dict[str, Any]] = {}  # idempotency key -> answer
        errors: list[str] = []
        lock, enough = threading.Lock(), threading.Event()

        def stream(i: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                for j in range(10_000):
                    idem, x = uuid.uuid4().hex, POOL[(i * 37 + j) % 500:(i * 37 + j) % 500 + 1 + j % 4].tolist()
                    with lock:
                        sent.append((keys[i], idem, x))
                    try:
                        r = client.post("/v1/services/api/predict", json={"inputs": x},
                                        headers={**keys[i], "Idempotency-Key": idem})
                    except httpx.TransportError:
                        return  # the server is gone
                    with lock:
                        if r.status_code != 200:
                            errors.append(r.text)
                            return
                        acked[idem] = r.json()
                        if len(acked) >= 300:
                            enough.set()

        threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        assert enough.wait(120), "the stream did not get going"
        os.kill(proc.pid, signal.SIGKILL)
        for t in threads:
            t.join()
    assert proc.returncode == -signal.SIGKILL and not errors, errors

    with start(tmp_path, db) as (url, _):
        entries = [e for e in ledger(url) if e["kind"] == "query"]
        stored, count = {}, Counter()  # (account, its request number) -> entry
        for e in entries:
            stored[(e["account"], count[e["account"]])] = e
            count[e["account"]] += 1
        for (key, idem, _x), answer in ((k, acked[k[1]]) for k in sent if k[1] in acked):
            account = accounts[key["X-API-Key"]]  # every acknowledged query and charge is there, as answered
            e = stored[(account, answer["request"])]
            assert (e["n"], e["charge"]) == (answer["n_answered"], answer["charge"])
        unanswered = [(k, idem, x) for k, idem, x in sent if idem not in acked]
        extra = len(stored) - len(acked)
        print(f"acknowledged {len(acked)}, stored {len(stored)}, in flight at the kill {len(unanswered)}")
        assert 0 <= extra <= len(unanswered) <= len(threads)  # committed-but-unanswered only: in flight
        with httpx.Client(base_url=url, timeout=30) as client:  # the clients retry what got no answer
            replayed = 0
            for key, idem, x in unanswered:
                r = client.post("/v1/services/api/predict", json={"inputs": x},
                                headers={**key, "Idempotency-Key": idem})
                assert r.status_code == 200, r.text
                replayed += r.headers.get("Idempotent-Replayed") == "true"
        assert replayed == extra  # the committed ones were answered from the books, not served again
        after = [e for e in ledger(url) if e["kind"] == "query"]
        assert len(after) == len(sent)  # each request exactly once
        wallet = httpx.get(url + "/v1/owner", headers=owner).json()["wallet"]
        assert wallet["spent"]["queries"] == sum(len(x) for _, _, x in sent)
        assert wallet["spent"]["money"] == pytest.approx(8 * 0.5 + sum(e["charge"] for e in after))
