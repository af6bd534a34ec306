"""League specs: validated before any episode (exit 2, the bad field's path named); cells, seeds and ids."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from extractgym.cli import app
from extractgym.league.cells import episode_seed, expand
from extractgym.league.spec import LeagueError, load_league, read_spec, shipped_leagues

WIDE = {"COLUMNS": "400"}
SHIPPED = shipped_leagues()


def invoke_tournament(tmp_path: Path, spec: dict) -> tuple[int, str, Path]:
    path = tmp_path / "league.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tournament", str(path), "--out", str(out), "--workers", "0"], env=WIDE)
    return result.exit_code, result.output, out


def assert_fails_before_any_episode(tmp_path: Path, spec: dict, *needles: str) -> str:
    code, output, out = invoke_tournament(tmp_path, spec)
    assert code == 2, output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in output, f"{needle!r} not in:\n{output}"
    assert not (out / "results.jsonl").exists(), "a bad spec must fail before the first episode"
    return output


# -- shipped leagues -----------------------------------------------------------------------------
def test_shipped_leagues_include_digits_and_text():
    assert any("digits" in name for name in SHIPPED)
    texts = []
    for name in SHIPPED:
        raw, _ = read_spec(name)
        texts += [s for s in raw["scenarios"] if "text" in (s if isinstance(s, str) else s["scenario"])]
    assert texts, "one shipped league includes a text scenario"


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_league_validates_every_cell(name):
    spec, base_dir = load_league(name)
    cells = expand(spec, base_dir)
    assert len(cells) == len(spec.attackers) * len(spec.defenders) * len(spec.scenarios) * spec.seeds
    assert spec.description
    result = CliRunner().invoke(app, ["tournament", name, "--dry-run"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert "every cell is valid" in result.output


def test_digits_league_has_honest_seeds_within_the_old_budget():
    """Five attackers x six defenders x two scenarios at 5 seeds: the 294 cells of the 7 x 7 x 2 x 3 league it
    replaced, spent on seeds that give the intervals their measured coverage (test_league_verdicts.py)."""
    spec, _ = load_league("digits-league")
    assert len(spec.attackers) >= 5 and len(spec.defenders) >= 6 and len(spec.scenarios) == 2 and spec.seeds >= 5
    assert len(spec.attackers) * len(spec.defenders) * len(spec.scenarios) * spec.seeds <= 300


def test_list_shows_the_leagues():
    result = CliRunner().invoke(app, ["list"], env=WIDE)
    assert result.exit_code == 0
    for name in SHIPPED:
        assert name in result.output


# -- bad input: exit 2, the path named, nothing played -------------------------------------------
def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\nattackers: [\n")
    result = CliRunner().invoke(app, ["tournament", str(path), "--out", str(tmp_path / "out")], env=WIDE)
    assert result.exit_code == 2 and "malformed YAML" in result.output and "Traceback" not in result.output


def test_unknown_field_names_its_path(tmp_path, tiny_league):
    spec = tiny_league()
    spec["attackers"][1]["bodyy"] = "random"
    assert_fails_before_any_episode(tmp_path, spec, "attackers.1.bodyy", "unknown field")


def test_unknown_contestant_body_names_its_path(tmp_path, tiny_league):
    spec = tiny_league()
    spec["defenders"][1]["body"] = "no-such-defence"
    assert_fails_before_any_episode(tmp_path, spec, "defenders.1 (rs) x scenarios.0 (digits-basic)",
                                    "unknown defender 'no-such-defence'")


def test_unknown_parameter_names_the_contestant_and_the_parameter(tmp_path, tiny_league):
    spec = tiny_league()
    spec["attackers"][0]["params"] = {"querys_per_round": 5}
    assert_fails_before_any_episode(tmp_path, spec, "attackers.0 (rand) x scenarios.0 (digits-basic)",
                                    "attackers.0.params.querys_per_round: unknown parameter")


def test_unknown_scenario_names_its_path(tmp_path, tiny_league):
    spec = tiny_league()
    spec["scenarios"].append("no-such-scenario")
    assert_fails_before_any_episode(tmp_path, spec, "scenarios.1.scenario", "unknown scenario 'no-such-scenario'")


def test_incompatible_pairing_is_named_by_contestant_and_scenario(tmp_path, tiny_league):
    spec = tiny_league()
    spec["attackers"] += [{"name": "pgd", "body": "jba-pgd"},                               # image-only body: the schema says so
                          {"name": "pgd-digits", "body": "jba-pgd", "params": {"pool": "digits"}}]  # schema
    spec["scenarios"].append({"scenario": "text-sentiment", "overrides": {"rounds": 1},
                              "attacker_params": {"pool": "guardian"}})
    out = assert_fails_before_any_episode(tmp_path, spec, "attackers.2 (pgd) x scenarios.1 (text-sentiment)",
                                          "attacks image models",
                                          "attackers.3 (pgd-digits) x scenarios.1 (text-sentiment)",
                                          "attackers.0.params.pool")  # the field inside the cell's scenario
    assert "attackers.0 (rand) x" not in out, "the random attacker gets the text scenario's pool: valid"
    assert "scenarios.0 (digits-basic)" not in out


def test_incompatible_tactic_names_the_pairing(tmp_path, tiny_league):
    spec = tiny_league(scenarios=["digits-basic", {"scenario": "text-sentiment", "name": "text",
                                                   "attacker_params": {"pool": "guardian"}}])
    spec["attackers"][0]["tactics"] = {"blinding": {"transform": "scale"}}
    assert_fails_before_any_episode(tmp_path, spec, "attackers.0 (rand) x scenarios.1 (text)",
                                    "tactics.blinding.transform")


def test_scenario_params_nobody_accepts_are_a_typo(tmp_path, tiny_league):
    spec = tiny_league()
    spec["scenarios"][0]["attacker_params"] = {"queries_per_rund": 20}
    assert_fails_before_any_episode(tmp_path, spec, "scenarios.0.attacker_params.queries_per_rund",
                                    "no attacker of the league accepts it")


def test_duplicate_names_are_refused(tmp_path, tiny_league):
    spec = tiny_league()
    spec["defenders"][1]["name"] = "none"
    assert_fails_before_any_episode(tmp_path, spec, "defenders.1.name", "already used by defenders.0")


def test_bad_payoffs_are_refused(tmp_path, tiny_league):
    spec = tiny_league(payoff={"attacker": "zero-sum"})
    assert_fails_before_any_episode(tmp_path, spec, "payoff.attacker")
    spec = tiny_league(payoff={"attacker": {}})
    assert_fails_before_any_episode(tmp_path, spec, "payoff.attacker", "at least one figure")


def test_unknown_payoff_figure_fails_before_any_episode(tmp_path, tiny_league):
    spec = tiny_league(payoff={"attacker": {"fidelity": 1.0, "no_such_figure": 2.0}})
    assert_fails_before_any_episode(tmp_path, spec, "payoff.attacker.no_such_figure", "no such figure")


def test_missing_required_fields_and_bad_types(tmp_path, tiny_league):
    spec = tiny_league()
    del spec["attackers"]
    spec["seeds"] = 0
    assert_fails_before_any_episode(tmp_path, spec, "attackers: Field required", "seeds:")


def test_unknown_backend_exits_2(tmp_path, tiny_league):
    path = tmp_path / "league.yaml"
    path.write_text(yaml.safe_dump(tiny_league()))
    result = CliRunner().invoke(app, ["tournament", str(path), "--backend", "mpi"], env=WIDE)
    assert result.exit_code == 2 and "unknown backend" in result.output


# -- cells, seeds and ids ------------------------------------------------------------------------
def cells_of(spec: dict):
    s, base = load_league(spec)
    return expand(s, base)


def test_all_pairs_of_a_scenario_and_replicate_play_the_same_seed(tiny_league):
    cells = cells_of(tiny_league(seeds=3))
    by_rep: dict[int, set[int]] = {}
    for c in cells:
        by_rep.setdefault(c.replicate, set()).add(c.seed)
    assert all(len(seeds) == 1 for seeds in by_rep.values())
    assert len({next(iter(s)) for s in by_rep.values()}) == 3, "replicates play different seeds"
    assert {c.seed for c in cells} == {episode_seed(3, "digits-basic", r) for r in range(3)}


def test_adding_a_contestant_changes_no_other_cell(tiny_league):
    def key(c):
        return c.scenario, c.attacker, c.defender, c.replicate

    before = {key(c): (c.id, c.seed, c.config) for c in cells_of(tiny_league())}
    spec = tiny_league()
    spec["attackers"].insert(0, {"name": "kc", "body": "k-center"})
    spec["defenders"].insert(1, {"name": "mad", "body": "mad"})
    after = {key(c): (c.id, c.seed, c.config) for c in cells_of(spec)}
    assert len(after) == 3 * 3 * 2
    for key, value in before.items():
        assert after[key] == value


def test_ids_depend_on_what_is_played_not_on_names(tiny_league):
    base = {(c.attacker, c.defender, c.replicate): c.id for c in cells_of(tiny_league())}
    assert len(set(base.values())) == len(base)
    renamed = tiny_league()
    renamed["attackers"][0]["name"] = "random-sampler"
    ids = {(c.attacker, c.defender, c.replicate): c.id for c in cells_of(renamed)}
    assert ids[("random-sampler", "none", 0)] == base[("rand", "none", 0)]
    changed = tiny_league()
    changed["attackers"][0]["params"] = {"labels": "hard"}
    ids = {(c.attacker, c.defender, c.replicate): c.id for c in cells_of(changed)}
    assert ids[("rand", "none", 0)] != base[("rand", "none", 0)]
    assert ids[("unc", "none", 0)] == base[("unc", "none", 0)]
    reseeded = tiny_league(seed=4)
    assert not set(c.id for c in cells_of(reseeded)) & set(base.values())


def test_a_field_the_schema_gains_at_its_default_does_not_change_ids(tiny_league, monkeypatch):
    """Cells are keyed on the fields set away from their defaults: when the scenario schema gains a field (here a
    subclass with one more), rows already played keep their ids."""
    from extractgym.scenarios import schema

    base = {(c.attacker, c.defender, c.replicate): c.id for c in cells_of(tiny_league())}

    class Grown(schema.Scenario):
        future: int = 0

    load = schema.load_scenario
    def grown_load(data):
        return Grown.model_validate(load(data).model_dump())

    monkeypatch.setattr(schema, "load_scenario", grown_load)
    grown = {(c.attacker, c.defender, c.replicate): c.id for c in cells_of(tiny_league())}
    assert grown == base  # (a field set away from its default re-keys: test_ids_depend_on_what_is_played...)


def test_a_contestant_fills_seat_zero_and_the_scenario_keeps_the_rest(tiny_league):
    spec = tiny_league(scenarios=[{"scenario": "digits-defended", "overrides": {"rounds": 1}}])
    cells = cells_of(spec)
    c = next(c for c in cells if c.attacker == "unc" and c.defender == "rs")
    cfg = c.config
    assert cfg["attackers"][0]["body"] == "uncertainty"
    assert cfg["attackers"][1]["body"] == "random" and cfg["attackers"][1]["params"]["labels"] == "hard"
    assert cfg["attackers"][0]["budget"] == {"queries": 320, "money": 10.0, "accounts": 2}
    assert cfg["defenders"][0]["body"] == "reverse-sigmoid" and cfg["defenders"][0]["params"] == {}
    assert cfg["rounds"] == 1 and cfg["seed"] == c.seed


def test_scenario_params_reach_only_bodies_that_accept_them(tiny_league):
    spec = tiny_league()
    # only `random` has `combine`
    spec["scenarios"][0]["attacker_params"] = {"queries_per_round": 7, "combine": "average"}
    spec["attackers"][1]["params"] = {"queries_per_round": 9}                           # own params win
    cells = {c.attacker: c.config["attackers"][0]["params"] for c in cells_of(spec)}
    assert cells["rand"] == {"queries_per_round": 7, "combine": "average"}
    assert cells["unc"] == {"queries_per_round": 9}


def test_brains_pass_through_to_the_seat(tiny_league):
    spec = tiny_league()
    spec["attackers"][0]["brain"] = "random"
    spec["defenders"][1]["brain"] = {"kind": "preset", "knobs": {"beta": 0.0}}
    cells = cells_of(spec)
    rand = next(c for c in cells if c.attacker == "rand" and c.defender == "rs")
    assert rand.config["attackers"][0]["brain"]["kind"] == "random"
    brain = rand.config["defenders"][0]["brain"]  # the validated spec: every other field at its default
    assert {k: brain[k] for k in ("kind", "knobs")} == {"kind": "preset", "knobs": {"beta": 0.0}}
    assert not brain["params"] and brain.get("policy") is None
    bad = copy.deepcopy(spec)
    bad["defenders"][1]["brain"] = {"kind": "preset", "knobs": {"beta": 12345.0}}
    where = r"defenders.1 \(rs\) x scenarios.0 \(digits-basic\): defenders.0.brain.knobs.beta"
    with pytest.raises(LeagueError, match=where):
        cells_of(bad)


def test_scenario_paths_are_relative_to_the_spec(tmp_path, tiny_league):
    from extractgym.scenarios.schema import read_yaml, shipped_scenarios

    scen = read_yaml(shipped_scenarios()["digits-basic"])
    scen["name"] = "my-digits"
    (tmp_path / "scen").mkdir()
    (tmp_path / "scen" / "mine.yaml").write_text(yaml.safe_dump(scen))
    spec = tiny_league(scenarios=[{"scenario": "scen/mine.yaml", "overrides": {"rounds": 1}}])
    (tmp_path / "league.yaml").write_text(yaml.safe_dump(spec))
    s, base = load_league(tmp_path / "league.yaml")
    cells = expand(s, base)
    assert {c.scenario for c in cells} == {"mine"} and cells[0].config["name"] == "my-digits"


def test_learned_policy_paths_resolve_against_the_spec_and_key_the_cells(tmp_path):
    """Learned brains (``{policy: PATH}``, the RL issue's seat brain) enter a league by path: a relative path is
    read relative to the spec file, and the file's digest is part of the cell id, so a retrained policy under
    the same path makes new cells."""
    from extractgym.league.cells import _policy_digests, _resolve_brain

    (tmp_path / "policies").mkdir()
    policy = tmp_path / "policies" / "ppo.zip"
    policy.write_bytes(b"weights v1")
    brain = _resolve_brain({"policy": "policies/ppo.zip", "deterministic": True}, tmp_path)
    assert brain == {"policy": str(policy.resolve()), "deterministic": True}
    assert _resolve_brain({"policy": "elsewhere.zip"}, tmp_path) == {"policy": "elsewhere.zip"}  # left to the schema
    assert _resolve_brain("preset", tmp_path) == "preset"
    first = _policy_digests([brain, "preset", {"kind": "random"}])
    assert list(first) == [str(policy.resolve())]
    policy.write_bytes(b"weights v2")
    assert _policy_digests([brain]) != first


def test_an_isolated_contestants_body_file_keys_the_cells(tmp_path):
    """A contestant's ``code`` file lies outside the package (the fingerprint does not cover it): its digest is in
    the cell key, so an edited body under the same path makes new cells."""
    from extractgym.league.cells import _code_digests

    body = tmp_path / "mine.py"
    body.write_text("X = 1\n")
    seats = [{"body": "mine", "code": str(body)}, {"body": "none"}, {"body": "gone", "code": str(tmp_path / "no.py")}]
    first = _code_digests(seats)
    assert list(first) == [str(body)]
    body.write_text("X = 2\n")
    assert _code_digests(seats) != first
