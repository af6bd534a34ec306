"""Remote targets: attackers play a served API over HTTP exactly as in-process (parity of ledger digests and
referee figures), the endpoint client's retries and error mapping, the JSON protocol, the predict-function
adapter, and the remote block of a scenario."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from extractgym.cli import app as cli
from extractgym.envs.api import Budget, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import InvalidQuery, QueryRefused, RemoteFailure
from extractgym.envs.remote import RemoteConfig, RemoteService, remote_predict
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.scenarios.schema import shipped_scenarios
from extractgym.serve import ServerConfig, ServiceServer
from extractgym.serve.launch import in_thread
from extractgym.victims.datasets import get_dataset
from extractgym.victims.zoo import load_victim

ADMIN = "remote-admin-key"
POOL = get_dataset("digits").split("pool")[0]


def serve(scenario: Any, db: Path, benign: bool = False) -> ServiceServer:
    s = load_scenario(scenario)
    return ServiceServer(ServerConfig(s, db, benign=benign, admin_key=ADMIN,
                                      owner_keys={f"attacker_{i}": f"owner-key-{i}" for i in range(len(s.attackers))}))


def pointed_at(scenario: Any, url: str) -> dict[str, Any]:
    """The same scenario as an attacker plays it against the server: its services remote, each seat with its own
    owner key; no local defenders or benign customers (the server has them)."""
    s = load_scenario(scenario)
    data = s.model_dump(mode="json")
    keys = {f"attacker_{i}": f"owner-key-{i}" for i in range(len(s.attackers))}
    for svc in data["services"]:
        svc["remote"] = {"url": url, "key": "owner-key-0", "keys": keys}
    return {**data, "defenders": [], "benign": []}


# -- parity -----------------------------------------------------------------------------------------
PARITY = [("digits-defended", {"rounds": 4}),  # two random attackers (soft, label-only) vs Gaussian noise + benign
          ("digits-similarity", {"rounds": 3}),  # JB-top3 vs the similarity detector: bans and new accounts
          ("text-sentiment", {"rounds": 2})]  # texts, label-only outputs, free quota


@pytest.mark.parametrize("name, overrides", PARITY, ids=[p[0] for p in PARITY])
def test_an_episode_through_the_server_equals_the_in_process_episode(tmp_path, name, overrides):
    scenario = load_scenario(name, **overrides)
    local = play_episode(make_env(scenario))
    server = serve(scenario, tmp_path / "books.db", benign=True)
    with in_thread(server) as url, httpx.Client(base_url=url, headers={"X-Admin-Key": ADMIN}) as admin:
        remote = play_episode(make_env(pointed_at(scenario, url)),
                              on_round=lambda r, infos: admin.post("/v1/admin/rounds/next").raise_for_status())
        books = admin.get("/v1/admin/summary").json()
    server.close()
    assert books["ledger_digest"] == local["ledger_digest"]  # the same requests, answers, charges and bans
    assert books["ledger_entries"] == local["ledger_entries"]
    for key in ("attacker_accuracy", "fidelity", "queries", "cost", "accounts_created", "accounts_banned"):
        assert remote[key] == local[key], key
    assert remote["attackers"] == local["attackers"]
    for key in ("defended_accuracy", "utility", "benign_accounts", "benign_accounts_banned", "false_positive_rate"):
        assert books[key] == local[key], key
    assert local["queries"] > 0 and (name != "digits-similarity" or local["accounts_banned"] > 0)


# -- the shipped remote scenario, as the README runs it ---------------------------------------------
def owner_key(url: str, owner: str, **budget: Any) -> str:
    """A new owner on the server (so tests sharing a server do not share a budget)."""
    r = httpx.post(url + "/v1/admin/owners", json={"owner": owner, "budget": budget}, headers={"X-Admin-Key": ADMIN})
    r.raise_for_status()
    return r.json()["owner_key"]


@pytest.fixture(scope="module")
def similarity_server(tmp_path_factory):
    server = serve("digits-similarity", tmp_path_factory.mktemp("similarity") / "books.db")
    with in_thread(server) as url:
        yield url
    server.close()


def test_the_shipped_remote_scenario_attacks_a_served_api_from_the_command_line(tmp_path, similarity_server,
                                                                                monkeypatch):
    data = yaml.safe_load(shipped_scenarios()["digits-remote"].read_text())
    data["services"][0]["remote"]["url"] = similarity_server
    path = tmp_path / "digits-remote.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.delenv("EXTRACTGYM_OWNER_KEY", raising=False)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--rounds", "2"])
    assert result.exit_code == 2 and "EXTRACTGYM_OWNER_KEY" in result.output  # no key: named, before any request
    key = owner_key(similarity_server, "cli", queries=1000, money=30.0, accounts=25)
    result = CliRunner().invoke(cli, ["run", str(path), "--out", str(tmp_path / "out"), "--rounds", "2"],
                                env={"EXTRACTGYM_OWNER_KEY": key})
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    owner = httpx.get(similarity_server + "/v1/owner", headers={"X-Owner-Key": key}).json()
    assert summary["queries"] == owner["wallet"]["spent"]["queries"] > 0  # the server's books and ours agree
    assert summary["accounts_banned"] == sum(a["banned"] for a in owner["accounts"])


def test_the_remote_scenario_passes_the_pettingzoo_checks(similarity_server, monkeypatch):
    from pettingzoo.test import parallel_api_test

    monkeypatch.setenv("EXTRACTGYM_OWNER_KEY", owner_key(similarity_server, "pettingzoo"))
    scenario = load_scenario("digits-remote", rounds=2)
    data = scenario.model_dump(mode="json")
    data["services"][0]["remote"]["url"] = similarity_server
    parallel_api_test(make_env(data), num_cycles=4)


def test_terms_that_differ_from_the_servers_are_refused_when_the_game_is_built(similarity_server, monkeypatch):
    monkeypatch.setenv("EXTRACTGYM_OWNER_KEY", "owner-key-0")
    data = load_scenario("digits-remote").model_dump(mode="json")
    data["services"][0].update(price_per_query=0.5, remote={**data["services"][0]["remote"], "url": similarity_server})
    env = make_env(data)
    with pytest.raises(ValueError, match="price_per_query: scenario 0.5, server 0.001"):
        env.reset(seed=0)


def test_an_unreachable_server_is_named(monkeypatch):
    monkeypatch.setenv("EXTRACTGYM_OWNER_KEY", "x")
    data = load_scenario("digits-remote").model_dump(mode="json")
    data["services"][0]["remote"].update(url="http://127.0.0.1:9", retries=0)
    with pytest.raises(ValueError, match="cannot reach the remote service at http://127.0.0.1:9"):
        make_env(data).reset(seed=0)


# -- the endpoint client: retries, backoff, error mapping (a scripted endpoint) ---------------------
class Endpoint:
    """A scripted HTTP endpoint: answers ``script`` in turn (the last one forever), records the requests."""

    def __init__(self, *script: Any) -> None:
        self.script, self.requests = list(script), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        return step(request) if callable(step) else step


def probs(request: httpx.Request, n_answered: int | None = None) -> httpx.Response:
    x = np.asarray(json.loads(request.content)["inputs"], dtype=np.float32)
    n = len(x) if n_answered is None else n_answered
    return httpx.Response(200, json={"outputs": load_victim("digits-cnn").predict_proba(x[:n]).tolist(),
                                     "n_answered": n, "charge": 0.0, "banned": n < len(x), "seq": 0, "round": 0})


def opened(request: httpx.Request) -> httpx.Response:
    return httpx.Response(201, json={"api_key": "remote-account-key", "account": "a", "service": "api",
                                     "charge": 0.0, "round": 0})


def remote_api(endpoint: Endpoint, **config: Any) -> tuple[PredictionAPI, list[float]]:
    """A PredictionAPI whose only service answers from ``endpoint``; one owner ``o`` with one account opened."""
    waits: list[float] = []
    victim = load_victim("digits-cnn")
    backend = RemoteService(RemoteConfig(url="http://remote.test", key="owner-key", **config), "api", 10,
                            client=httpx.Client(transport=httpx.MockTransport(endpoint)), sleep=waits.append)
    api = PredictionAPI([Service(ServiceConfig("api", price_per_query=0.01), victim, backend)])
    api.register_owner("o", Budget(queries=50, money=10.0))
    endpoint.script.insert(0, opened)
    api.open_account("o", "api")
    return api, waits


def test_network_errors_and_5xx_are_retried_with_backoff_under_one_idempotency_key():
    endpoint = Endpoint(httpx.ConnectError("refused"), httpx.Response(503), probs)
    api, waits = remote_api(endpoint)
    r = api.query("o", "api/o/0", POOL[:3])
    assert r.n_answered == 3 and waits == [0.25, 0.5]
    tries = endpoint.requests[1:]
    assert len(tries) == 3 and len({t.headers["Idempotency-Key"] for t in tries}) == 1
    assert all(t.headers["X-API-Key"] == "remote-account-key" for t in tries)
    np.testing.assert_allclose(r.outputs, load_victim("digits-cnn").predict_proba(POOL[:3]))


def test_retries_back_off_until_the_deadline_then_the_failure_is_loud():
    """A server that went away is retried with growing waits under one Idempotency-Key until the deadline, then a
    RemoteFailure names it (no refusal an attacker would shrug off, nothing charged)."""
    now = [0.0]
    endpoint = Endpoint(httpx.ConnectError("refused"))
    api, waits = remote_api(endpoint, deadline=60.0, max_wait=8.0)
    backend = api.services["api"].backend
    backend.clock = lambda: now[0]
    backend.sleep = lambda s: (waits.append(s), now.__setitem__(0, now[0] + s))
    with pytest.raises(RemoteFailure, match="unreachable"):
        api.query("o", "api/o/0", POOL[:2])
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, *[8.0] * 6] and sum(waits) <= 60 < sum(waits) + 8
    assert len({t.headers["Idempotency-Key"] for t in endpoint.requests[1:]}) == 1
    assert api.wallets["o"].queries == 0 and len(api.ledger) == 1


def test_429_honours_retry_after_then_becomes_the_simulators_rate_limit():
    endpoint = Endpoint(httpx.Response(429, headers={"Retry-After": "3"}), probs)
    api, waits = remote_api(endpoint, max_wait=60)
    assert api.query("o", "api/o/0", POOL[:1]).n_answered == 1 and waits == [3.0]
    # a retry before Retry-After cannot succeed: past max_wait (or with no Retry-After at all) it is refused at once
    for headers in ({"Retry-After": "100"}, {}):
        endpoint = Endpoint(httpx.Response(429, headers=headers, json={"detail": "slow down"}))
        api, waits = remote_api(endpoint, retries=2, max_wait=5)
        with pytest.raises(QueryRefused) as e:
            api.query("o", "api/o/0", POOL[:1])
        assert e.value.reason == "rate-limit" and waits == [] and len(endpoint.requests) == 2
        assert api.wallets["o"].queries == 0 and len(api.ledger) == 1  # the open only: nothing charged


@pytest.mark.parametrize("status, body, error, reason", [
    (402, {"detail": "no money", "reason": "money-budget"}, QueryRefused, "money-budget"),
    (402, {"detail": "no queries", "reason": "query-budget"}, QueryRefused, "query-budget"),
    (401, {"detail": "unknown key", "reason": "unknown-key"}, RemoteFailure, None),
    (404, {"detail": "no service", "reason": "unknown-service"}, QueryRefused, "unknown-service"),
    (422, {"detail": "queries contain NaN", "reason": "invalid-query"}, InvalidQuery, None),
    (413, {"detail": "too large", "reason": "too-large"}, InvalidQuery, None),
    (500, {"detail": "boom", "reason": "internal"}, RemoteFailure, None),
])
def test_refusals_map_to_the_simulators_and_charge_nothing(status, body, error, reason):
    api, _ = remote_api(Endpoint(httpx.Response(status, json=body)), retries=0)
    with pytest.raises(error) as e:
        api.query("o", "api/o/0", POOL[:2])
    assert body["detail"] in str(e.value)
    if reason:
        assert e.value.reason == reason
    assert api.wallets["o"].queries == 0 and api.wallets["o"].money == 0 and len(api.ledger) == 1
    assert not api.accounts["api/o/0"].banned


def test_a_remote_ban_is_recorded_as_a_local_one():
    api, _ = remote_api(Endpoint(lambda req: probs(req, n_answered=2)))
    r = api.query("o", "api/o/0", POOL[:5])
    assert r.banned and r.n_answered == 2 and r.charge == pytest.approx(0.02)
    assert [e.kind for e in api.ledger] == ["open", "query", "ban"] and api.ledger[1].n == 2
    with pytest.raises(QueryRefused) as e:  # banned here: the endpoint is not even asked
        api.query("o", "api/o/0", POOL[:1])
    assert e.value.reason == "banned"
    api, _ = remote_api(Endpoint(httpx.Response(403, json={"detail": "banned in round 0", "reason": "banned"})))
    with pytest.raises(QueryRefused, match="banned"):
        api.query("o", "api/o/0", POOL[:1])
    assert api.accounts["api/o/0"].banned and api.ledger[len(api.ledger) - 1].kind == "ban"


def test_local_budgets_refuse_before_the_endpoint_is_asked():
    endpoint = Endpoint(probs)
    api, _ = remote_api(endpoint)
    with pytest.raises(QueryRefused, match="query-budget"):
        api.query("o", "api/o/0", np.repeat(POOL[:1], 51, axis=0))
    assert len(endpoint.requests) == 1  # the account's opening only
    with pytest.raises(InvalidQuery):
        api.query("o", "api/o/0", np.full((1, 1, 8, 8), np.nan, dtype=np.float32))
    assert len(endpoint.requests) == 1


@pytest.mark.parametrize("answer, words", [
    ({"outputs": [[0.5, 0.5]], "n_answered": 1}, "rows of 10"),
    ({"outputs": [], "n_answered": 7}, "n_answered=7"),
    ({"nothing": 1}, "n_answered=-1"),
])
def test_malformed_answers_are_refused_not_trusted(answer, words):
    api, _ = remote_api(Endpoint(httpx.Response(200, json=answer)))
    with pytest.raises(QueryRefused, match=words) as e:
        api.query("o", "api/o/0", POOL[:1])
    assert e.value.reason == "remote-error" and api.wallets["o"].queries == 0


def test_the_json_protocol_maps_requests_and_answers_by_configured_paths():
    victim = load_victim("digits-cnn")

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["model"] == "v2" and request.headers["Authorization"] == "Bearer user-key"
        x = np.asarray(body["data"]["instances"], dtype=np.float32)
        return httpx.Response(200, json={"result": {"labels": victim.predict_proba(x).argmax(axis=1).tolist()}})

    waits: list[float] = []
    config = RemoteConfig(url="https://api.example.com/v2/predict", key="user-key", protocol="json",
                          inputs_field="data.instances", outputs_field="result.labels", outputs="labels",
                          key_header="Authorization", key_prefix="Bearer ", body={"model": "v2"})
    backend = RemoteService(config, "api", 10, client=httpx.Client(transport=httpx.MockTransport(answer)),
                            sleep=waits.append)
    api = PredictionAPI([Service(ServiceConfig("api"), victim, backend)])
    api.register_owner("o")
    acc = api.open_account("o", "api")
    r = api.query("o", acc.id, POOL[:6])
    np.testing.assert_array_equal(r.outputs, np.eye(10)[victim.predict_proba(POOL[:6]).argmax(axis=1)])


# -- the predict-function adapter (what ART's BlackBoxClassifier calls) -----------------------------
def test_remote_predict_is_a_plain_probability_function(similarity_server):
    predict = remote_predict(similarity_server, key=owner_key(similarity_server, "art"), service="api", batch_size=7)
    x = POOL[100:120]  # ART calls it with a float array of shape (batch, *input_shape)
    out = predict(x)
    assert out.shape == (20, 10)
    # the server answers in batches of 7, the reference in one batch of 20: CPU kernels may round differently by
    # batch size (seen: 1e-6 apart), so the answers must agree to float32 precision, not bit for bit
    np.testing.assert_allclose(out, load_victim("digits-cnn").predict_proba(x), rtol=1e-4, atol=1e-6)


# -- the scenario's remote block --------------------------------------------------------------------
@pytest.mark.parametrize("change, path, words", [
    ({"retriez": 3}, "services.0.remote.retriez", "unknown field"),
    ({"url": "ftp://x"}, "services.0.remote", "http:// or https://"),
    ({"key": "both-key-and-key-env"}, "services.0.remote", "exactly one of key and key_env"),
    ({"protocol": "grpc"}, "services.0.remote.protocol", "extractgym"),
])
def test_a_bad_remote_block_is_named_by_its_path(change, path, words):
    data = load_scenario("digits-remote").model_dump(mode="json")
    data["services"][0]["remote"].update(change)
    with pytest.raises(ScenarioError) as e:
        load_scenario(data)
    assert path in str(e.value) and words in str(e.value)


def test_benign_customers_cannot_use_a_remote_service():
    data = load_scenario("digits-remote").model_dump(mode="json")
    data["benign"] = [{"dataset": "digits"}]
    with pytest.raises(ScenarioError, match="benign.0.service: benign customers cannot use a remote service"):
        load_scenario(data)


def test_a_remote_scenario_and_its_backend_pickle_without_their_connection():
    import pickle

    scenario = load_scenario("digits-remote")
    assert pickle.loads(pickle.dumps(scenario)) == scenario
    backend = RemoteService(scenario.services[0].remote, "api", 10)
    backend.client  # noqa: B018  # opens its own connection pool
    clone = pickle.loads(pickle.dumps(backend))
    assert clone.config == backend.config and clone._client is None
