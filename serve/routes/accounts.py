"""Accounts: opening one (owner key), predicting and reading its own usage (account key)."""

from __future__ import annotations

from typing import Annotated, Any, Union

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from pydantic import Field, StrictFloat
from starlette.concurrency import run_in_threadpool
from typing_extensions import TypeAliasType

from extractgym.serve.common import Account, AccountState, Model, Owner, WalletInfo, errors, server

router = APIRouter(tags=["accounts"])

Numbers = TypeAliasType("Numbers", Union[list["Numbers"], StrictFloat])  # noqa: UP007  # pydantic needs Union here


class OpenAccount(Model):
    service: str = Field(description="the service the account is for")


class AccountOpened(Model):
    account: str
    service: str
    api_key: str = Field(description="shown once; the server keeps only its SHA-256")
    charge: float
    round: int


class PredictRequest(Model):
    """A batch. JSON numbers only (``true`` is not 1.0); the server's ``max_batch`` bounds its length and the gate
    bounds its bytes and items before it is parsed."""

    inputs: list[Union[list[Numbers], Annotated[str, Field(max_length=100_000)]]] = Field(  # noqa: UP007
        min_length=1, description="a batch: nested lists of numbers of shape (batch, *input.shape) for an image "
                                  "service, or strings for a text service")


class PredictResponse(Model):
    outputs: list[list[float]] = Field(description="the defended, formatted rows of the answered leading queries")
    n_answered: int
    charge: float
    banned: bool = Field(description="a defender banned the account while serving this batch")
    request: int = Field(description="this request's number among its own account's query requests (0, 1, ...)")
    round: int


SCHEMAS = (PredictRequest,)


class AccountInfo(AccountState):
    wallet: WalletInfo


@router.post("/v1/accounts", response_model=AccountOpened, status_code=201, responses=errors(400, 401, 402, 404))
def open_account(body: OpenAccount, who: Owner, request: Request) -> Any:
    """Open an account (charged its price, as in the simulator). The account's API key is shown once."""
    return server(request).open_account(who, body.service)


@router.post("/v1/services/{name}/predict", response_model=PredictResponse,
             responses=errors(400, 401, 402, 403, 404, 429),
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}})
async def predict(name: str, request: Request, caller: Account,
                  idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None
                  ) -> Any:
    """Answer a batch of queries through the scenario's gate and defences; answered once the charge is durable.

    A retry with the same ``Idempotency-Key`` gets the stored answer (nothing charged or counted again).
    """
    raw = await request.body()  # the gate has counted it; parsed in the worker thread (pydantic's JSON parser)
    srv = server(request)
    body, replayed = await run_in_threadpool(srv.predict_json, caller[0], caller[1], name, raw, idempotency_key,
                                             PredictRequest)
    return Response(body, media_type="application/json",
                    headers={"Idempotent-Replayed": "true"} if replayed else None)


@router.get("/v1/account", response_model=AccountInfo, responses=errors(401))
def account_info(caller: Account, request: Request) -> Any:
    """The caller's usage, credit and wallet (its own account only)."""
    return server(request).account_info(caller[0])
