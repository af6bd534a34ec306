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
