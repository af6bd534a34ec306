"""Contest mode: submitting a surrogate snapshot to be scored on the hidden test set (owner key).

The gate caps an upload's bytes, its safetensors header and its number of tensors while it streams, and counts
every upload, refused or scored, against the owner's upload rate, before the bytes are parsed.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from extractgym.serve.common import Model, Owner, errors, server

router = APIRouter(prefix="/v1/submissions", tags=["contest"])


class Baseline(Model):
    """What public data alone scores on the same hidden test set (no query bought): the best of its strategies."""

    accuracy: float
    fidelity: float
    strategies: dict[str, dict[str, float]]


class Submission(Model):
    id: int
    service: str
    arch: str
    accuracy: float
    fidelity: float
    submissions_left: int
    # every contest result beside the no-query baseline and the threat model (serve/contest.py)
    baseline: Baseline
    threat_model: str


class SubmissionRecord(Model):
    id: int
    owner: str
    service: str
    arch: str
    accuracy: float
    fidelity: float
    sha256: str
    at: float


@router.post("", response_model=Submission, status_code=201, responses=errors(401, 403, 404, 429),
             openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                 "schema": {"type": "string", "format": "binary"}}}}})
async def submit(request: Request, who: Owner,
                 service: Annotated[str | None, Query(description="default: the first service")] = None) -> Any:
    """Score a surrogate: the bytes of a safetensors ModelSnapshot of a registered architecture.

    The referee scores it on the hidden test set in the server's own code; no contestant code runs.
    """
    data = await request.body()
    return await run_in_threadpool(server(request).submit, who, service, data)


@router.get("", response_model=list[SubmissionRecord], responses=errors(401))
def submissions(who: Owner, request: Request) -> Any:
    return server(request).submissions(who)
