"""Shared fixtures. Trained victims are cached on disk (``$EXTRACTGYM_CACHE``), so only the first test pays."""

from __future__ import annotations

import pytest

from extractgym.scenarios.schema import read_yaml, shipped_scenarios

# Scenarios whose services answer from an HTTP endpoint need a server: tests/test_remote.py plays them against one.
REMOTE = sorted(n for n, path in shipped_scenarios().items()
                if any("remote" in s for s in read_yaml(path).get("services", [])))
SHIPPED = sorted(n for n in shipped_scenarios() if n not in REMOTE)


@pytest.fixture(params=SHIPPED)
def scenario_name(request: pytest.FixtureRequest) -> str:
    return request.param


def _tiny_league(**changes: object) -> dict:
    """A 2 x 2 x 1 x 2 league on digits-basic with 2 rounds of 20 queries (about a second in one process)."""
    spec = {
        "name": "tiny", "seed": 3, "seeds": 2,
        "scenarios": [{"scenario": "digits-basic", "overrides": {"rounds": 2},
                       "attacker_params": {"queries_per_round": 20}}],
        "attackers": [{"name": "rand", "body": "random"}, {"name": "unc", "body": "uncertainty"}],
        "defenders": [{"name": "none", "body": "none"}, {"name": "rs", "body": "reverse-sigmoid"}],
        "payoff": {"attacker": {"return": 1.0, "cost": -0.02}, "defender": "return"},
        "rankings": {"bootstrap": 20},
    }
    spec.update(changes)
    return spec


@pytest.fixture(scope="session")
def tiny_league():
    """A factory of tiny league specs (dicts); keyword arguments replace top-level fields."""
    return _tiny_league


@pytest.fixture(scope="session")
def played_tiny_league(tmp_path_factory, tiny_league):
    """The tiny league played once in this process (``workers=0``) with its report: ``(spec, cells, out_dir)``."""
    from extractgym.league import tournament

    out = tmp_path_factory.mktemp("tiny-league")
    spec, raw, base_dir, cells = tournament.prepare(tiny_league())
    tournament.play(spec, raw, base_dir, cells, out, workers=0)
    tournament.report(spec, raw, cells, out)
    return spec, cells, out
