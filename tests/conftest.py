"""Shared fixtures. Trained victims are cached on disk (``$EXTRACTGYM_CACHE``), so only the first test pays."""

from __future__ import annotations

import pytest

from extractgym.scenarios.schema import shipped_scenarios

SHIPPED = sorted(shipped_scenarios())


@pytest.fixture(params=SHIPPED)
def scenario_name(request: pytest.FixtureRequest) -> str:
    return request.param
