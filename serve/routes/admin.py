"""Admin: owners and budgets, bans, the ledger, rounds and the referee's figures (admin key)."""

from __future__ import annotations

from dataclasses import fields
from typing import Annotated, Any, get_type_hints

from fastapi import APIRouter, Query, Request
from pydantic import Field, create_model

from extractgym.envs.api import Budget, LedgerEntry
from extractgym.serve.common import AccountState, Admin, BudgetModel, Model, OwnerSummary, errors, server

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Admin])


class NewOwner(Model):
    owner: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    budget: BudgetModel = BudgetModel()


class OwnerCreated(OwnerSummary):
    owner_key: str = Field(description="shown once")


class BanRequest(Model):
    account: str
    note: str = Field("", max_length=500)


# A ledger row as the core defines it (envs/api.py LedgerEntry), every field required in the published schema: the
# response model follows the dataclass instead of copying its fields.
Entry = create_model("Entry", __base__=Model,
                     **{f.name: (hint, ...)
                        for f, hint in zip(fields(LedgerEntry), get_type_hints(LedgerEntry).values(), strict=True)})


class LedgerExport(Model):
    entries: list[Entry]  # type: ignore[valid-type]
    total: int
    digest: str = Field(description="the whole ledger's fingerprint (Ledger.digest)")


class RoundInfo(Model):
    round: int


class Summary(Model):
    scenario: str
    seed: int
    round: int
    victim_accuracy: float
    defended_accuracy: float
    utility: float
    benign_accounts: int
    benign_accounts_banned: int
    false_positive_rate: float
    accounts: int
    accounts_banned: int
    ledger_entries: int
    ledger_digest: str


@router.get("/owners", response_model=list[OwnerSummary], responses=errors(401))
def owners(request: Request) -> Any:
    return server(request).owners()


@router.post("/owners", response_model=OwnerCreated, status_code=201, responses=errors(400, 401, 409))
def add_owner(body: NewOwner, request: Request) -> Any:
    """A new owner with a budget; its owner key is shown once."""
    return server(request).add_owner(body.owner, Budget(**body.budget.model_dump()))


@router.put("/owners/{owner_name}/budget", response_model=OwnerSummary, responses=errors(400, 401, 404))
def set_budget(owner_name: str, body: BudgetModel, request: Request) -> Any:
    return server(request).set_budget(owner_name, Budget(**body.model_dump()))


@router.post("/bans", response_model=AccountState, responses=errors(400, 401, 404))
def ban(body: BanRequest, request: Request) -> Any:
    """Ban an account (a ``ban`` ledger entry); its key gets 403 from then on."""
    return server(request).ban(body.account, body.note)


@router.get("/ledger", response_model=LedgerExport, responses=errors(401))
def ledger(request: Request, after: Annotated[int, Query(ge=-1, le=2**62)] = -1,
           limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> Any:
    """Ledger entries with ``seq > after`` (at most ``limit``), and the whole ledger's digest."""
    return server(request).ledger(after, limit)


@router.post("/rounds/next", response_model=RoundInfo, responses=errors(401))
def next_round(request: Request) -> Any:
    """Close the round: simulated benign traffic (if on), the detectors' ``end_round``, the audit."""
    return server(request).advance_round()


@router.get("/summary", response_model=Summary, responses=errors(401))
def summary(request: Request) -> Any:
    return server(request).summary()
