"""Bad input and faults of every kind the seat-boundary issue names: each gives a named error (exit code 2 on the
command line), no traceback, nothing written, nothing charged.

Kinds: scenario files (YAML that expands without bound, deep nesting, bytes that are not UTF-8, money budgets too
large for the arithmetic, names that are paths, NaN reward weights), queries (array subclasses that hide NaN,
zero-copy views too large to read), the cache (truncated, empty or garbage entries; folders that cannot be used),
and "validate catches what run would reject".
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from extractgym.envs.api import Budget, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import InvalidQuery
from extractgym.scenarios import ScenarioError, load_scenario
from extractgym.cli import app
from extractgym.victims.base import InputSpec

WIDE = {"COLUMNS": "240"}


def _cli(*args: str, cwd: Path | None = None):
    return CliRunner().invoke(app, list(args), env=WIDE, catch_exceptions=False)


def _validate_fails(tmp_path: Path, text: str | bytes, *words: str, seconds: float = 10.0) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    start = time.perf_counter()
    result = _cli("validate", str(path))
    assert time.perf_counter() - start < seconds  # bounded work, not a hang (a generous bound, not a benchmark)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, result.output
    assert len(result.output) < 4000  # errors never echo unbounded input


# -- scenario files --------------------------------------------------------------------------------------------------
def test_yaml_anchors_that_expand_to_megabytes_are_refused_quickly(tmp_path: Path) -> None:
    lines = ['name: bomb', 'a0: &a0 ["xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"]']
    for i in range(1, 25):
        lines.append(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]")
    lines.append("description: *a24")
    _validate_fails(tmp_path, "\n".join(lines), "expands to more than")


def test_deeply_nested_yaml_is_refused(tmp_path: Path) -> None:
    _validate_fails(tmp_path, "name: deep\nrewards: " + "[" * 5000 + "]" * 5000, "nested")


def test_a_file_that_is_not_utf8_is_refused_naming_the_byte(tmp_path: Path) -> None:
    _validate_fails(tmp_path, b"name: caf\xe9\nrounds: 2\n", "not UTF-8", "byte 9")


def test_an_oversized_file_is_refused(tmp_path: Path) -> None:
    _validate_fails(tmp_path, "name: big\ndescription: '" + "x" * (1 << 21) + "'\n", "at most")


@pytest.mark.parametrize("field, value, path", [
    ("name", "../../escape", "name"),
    ("name", "a b", "name"),
    ("rewards", {"accuracy": float("nan")}, "rewards.accuracy"),
    ("rewards", {"cost": float("inf")}, "rewards.cost"),
])
def test_unsafe_names_and_non_finite_weights_are_refused(tmp_path: Path, field: str, value, path: str) -> None:
    data = yaml.safe_load(Path(__file__).parent.joinpath("..", "scenarios", "data", "digits-basic.yaml").read_text())
    data[field] = value
    _validate_fails(tmp_path, yaml.safe_dump(data), f"{path}:")
    assert not Path("runs/escape-seed0").exists()


def test_a_money_budget_too_large_for_the_arithmetic_is_refused_and_large_ones_still_play(tmp_path: Path) -> None:
    data = yaml.safe_load(Path(__file__).parent.joinpath("..", "scenarios", "data", "digits-basic.yaml").read_text())
    data["attackers"][0]["budget"]["money"] = 1e300
    _validate_fails(tmp_path, yaml.safe_dump(data), "attackers.0.budget.money")
    # the largest accepted budget with the smallest positive price: the API's arithmetic must not overflow
    api = PredictionAPI([Service(ServiceConfig("s", price_per_query=1e-300), _Tiny())])
    api.register_owner("a", Budget(money=1e12))
    acc = api.open_account("a", "s")
    assert api.affordable("a", acc.id, 7).n == 7


# -- queries -------------------------------------------------------------------------------------------------------
class _Tiny:
    name, n_classes = "tiny", 2
    input_spec = InputSpec(kind="image", shape=(4,))

    def predict_proba(self, x):
        return np.full((len(x), 2), 0.5)


def _state(api: PredictionAPI):
    return ({o: dataclasses.replace(w) for o, w in api.wallets.items()}, len(api.ledger))


def test_a_masked_array_cannot_smuggle_nan_past_validation() -> None:
    api = PredictionAPI([Service(ServiceConfig("s", price_per_query=0.1), _Tiny())])
    api.register_owner("a", Budget(queries=100))
    acc = api.open_account("a", "s")
    x = np.ma.masked_invalid(np.array([[0.5, np.nan, 0.5, 0.5]], dtype=np.float32))
    before = _state(api)
    with pytest.raises(InvalidQuery, match="NaN"):
        api.query("a", acc.id, x)
    assert _state(api) == before


def test_a_huge_zero_copy_view_is_refused_before_it_is_read() -> None:
    api = PredictionAPI([Service(ServiceConfig("s"), _Tiny())])
    api.register_owner("a", Budget(queries=100))
    acc = api.open_account("a", "s")
    huge = np.broadcast_to(np.full((1, 4), 0.5, dtype=np.float32), (10**9, 4))  # 16 GB if anything read it all
    before = _state(api)
    with pytest.raises(InvalidQuery, match="at most"):
        api.query("a", acc.id, huge)
    assert _state(api) == before


# -- the cache -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", [b"", b"garbage" * 10, "truncate"])
def test_an_unreadable_cached_victim_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    from extractgym.victims.zoo import VICTIMS, build_victim

    monkeypatch.setenv("EXTRACTGYM_CACHE", str(tmp_path))
    good = build_victim(VICTIMS["digits-mlp"], seed=3, name="digits-mlp")
    (entry,) = (tmp_path / "victims").glob("digits-mlp-*.pt")
    blob = entry.read_bytes()
    entry.write_bytes(blob[: len(blob) // 2] if damage == "truncate" else damage)
    with pytest.warns(UserWarning, match="unreadable"):
        again = build_victim(VICTIMS["digits-mlp"], seed=3, name="digits-mlp")
    x = np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(again.predict_proba(x), good.predict_proba(x))
    assert entry.read_bytes() == blob  # replaced by a good entry
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_victim(VICTIMS["digits-mlp"], seed=3, name="digits-mlp")  # and read back without a warning


@pytest.mark.parametrize("where", ["file-in-the-way", "/proc/extractgym-cache"])
def test_a_cache_folder_that_cannot_be_used_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        where: str) -> None:
    import extractgym.victims.cache as cache
    from extractgym.victims.zoo import VICTIMS, build_victim

    target = tmp_path / "blocked" if where == "file-in-the-way" else Path(where)
    if where == "file-in-the-way":
        target.write_text("not a folder")
    monkeypatch.setenv("EXTRACTGYM_CACHE", str(target))
    monkeypatch.setattr(cache, "_FALLBACK", None)
    with pytest.warns(UserWarning, match="cannot be used"):
        victim = build_victim(VICTIMS["digits-mlp"], seed=4, name="digits-mlp")
    assert victim.predict_proba(np.zeros((1, 1, 8, 8), np.float32)).shape == (1, 10)


# -- validate catches what run would reject --------------------------------------------------------------------------
@pytest.mark.parametrize("attackers, path, words", [
    ([{"body": "jba-pgd", "params": {"pool": "guardian"}}], "attackers.0.body", "attacks image models"),
    ([{"body": "random"}], "attackers.0.params.pool", "not valid queries"),  # the default pool is digits images
    ([{"body": "dfme"}], "attackers.0.body", "attacks image models"),
])
def test_validate_rejects_what_a_run_would_reject(attackers: list, path: str, words: str) -> None:
    with pytest.raises(ScenarioError) as e:
        load_scenario("text-sentiment", attackers=attackers)
    assert f"{path}: " in str(e.value) and words in str(e.value)


def test_run_with_bad_input_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: ok\nrounds: 1\nattackers: [{body: jba-pgd, params: {pool: guardian}}]\n"
                   "services: [{name: api, victim: minilm-sentiment}]\n")
    out = tmp_path / "out"
    result = _cli("run", str(bad), "--out", str(out))
    assert result.exit_code == 2 and "attackers.0.body" in result.output and "Traceback" not in result.output
    assert not out.exists()
