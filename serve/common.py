"""What every route file of the service shares: the key headers and the dependencies that check them, the error
body and its status table, and the response models more than one resource returns.

A route asks for its caller with one of the dependencies :data:`Account`, :data:`Owner` or :data:`Admin`. The
gate in front of the app (:class:`~extractgym.serve.app.Gate`) reads the same dependencies to authenticate a
request from its headers before a byte of its body is read; the dependency then resolves the caller for the route.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

from extractgym.serve.state import ServiceServer

# The dependencies are coroutines on purpose: they only look up a digest in a dict, and FastAPI runs a plain
# function dependency in a worker thread (a thread hop per dependency per request, the largest cost of a request).

account_key = APIKeyHeader(name="X-API-Key", scheme_name="AccountKey", auto_error=False,
                           description="an account's key, returned once by POST /v1/accounts")
owner_key = APIKeyHeader(name="X-Owner-Key", scheme_name="OwnerKey", auto_error=False,
                         description="an owner's key: opens accounts and submits surrogates")
admin_key = APIKeyHeader(name="X-Admin-Key", scheme_name="AdminKey", auto_error=False,
                         description="the server operator's key")


class Model(BaseModel):
    """A request or response body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class Error(Model):
    detail: str
    reason: str


def server(request: Request) -> ServiceServer:
    """The served scenario behind this request (``app.state.server``)."""
    return request.app.state.server


async def _account(request: Request, key: Annotated[str | None, Security(account_key)]) -> tuple[str, str]:
    return server(request).account_for(key)


async def _owner(request: Request, key: Annotated[str | None, Security(owner_key)]) -> str:
    return server(request).owner_for(key)


async def _admin(request: Request, key: Annotated[str | None, Security(admin_key)]) -> None:
    server(request).check_admin(key)


Account = Annotated[tuple[str, str], Depends(_account)]
"""``(account id, owner)`` of the ``X-API-Key`` header (401 if unknown or revoked)."""
Owner = Annotated[str, Depends(_owner)]
"""The owner of the ``X-Owner-Key`` header (401 if unknown or revoked)."""
Admin = Depends(_admin)
"""The ``X-Admin-Key`` header checked (a router's or route's ``dependencies=[Admin]``)."""
KEYS = {_account: ("account", "X-API-Key"), _owner: ("owner", "X-Owner-Key"), _admin: ("admin", "X-Admin-Key")}
"""Which key each auth dependency reads: the gate authenticates from this before the body is read."""

_TEXT = {400: "malformed JSON", 401: "unknown, missing or revoked key", 402: "a budget is exhausted",
         403: "banned, or not this caller's", 404: "unknown service, account or owner", 409: "already exists",
         413: "body too large (size or number of items, counted as it streams)", 422: "invalid request or query",
         429: "rate limit (see Retry-After when the server knows when a retry can succeed)",
         503: "the books cannot be made durable: the server refuses everything until restarted"}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of a route (``responses=errors(401, 404)``); any request may also be too
    large, name a query parameter the operation does not have, or meet a server whose disk failed."""
    out: dict[int | str, dict[str, Any]] = {c: {"model": Error, "description": _TEXT[c]}
                                            for c in sorted({*codes, 413, 422, 503})}
    if 429 in out:
        out[429]["headers"] = {"Retry-After": {"description": "seconds until a retry can succeed (absent when "
                                                              "only the operator can close the round)",
                                               "schema": {"type": "integer"}}}
    return out


# -- response models more than one resource returns ---------------------------------------------------
class BudgetModel(Model):
    queries: int | None = Field(None, ge=0, strict=True)
    money: float | None = Field(None, ge=0, allow_inf_nan=False, strict=True)
    accounts: int | None = Field(None, ge=0, strict=True)


class Spent(Model):
    queries: int
    money: float
    accounts: int


class Left(Model):
    queries: float | None = Field(description="null: unlimited")
    money: float | None
    accounts: float | None


class WalletInfo(Model):
    budget: BudgetModel
    spent: Spent
    left: Left
    credit: float | None = Field(description="money left (null: unlimited)")


class AccountState(Model):
    account: str
    owner: str
    service: str
    opened_round: int
    queries: int
    round_queries: int
    free_left: int
    rate_limit_left: int | None
    banned: bool
    banned_round: int | None


class OwnerSummary(Model):
    owner: str
    wallet: WalletInfo
