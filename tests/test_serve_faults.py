"""A remote run must fail loudly, never quietly: a dead server, a wrong key, a server killed mid-run or an owner
with nothing left end the run with a non-zero exit and the reason; a server restarted mid-run is waited for (the
retries keep their Idempotency-Key) and the run ends with its books equal to the server's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from extractgym.cli import app as cli
from extractgym.serve import ServerConfig, ServiceServer
from extractgym.serve.launch import free_port, in_process, in_thread

ADMIN = "faults-admin-key"
SERVED = {"name": "faults", "description": "served for the fault tests",
          "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.001, "account_price": 1.0}],
          "attackers": [{"body": "random", "budget": {"queries": 2000, "money": 30.0, "accounts": 5}}]}


def client_scenario(url: str, deadline: float, rounds: int = 4, queries: int = 40) -> dict[str, Any]:
    return {**SERVED, "name": "faults-remote", "rounds": rounds,
            "services": [{**SERVED["services"][0], "remote": {"url": url, "key_env": "EXTRACTGYM_OWNER_KEY",
                                                              "deadline": deadline, "max_wait": 1.0}}],
            "attackers": [{"body": "random", "params": {"queries_per_round": queries},
                           "budget": SERVED["attackers"][0]["budget"]}]}


def write(tmp: Path, name: str, data: dict[str, Any]) -> Path:
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Ran:
    """A CLI run: its exit code and its output with line breaks folded (the console wraps long messages)."""

    def __init__(self, result: Any) -> None:
        self.exit_code, self.output = result.exit_code, " ".join(result.output.split())


def run(path: Path, out: Path, key: str) -> Ran:
    return Ran(CliRunner().invoke(cli, ["run", str(path), "--out", str(out)], env={"EXTRACTGYM_OWNER_KEY": key,
                                                                                   "COLUMNS": "200"}))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("faults")
    server = ServiceServer(ServerConfig(SERVED, tmp / "books.db", admin_key=ADMIN))
    with in_thread(server) as url:
        yield url, server
    server.close()


def new_owner(url: str, name: str, **budget: Any) -> str:
    r = httpx.post(url + "/v1/admin/owners", json={"owner": name, "budget": budget}, headers={"X-Admin-Key": ADMIN})
    r.raise_for_status()
    return r.json()["owner_key"]


def test_a_run_against_a_dead_server_exits_non_zero_and_says_why(tmp_path):
    path = write(tmp_path, "dead", client_scenario(f"http://127.0.0.1:{free_port()}", deadline=1.0))
    result = run(path, tmp_path / "out", "any-key-at-all")
    assert result.exit_code != 0 and "cannot reach the remote service" in result.output, result.output
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_wrong_or_revoked_key_exits_non_zero_and_says_why(tmp_path, served):
    url, _ = served
    path = write(tmp_path, "wrong", client_scenario(url, deadline=5.0))
    result = run(path, tmp_path / "out", "not-the-owner-key")
    assert result.exit_code != 0 and "refused the owner key" in result.output, result.output
    key = new_owner(url, "revoked-owner", money=30.0)
    assert httpx.delete(url + "/v1/admin/owners/revoked-owner/keys", headers={"X-Admin-Key": ADMIN}).json() == \
        {"owner": "revoked-owner", "revoked": 1}
    result = run(path, tmp_path / "out", key)
    assert result.exit_code != 0 and "refused the owner key" in result.output, result.output


def test_an_owner_with_nothing_left_buys_no_account_and_exits_non_zero(tmp_path, served):
    url, server = served
    path = write(tmp_path, "spent", client_scenario(url, deadline=5.0, rounds=2, queries=20))
    key = new_owner(url, "spender", queries=40, money=30.0, accounts=5)
    first = run(path, tmp_path / "out", key)
    assert first.exit_code == 0, first.output  # spends all 40 queries
    accounts = len(server.owner_info("spender")["accounts"])
    second = run(path, tmp_path / "out2", key)
    assert second.exit_code != 0 and "would play nothing" in second.output, second.output
    assert len(server.owner_info("spender")["accounts"]) == accounts  # no account bought for nothing


def test_books_that_disagree_at_the_end_fail_the_run(tmp_path, served, monkeypatch):
    """The reconciliation is real: a server whose books count one query more than ours fails the run."""
    url, server = served
    path = write(tmp_path, "disagree", client_scenario(url, deadline=5.0, rounds=1, queries=10))
    key = new_owner(url, "disagreeing", money=30.0)
    real = server.account_info

    def padded(account: str) -> dict[str, Any]:
        info = real(account)
        return {**info, "queries": info["queries"] + 1}

    monkeypatch.setattr(server, "account_info", padded)
    result = run(path, tmp_path / "out", key)
    assert result.exit_code != 0 and "books disagree" in result.output and "on the server" in result.output


def _serve(tmp: Path, db: Path, port: int):
    return in_process([str(write(tmp, "served", SERVED)), "--db", str(db)], port=port,
                      env={"EXTRACTGYM_ADMIN_KEY": ADMIN, "EXTRACTGYM_OWNER_KEYS": "attacker_0=fault-owner-key"},
                      log=tmp / "serve.log")


def _client(path: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "EXTRACTGYM_OWNER_KEY": "fault-owner-key", "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "extractgym.cli", "run", str(path), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_queries(url: str, client: subprocess.Popen, at_least: int = 1) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and client.poll() is None:
        entries = httpx.get(url + "/v1/admin/ledger", params={"limit": 100_000},
                            headers={"X-Admin-Key": ADMIN}).json()["entries"]
        if sum(e["kind"] == "query" and e["owner"] == "attacker_0" for e in entries) >= at_least:
            return
        time.sleep(0.05)
    raise AssertionError("the client did not get going (or finished first)")


@pytest.mark.slow  # three server starts and two client processes: about 100 s on a busy 2-core machine
def test_a_server_killed_mid_run_fails_the_run_and_a_restart_mid_run_is_bridged(tmp_path):
    port, db = free_port(), tmp_path / "books.db"
    killed = write(tmp_path, "killed", client_scenario(f"http://127.0.0.1:{port}", deadline=2.0, rounds=6))
    with _serve(tmp_path, db, port) as (url, proc):
        client = _client(killed, tmp_path / "killed-out")
        _wait_for_queries(url, client)
        os.kill(proc.pid, signal.SIGKILL)
        output, _ = client.communicate(timeout=300)
    assert client.returncode != 0 and "unreachable" in " ".join(output.split()), output
    assert not (tmp_path / "killed-out" / "summary.json").exists()

    bridged = write(tmp_path, "bridged", client_scenario(f"http://127.0.0.1:{port}", deadline=120.0, rounds=6))
    with _serve(tmp_path, db, port) as (url, proc):
        before = httpx.get(url + "/v1/owner", headers={"X-Owner-Key": "fault-owner-key"}).json()["wallet"]["spent"]
        client = _client(bridged, tmp_path / "bridged-out")
        _wait_for_queries(url, client, at_least=2)  # the killed run's first query, then this one's
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with _serve(tmp_path, db, port) as (url, _):  # same port, same books; the client retries meanwhile
        output, _ = client.communicate(timeout=600)
        assert client.returncode == 0, output
        summary = json.loads((tmp_path / "bridged-out" / "summary.json").read_text())
        owner = httpx.get(url + "/v1/owner", headers={"X-Owner-Key": "fault-owner-key"}).json()
    # the run reconciled its accounts with the server's (else it would have failed); the owner's totals agree too
    assert summary["queries"] == owner["wallet"]["spent"]["queries"] - before["queries"] > 0
    assert summary["accounts_created"] == owner["wallet"]["spent"]["accounts"] - before["accounts"]
