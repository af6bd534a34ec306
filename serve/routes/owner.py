"""Owners: the caller's wallet and accounts (owner key); never another owner's."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from extractgym.serve.common import AccountState, Model, Owner, WalletInfo, errors, server

router = APIRouter(prefix="/v1/owner", tags=["owners"])


class OwnerInfo(Model):
    owner: str
    wallet: WalletInfo
    accounts: list[AccountState]


@router.get("", response_model=OwnerInfo, responses=errors(401))
def owner_info(who: Owner, request: Request) -> Any:
    """The caller's wallet and accounts (never another owner's)."""
    return server(request).owner_info(who)


@router.get("/accounts/{account_id:path}", response_model=AccountState, responses=errors(401, 404))
def owner_account(account_id: str, who: Owner, request: Request) -> Any:
    """One of the caller's accounts; another owner's account is as unknown as one that does not exist (404)."""
    return server(request).owner_account(who, account_id)
