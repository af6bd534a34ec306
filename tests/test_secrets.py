"""Secrets that stay secret (issue 22): a contest task whose victim and test set cannot be rebuilt from the package.

Before: on digits, the packaged victim's weights scored fidelity 1.0 in contest mode and a model fitted on the public
test split scored accuracy 1.0, without a query. On ``contest-digits`` (victim ``digits-secret-cnn``: labels,
input noise, split and weights from the operator's secret) those submissions score no better than the no-query
baseline, and 500 bought answers score far above it. Every result comes back beside the baseline and the threat
model.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from extractgym.scenarios import ScenarioError, load_scenario
from extractgym.serve import ServerConfig, ServiceServer
from extractgym.serve.app import serve_app
from extractgym.victims.datasets import get_dataset, load_digits_secret
from extractgym.victims.models import build_model
from extractgym.victims.secret import PUBLIC_KEY
from extractgym.victims.snapshot import ModelSnapshot
from extractgym.victims.training import TrainConfig, train_classifier
from extractgym.victims.zoo import VICTIMS, build_victim, load_victim

OWNER = {"X-Owner-Key": "owner-key-0"}


def test_another_key_makes_another_task() -> None:
    secret, public = load_digits_secret(), load_digits_secret(PUBLIC_KEY)
    x, y = secret.split("test")
    assert x.shape == (360, 1, 8, 8) and set(np.unique(y)) == set(range(10))
    assert max(np.bincount(y)) / len(y) < 0.2  # balanced: a constant guess is near chance
    # the same images under another key: other labels (about chance), other noise, another split
    _, y_all_secret = secret.split("all")
    assert not np.array_equal(secret.x_test, public.x_test)
    digits = get_dataset("digits")
    assert not any(np.array_equal(x[0], d) for d in digits.split("all")[0])  # secret inputs, not sklearn's own


@pytest.fixture(scope="module")
def contest(tmp_path_factory) -> tuple[ServiceServer, TestClient]:
    server = ServiceServer(ServerConfig("contest-digits", tmp_path_factory.mktemp("contest") / "books.db",
                                        admin_key="test-admin-key", owner_keys={"attacker_0": OWNER["X-Owner-Key"]},
                                        max_submissions=10))
    yield server, TestClient(serve_app(server))
    server.close()


def _submit(client: TestClient, model, arch: str) -> dict:
    r = client.post("/v1/submissions", content=ModelSnapshot.of(model, arch, 10, (1, 8, 8)).to_bytes(),
                    headers={**OWNER, "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return r.json()


def test_public_data_scores_no_better_than_the_baseline_and_500_queries_far_above(contest) -> None:
    server, client = contest
    # what a contestant without queries can submit: the packaged victim (built from the package, which has no
    # secret), the public digits victim, and a differently seeded model fitted on every public digit
    packaged = build_victim(VICTIMS["digits-secret-cnn"], 0, name="digits-secret-cnn-public", key=PUBLIC_KEY)
    public_digits = load_victim("digits-cnn")
    x_pub, y_pub = get_dataset("digits").split("all")
    fitted = build_model("mlp", 10, (1, 8, 8), seed=7)
    train_classifier(fitted, x_pub, y_pub, TrainConfig(epochs=40, lr=2e-3), seed=7)
    scores = [_submit(client, packaged.model, "digits-cnn"), _submit(client, public_digits.model, "digits-cnn"),
              _submit(client, fitted, "mlp")]
    base = scores[0]["baseline"]
    assert base["fidelity"] < 0.35 and base["accuracy"] < 0.35, base  # a secret task: public data gives little
    assert "secret task" in scores[0]["threat_model"]
    for s in scores:
        assert s["fidelity"] <= base["fidelity"] + 0.05 and s["accuracy"] <= base["accuracy"] + 0.05, (s, base)
    # a 500-query extraction: natural digits bought with probabilities through the API, a surrogate fitted on them
    r = client.post("/v1/accounts", json={"service": "api"}, headers=OWNER)
    key = {"X-API-Key": r.json()["api_key"]}
    x = get_dataset("digits").split("pool")[0]
    x = np.concatenate([x, get_dataset("digits").split("train")[0]])[:500]
    outputs = []
    for i in range(0, 500, 100):
        r = client.post("/v1/services/api/predict", json={"inputs": x[i:i + 100].tolist()}, headers=key)
        assert r.status_code == 200, r.text
        outputs.append(np.asarray(r.json()["outputs"], dtype=np.float32))
    surrogate = build_model("digits-cnn", 10, (1, 8, 8), seed=3)
    train_classifier(surrogate, x, np.concatenate(outputs), TrainConfig(epochs=100, lr=2e-3), seed=3)
    extracted = _submit(client, surrogate, "digits-cnn")
    assert extracted["fidelity"] > base["fidelity"] + 0.4, (extracted, base)
    assert extracted["accuracy"] > base["accuracy"] + 0.3, (extracted, base)
    assert server.api.wallets["attacker_0"].queries == 500


def test_the_shipped_contest_scenario_reports_the_baseline_beside_its_result() -> None:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    summary = play_episode(make_env("contest-digits"))
    base = summary["no_query_baseline"]["api"]
    assert set(base["strategies"]) == {"packaged", "public-fit", "constant"}
    assert summary["queries"] == 500 and summary["fidelity"] > base["fidelity"] + 0.4, (summary["fidelity"], base)
    assert "secret" in summary["threat_model"]["api"]


def test_attackers_cannot_name_the_secret_task_as_their_data() -> None:
    with pytest.raises(ScenarioError, match="attackers.0.params.pool: 'digits-secret' is a secret task"):
        load_scenario("contest-digits", attackers=[{"body": "random", "params": {"pool": "digits-secret"}}])
