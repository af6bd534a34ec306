"""Public: the services and their terms (no key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field, create_model

from extractgym.envs.api import SERVICE_TERMS
from extractgym.serve.common import Model, errors, server

router = APIRouter(prefix="/v1/services", tags=["public"])


class InputInfo(Model):
    kind: str
    shape: list[int]
    low: float
    high: float
    max_chars: int


# the published terms come from the API's one declaration (envs/api.py SERVICE_TERMS)
ServiceInfo = create_model(
    "ServiceInfo", __base__=Model, __doc__="A service's published terms, its number of classes and its inputs.",
    name=(str, ...),
    **{term.name: (term.type, Field(..., description=term.doc)) for term in SERVICE_TERMS},
    n_classes=(int, ...),
    input=(InputInfo, ...))


@router.get("", response_model=list[ServiceInfo])
def services(request: Request) -> Any:
    """The services, their terms (prices, free quota, rate limit, output format) and input format."""
    return server(request).services()


@router.get("/{name}", response_model=ServiceInfo, responses=errors(404))
def service(name: str, request: Request) -> Any:
    return server(request).service_info(name)
