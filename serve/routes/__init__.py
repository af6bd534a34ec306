"""The service's routes, one file per resource, each with an ``APIRouter`` named ``router``.

Every module of this package that defines ``router`` is found and included by
:func:`~extractgym.serve.app.create_app` (in file-name order), so adding an endpoint is one file here plus its test
(docs/service.md shows one). A route authenticates by asking for a caller (:mod:`extractgym.serve.common`:
``Account``, ``Owner``, ``Admin``), which also makes the gate check the key before the body is read.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from fastapi import APIRouter


def modules() -> list[ModuleType]:
    """Every module of this package that has an ``APIRouter`` named ``router``, by module name. A module may also
    list ``SCHEMAS``: models of bodies its routes parse themselves, published in the OpenAPI components."""
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "router", None), APIRouter):
            found.append(module)
    return found
