"""Contract: every operation of the served API, called with generated requests (schemathesis), answers as its
OpenAPI spec says (documented status codes and headers, conforming bodies, never a 5xx)."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.generation.meta import ParameterLocation

from extractgym.serve import ServerConfig, ServiceServer
from extractgym.serve.app import BodyLimit, create_app

ADMIN_KEY = "contract-admin-key"
SCENARIO = {"name": "contract", "description": "contract tests",
            "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01, "account_price": 1.0,
                          "rate_limit": 50}],
            "attackers": [{"body": "random", "budget": {"queries": 500, "money": 20.0, "accounts": 50}}]}


# The spec is the routes', so the app is made at import (schemathesis reads the spec at collection) and its
# server, which trains or loads the victim, only when the first test here runs.
APP = create_app(None)
schema = schemathesis.openapi.from_asgi("/openapi.json", BodyLimit(APP))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    server = ServiceServer(ServerConfig(SCENARIO, tmp_path_factory.mktemp("contract") / "books.db",
                                        admin_key=ADMIN_KEY, owner_keys={"attacker_0": "contract-owner-key"}))
    APP.state.server = server
    account = TestClient(APP).post("/v1/accounts", json={"service": "api"},
                                   headers={"X-Owner-Key": "contract-owner-key"}).json()["api_key"]
    yield {"X-API-Key": account, "X-Owner-Key": "contract-owner-key", "X-Admin-Key": ADMIN_KEY}
    server.close()


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_its_openapi_contract(case, served):
    # valid keys for every operation, so generated requests get past authentication to the bodies they test
    # (except where schemathesis itself drops or mangles headers: then it expects the 401)
    keys = {} if case.meta is not None and case.meta.is_negative_at(ParameterLocation.HEADER) else served
    case.call_and_validate(headers={**keys, **(case.headers or {})})


def test_the_spec_documents_the_keys_and_the_error_codes(served):
    spec = TestClient(APP).get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"AccountKey", "OwnerKey", "AdminKey"}
    predict = spec["paths"]["/v1/services/{name}/predict"]["post"]
    assert {"401", "402", "403", "404", "413", "422", "429"} <= set(predict["responses"])
    assert "Retry-After" in predict["responses"]["429"]["headers"]
