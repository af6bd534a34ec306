"""Admin: owner keys rotated or revoked (admin key). A revoked key fails at once and after any restart."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from extractgym.serve.common import Admin, Model, errors, server

router = APIRouter(prefix="/v1/admin/owners/{owner_name}/keys", tags=["admin"], dependencies=[Admin])


class KeyIssued(Model):
    owner: str
    owner_key: str = Field(description="shown once; the server keeps only its SHA-256")
    revoked: int = Field(description="earlier keys of this owner revoked by this call")


class KeysRevoked(Model):
    owner: str
    revoked: int


@router.post("", response_model=KeyIssued, status_code=201, responses=errors(401, 404))
def rotate(owner_name: str, request: Request) -> Any:
    """A new key for the owner; every earlier key of the owner is revoked in the same transaction."""
    return server(request).rotate_owner_key(owner_name)


@router.delete("", response_model=KeysRevoked, responses=errors(401, 404))
def revoke(owner_name: str, request: Request) -> Any:
    """Revoke every key of the owner (it can do nothing until a key is issued again); its accounts keep theirs."""
    return server(request).revoke_owner_keys(owner_name)
