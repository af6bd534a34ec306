"""Scenario files are validated at the boundary: every problem names the dotted path of its field.

Also the registries' misses and the ``extractgym`` command line (``list``, ``validate``, ``run``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from extractgym.agents import ATTACKERS, DEFENDERS
from extractgym.agents.brains import BRAINS
from extractgym.agents.registry import build, lookup
from extractgym.scenarios import ScenarioError, load_scenario, shipped_scenarios
from extractgym.cli import app
from extractgym.scenarios.runner import SUMMARY_KEYS
from extractgym.scenarios.schema import Scenario, read_yaml
from extractgym.victims.datasets import DATASETS
from extractgym.victims.zoo import VICTIMS

SHIPPED = shipped_scenarios()
WIDE = {"COLUMNS": "240"}  # rich wraps at the terminal width; keep messages on one line


def base() -> dict[str, Any]:
    return copy.deepcopy(read_yaml(SHIPPED["digits-basic"]))


def problem_lines(message: str) -> list[str]:
    return [line.strip()[2:] for line in message.splitlines() if line.strip().startswith("- ")]


def assert_names_path(message: str, path: str) -> str:
    """The message has a problem line for exactly ``path``; return that line."""
    lines = [line for line in problem_lines(message) if line.split(": ", 1)[0] == path]
    assert lines, f"no problem at {path!r} in:\n{message}"
    return lines[0]


def load_error(data: dict[str, Any]) -> str:
    with pytest.raises(ScenarioError) as e:
        load_scenario(data)
    return str(e.value)


# -- the shipped scenarios -----------------------------------------------------------------------
def test_digits_basic_is_shipped():
    assert "digits-basic" in SHIPPED


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenario_loads_and_validates(name):
    data = read_yaml(SHIPPED[name])
    s = load_scenario(name)
    assert isinstance(s, Scenario)
    assert s.name == data["name"] == name, "a shipped scenario's name is its file name"
    assert s.description, f"{name}: say what the scenario is for"
    assert s == load_scenario(SHIPPED[name]) == load_scenario(str(SHIPPED[name])) == load_scenario(data)
    assert load_scenario(s) == s
    for seat in s.attackers:
        assert seat.body in ATTACKERS
    for seat in s.defenders:
        assert seat.body in DEFENDERS
    for svc in s.services:
        assert svc.victim in VICTIMS


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_scenario_validates_on_the_command_line(name):
    result = CliRunner().invoke(app, ["validate", name], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output and name in result.output


def test_overrides_are_validated_too():
    assert load_scenario("digits-basic", rounds=3).rounds == 3
    assert_names_path(str(pytest.raises(ScenarioError, load_scenario, "digits-basic", rounds=0).value), "rounds")
    assert_names_path(str(pytest.raises(ScenarioError, load_scenario, "digits-basic", roundz=3).value), "roundz")


# -- bad fields, each named by its dotted path ---------------------------------------------------
def set_path(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    keys = [int(k) if k.isdigit() else k for k in path.split(".")]
    node = data
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    return data


BAD_FIELDS = {
    # (path to set, value, path the error must name, words the message must contain)
    "top-level typo": ("roundz", 3, "roundz", ["unknown field"]),
    "nested typo": ("services.0.pricee_per_query", 0.1, "services.0.pricee_per_query", ["unknown field"]),
    "budget typo": ("attackers.0.budget.querys", 10, "attackers.0.budget.querys", ["unknown field"]),
    "benign typo": ("benign.1.customer", 3, "benign.1.customer", ["unknown field"]),
    "reward typo": ("rewards.acuracy", 1.0, "rewards.acuracy", ["unknown field"]),
    "wrong type": ("rounds", "ten", "rounds", ["integer", "'ten'"]),
    "negative price": ("services.0.price_per_query", -1.0, "services.0.price_per_query", ["-1.0"]),
    "nan price": ("services.0.account_price", float("nan"), "services.0.account_price", []),
    "bad output format": ("services.0.output", "logits", "services.0.output", ["'logits'"]),
    "bad benign split": ("benign.0.split", "tain", "benign.0.split", ["'tain'"]),
    "wrong budget type": ("attackers.0.budget.money", "lots", "attackers.0.budget.money", ["'lots'"]),
    "unknown attacker": ("attackers.0.body", "randum", "attackers.0.body", ["'randum'", *ATTACKERS]),
    "unknown defender": ("defenders.0.body", "nonee", "defenders.0.body", ["'nonee'", *DEFENDERS]),
    "unknown victim": ("services.0.victim", "digits-cnnn", "services.0.victim", ["'digits-cnnn'", *VICTIMS]),
    "unknown param": ("attackers.0.params.querys_per_round", 40, "attackers.0.params.querys_per_round",
                      ["unknown parameter", "queries_per_round"]),
    "wrongly typed param": ("attackers.0.params.queries_per_round", "many", "attackers.0.params.queries_per_round",
                            ["'many'"]),
    "param of a body without params": ("defenders.0.params", {"k": 2}, "defenders.0.params.k",
                                       ["unknown parameter"]),
    "unknown brain": ("attackers.0.brain", "genius", "attackers.0.brain.kind", ["'genius'", *BRAINS]),
    "pin not among choices": ("attackers.0.brain", {"kind": "preset", "knobs": {"queries": 7}},
                              "attackers.0.brain.knobs.queries", ["7", "choices"]),
    "pin of an unknown knob": ("attackers.0.brain", {"kind": "random", "knobs": {"querys": 40}},
                               "attackers.0.brain.knobs.querys", ["'querys'", "queries", "service"]),
    "unknown benign dataset": ("benign.0.dataset", "digitz", "benign.0.dataset", ["'digitz'", *DATASETS]),
    "unknown benign service": ("benign.0.service", "apii", "benign.0.service", ["'apii'", "api"]),
    "unknown target service": ("attackers.0.params.target", "apii", "attackers.0.params.target", ["'apii'", "api"]),
    "unknown services entry": ("attackers.0.params.services", ["api", "apii"], "attackers.0.params.services",
                               ["'apii'"]),
    "unknown pool": ("attackers.0.params.pool", "digitz", "attackers.0.params.pool", ["'digitz'", *DATASETS]),
}


@pytest.mark.parametrize("case", list(BAD_FIELDS))
def test_bad_field_is_named_by_its_path(case):
    path, value, named, words = BAD_FIELDS[case]
    message = load_error(set_path(base(), path, value))
    line = assert_names_path(message, named)
    for w in words:
        assert w in line, f"{w!r} missing from {line!r}"


def test_a_bad_defender_parameter_value_is_reported():
    data = set_path(base(), "defenders.0", {"body": "top-k", "params": {"k": 0}})
    message = load_error(data)
    assert any(line.startswith("defenders.0.params") and "k must be >= 1" in line for line in problem_lines(message))


def test_every_problem_is_reported_at_once():
    data = base()
    set_path(data, "roundz", 1)
    set_path(data, "services.0.pricee_per_query", 1)
    message = load_error(data)
    assert_names_path(message, "roundz")
    assert_names_path(message, "services.0.pricee_per_query")
    data = base()
    set_path(data, "services.0.victim", "nope")
    set_path(data, "benign.0.dataset", "nope")
    set_path(data, "defenders.0.body", "nope")
    message = load_error(data)
    for path in ("services.0.victim", "benign.0.dataset", "defenders.0.body"):
        assert_names_path(message, path)


def test_duplicate_service_names_are_rejected():
    data = base()
    data["services"] = data["services"] * 2
    assert "unique" in assert_names_path(load_error(data), "services")


def test_valid_pins_and_params_are_accepted():
    data = set_path(base(), "attackers.0.brain", {"kind": "random", "knobs": {"queries": 20}})
    set_path(data, "defenders.0", {"body": "top-k", "params": {"k": 2}, "brain": {"knobs": {"k": 5}}})
    s = load_scenario(data)
    assert s.attackers[0].brain.kind == "random" and s.defenders[0].params == {"k": 2}


# -- files and names -----------------------------------------------------------------------------
MALFORMED = """\
name: broken
rounds: 3
services:
  - name: api
     victim: digits-cnn
"""


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text(MALFORMED)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    message = str(e.value)
    assert "line 5" in message and str(path) in message and "YAML" in message
    # the line is the one that is wrong: the same file without it loads
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(MALFORMED.replace("     victim", "    victim"))
    assert load_scenario(fixed).rounds == 3


@pytest.mark.parametrize("text, words", [("- a\n- list\n", ["mapping", "list"]), ("", ["mapping", "NoneType"]),
                                         ("just a string\n", ["mapping", "str"])])
def test_a_scenario_must_be_a_mapping(tmp_path, text, words):
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as e:
        load_scenario(path)
    for w in words:
        assert w in str(e.value)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(ScenarioError) as e:
        load_scenario(tmp_path / "absent.yaml")
    assert "absent.yaml" in str(e.value)
    with pytest.raises(ScenarioError) as e:
        load_scenario("no-such-scenario")
    assert "no-such-scenario" in str(e.value)
    for name in SHIPPED:
        assert name in str(e.value)


def test_scenario_error_is_a_value_error():
    assert issubclass(ScenarioError, ValueError)


@pytest.mark.parametrize("table, kind", [(ATTACKERS, "attacker"), (DEFENDERS, "defender")])
def test_registry_miss_lists_the_known_keys(table, kind):
    with pytest.raises(ValueError) as e:
        lookup(table, kind, "no-such-body")
    message = str(e.value)
    assert "no-such-body" in message and kind in message
    for key in table:
        assert key in message
    for key, cls in table.items():
        assert lookup(table, kind, key) is cls


def test_build_names_unknown_parameters():
    with pytest.raises(ValueError) as e:
        build(DEFENDERS, "defender", "top-k", {"kk": 2})
    assert "kk" in str(e.value) and "k" in str(e.value).split("accepted:")[1]
    with pytest.raises(ValueError) as e:
        build(DEFENDERS, "defender", "none", {"x": 1})
    assert "(none)" in str(e.value)


# -- the command line ----------------------------------------------------------------------------
def test_cli_list_shows_what_is_registered():
    result = CliRunner().invoke(app, ["list"], env=WIDE)
    assert result.exit_code == 0, result.output
    for word in ("digits-basic", "random", "none", "digits-cnn", *SHIPPED, *ATTACKERS, *DEFENDERS, *VICTIMS):
        assert word in result.output, word


@pytest.mark.parametrize("case", ["unknown param", "pin not among choices", "unknown victim", "nested typo"])
def test_cli_validate_bad_yaml_exits_2_naming_the_field(tmp_path, case):
    path, value, named, _ = BAD_FIELDS[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(set_path(base(), path, value)))
    result = CliRunner().invoke(app, ["validate", str(bad)], env=WIDE)
    assert result.exit_code == 2, result.output
    assert named in result.output
    assert "Traceback" not in result.output and "File \"" not in result.output


def test_cli_validate_malformed_yaml(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text(MALFORMED)
    result = CliRunner().invoke(app, ["validate", str(bad)], env=WIDE)
    assert result.exit_code == 2 and "line 5" in result.output and "Traceback" not in result.output


def test_cli_run_rejects_a_bad_scenario_cleanly(tmp_path):
    result = CliRunner().invoke(app, ["run", "no-such-scenario", "--out", str(tmp_path)], env=WIDE)
    assert result.exit_code == 2 and "no-such-scenario" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "summary.json").exists()


RATES = ("victim_accuracy", "defended_accuracy", "attacker_accuracy", "fidelity", "false_positive_rate")
COUNTS = ("queries", "accounts_created", "accounts_banned", "benign_accounts", "benign_accounts_banned")


def test_cli_run_writes_the_summary(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "digits-basic", "--rounds", "2", "--out", str(out)], env=WIDE)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    missing = [k for k in SUMMARY_KEYS if k not in summary]
    assert not missing, missing
    s = load_scenario("digits-basic")
    assert summary["scenario"] == "digits-basic" and summary["seed"] == s.seed and summary["rounds"] == 2
    for k in RATES:
        assert isinstance(summary[k], float) and 0.0 <= summary[k] <= 1.0, (k, summary[k])
    for k in COUNTS:
        assert isinstance(summary[k], int) and summary[k] >= 0, (k, summary[k])
    assert summary["cost"] >= 0 and summary["wall_seconds"] > 0
    assert summary["benign_accounts_banned"] <= summary["benign_accounts"]
    assert summary["accounts_banned"] <= summary["accounts_created"]
    # the scenario's budgets hold
    budgets = [a.budget for a in s.attackers]
    assert summary["benign_accounts"] == sum(b.customers for b in s.benign)
    if all(b.queries is not None for b in budgets):
        assert summary["queries"] <= sum(b.queries for b in budgets)
    if all(b.money is not None for b in budgets):
        assert summary["cost"] <= sum(b.money for b in budgets) + 1e-9
    if all(b.accounts is not None for b in budgets):
        assert summary["accounts_created"] <= sum(b.accounts for b in budgets)
    # the table printed the figures and the file's location
    for k in SUMMARY_KEYS[2:]:
        assert k in result.output
    assert "summary.json" in result.output
