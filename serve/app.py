"""The HTTP face of a served scenario: FastAPI routes over :class:`~extractgym.serve.state.ServiceServer`.

Keys travel in headers (``fastapi.security.APIKeyHeader``): ``X-API-Key`` (an account, handed out once when it
is opened), ``X-Owner-Key`` (an owner: opens accounts, submits surrogates) and ``X-Admin-Key``. Errors are JSON
``{"detail": message, "reason": code}``:

=====  ==========================================================================================
400    malformed JSON
401    unknown or missing key
402    a budget is exhausted (queries, money, accounts)
403    a banned account, another owner's account, an account of another service
404    unknown service, account or owner
409    an owner that already exists
413    a body over the size limit
422    an invalid request or query (the simulator's own :class:`~extractgym.envs.errors.InvalidQuery` messages)
429    a rate limit (with ``Retry-After``), or the contest's submission limit
500    an internal error (e.g. the database could not commit): rolled back, memory rebuilt from the database
=====  ==========================================================================================

Nothing is charged or logged for any of them. The OpenAPI spec is at ``/openapi.json`` (docs at ``/docs``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Annotated, Any, get_type_hints

from fastapi import Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, create_model
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from extractgym.envs.api import SERVICE_TERMS, Budget, LedgerEntry
from extractgym.envs.errors import InvalidQuery, QueryRefused
from extractgym.serve.state import ServiceError, ServiceServer
from extractgym.victims.snapshot import SnapshotError

REFUSALS = {"query-budget": 402, "money-budget": 402, "account-budget": 402, "banned": 403, "not-owner": 403,
            "rate-limit": 429, "unknown-account": 401, "unknown-service": 404}
MAX_BODY = 16 * 2**20
MAX_SUBMISSION = 64 * 2**20

account_key = APIKeyHeader(name="X-API-Key", scheme_name="AccountKey", auto_error=False,
                           description="an account's key, returned once by POST /v1/accounts")
owner_key = APIKeyHeader(name="X-Owner-Key", scheme_name="OwnerKey", auto_error=False,
                         description="an owner's key: opens accounts and submits surrogates")
admin_key = APIKeyHeader(name="X-Admin-Key", scheme_name="AdminKey", auto_error=False,
                         description="the server operator's key")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Error(_Model):
    detail: str
    reason: str


class OpenAccount(_Model):
    service: str = Field(description="the service the account is for")


class AccountOpened(_Model):
    account: str
    service: str
    api_key: str = Field(description="shown once; the server keeps only its SHA-256")
    charge: float
    round: int


class PredictRequest(_Model):
    inputs: list[Any] = Field(min_length=1, description="a batch: nested lists of numbers of shape "
                              "(batch, *input.shape) for an image service, or strings for a text service")


class PredictResponse(_Model):
    outputs: list[list[float]] = Field(description="the defended, formatted rows of the answered leading queries")
    n_answered: int
    charge: float
    banned: bool = Field(description="a defender banned the account while serving this batch")
    seq: int = Field(description="the ledger sequence number of this request's query entry")
    round: int


class InputInfo(_Model):
    kind: str
    shape: list[int]
    low: float
    high: float
    max_chars: int


# the published terms come from the API's one declaration (envs/api.py ServiceConfig)
ServiceInfo = create_model(
    "ServiceInfo", __base__=_Model, __doc__="A service's published terms, its number of classes and its inputs.",
    name=(str, ...),
    **{term.name: (term.type, Field(..., description=term.doc)) for term in SERVICE_TERMS},
    n_classes=(int, ...),
    input=(InputInfo, ...))


class BudgetModel(_Model):
    queries: int | None = Field(None, ge=0)
    money: float | None = Field(None, ge=0, allow_inf_nan=False)
    accounts: int | None = Field(None, ge=0)


class Spent(_Model):
    queries: int
    money: float
    accounts: int


class Left(_Model):
    queries: float | None = Field(description="null: unlimited")
    money: float | None
    accounts: float | None


class WalletInfo(_Model):
    budget: BudgetModel
    spent: Spent
    left: Left
    credit: float | None = Field(description="money left (null: unlimited)")


class AccountState(_Model):
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


class AccountInfo(AccountState):
    wallet: WalletInfo


class OwnerInfo(_Model):
    owner: str
    wallet: WalletInfo
    accounts: list[AccountState]


class OwnerSummary(_Model):
    owner: str
    wallet: WalletInfo


class NewOwner(_Model):
    owner: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    budget: BudgetModel = BudgetModel()


class OwnerCreated(OwnerSummary):
    owner_key: str = Field(description="shown once")


class BanRequest(_Model):
    account: str
    note: str = Field("", max_length=500)


# A ledger row as the core defines it (envs/api.py LedgerEntry), every field required in the published schema: the
# response model follows the dataclass instead of copying its fields.
Entry = create_model("Entry", __base__=_Model,
                     **{f.name: (hint, ...) for f, hint in zip(fields(LedgerEntry), get_type_hints(LedgerEntry).values(),
                                                              strict=True)})


class LedgerExport(_Model):
    entries: list[Entry]  # type: ignore[valid-type]
    total: int
    digest: str = Field(description="the whole ledger's fingerprint (Ledger.digest)")


class RoundInfo(_Model):
    round: int


class Summary(_Model):
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


class Baseline(_Model):
    """What public data alone scores on the same hidden test set (no query bought): the best of its strategies."""

    accuracy: float
    fidelity: float
    strategies: dict[str, dict[str, float]]


class Submission(_Model):
    id: int
    service: str
    arch: str
    accuracy: float
    fidelity: float
    submissions_left: int
    # every contest result beside the no-query baseline and the threat model (serve/contest.py)
    baseline: Baseline
    threat_model: str


class SubmissionRecord(_Model):
    id: int
    owner: str
    service: str
    arch: str
    accuracy: float
    fidelity: float
    sha256: str
    at: float


def _known_query(request: Request) -> None:
    """Unknown query parameters are refused (a typo fails loudly instead of being ignored)."""
    known: set[str] = set()
    todo = [getattr(request.scope.get("route"), "dependant", None)]
    while todo:  # the route's query parameters and its dependencies'
        d = todo.pop()
        if d is not None:
            known.update(p.alias for p in d.query_params)
            todo.extend(d.dependencies)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ServiceError(422, "invalid-request", f"unknown query parameter(s): {', '.join(map(repr, unknown[:5]))}"
                                                   + (f"; known: {', '.join(sorted(known))}" if known else ""))


def _server(request: Request) -> ServiceServer:
    return request.app.state.server


def _account(request: Request, key: Annotated[str | None, Security(account_key)]) -> tuple[str, str]:
    return _server(request).account_for(key)


def _owner(request: Request, key: Annotated[str | None, Security(owner_key)]) -> str:
    return _server(request).owner_for(key)


def _admin(request: Request, key: Annotated[str | None, Security(admin_key)]) -> None:
    _server(request).check_admin(key)


Account = Annotated[tuple[str, str], Depends(_account)]
Owner = Annotated[str, Depends(_owner)]
Admin = Depends(_admin)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "malformed JSON", 401: "unknown or missing key", 402: "a budget is exhausted",
            403: "banned, or not this caller's", 404: "unknown service, account or owner", 409: "already exists",
            413: "body too large", 422: "invalid request or query", 429: "rate limit (see Retry-After)"}
    # any request may be too large, or name a query parameter the operation does not have
    out: dict[int | str, dict[str, Any]] = {c: {"model": Error, "description": text[c]}
                                            for c in sorted({*codes, 413, 422})}
    if 429 in out:
        out[429]["headers"] = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
    return out


def create_app(server: ServiceServer | None) -> FastAPI:
    """The FastAPI app for ``server`` (wrap it in :class:`BodyLimit` to serve it; :func:`serve_app` does).

    The routes read the server from ``app.state.server`` at each request, so the app (and its OpenAPI spec) may
    be made before the server is (``server=None``, then set ``app.state.server``).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        running = app.state.server
        if running is not None:
            running.start_timer()
        yield
        if running is not None:
            running.stop_timer()

    app = FastAPI(title="extractgym prediction service", version="1",
                  description="A scenario served for real: the simulator's prediction API, defences and ledger "
                              "over HTTP.", lifespan=lifespan, dependencies=[Depends(_known_query)])
    app.state.server = server

    def srv() -> ServiceServer:
        return app.state.server

    def fail(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
        return JSONResponse({"detail": detail, "reason": reason}, status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError) -> JSONResponse:
        return fail(e.status, e.reason, e.message, e.headers)

    @app.exception_handler(QueryRefused)
    async def _refused(request: Request, e: QueryRefused) -> JSONResponse:
        status = REFUSALS.get(e.reason, 403)
        headers = {"Retry-After": str(srv().retry_after())} if status == 429 else None
        return fail(status, e.reason, str(e), headers)

    @app.exception_handler(InvalidQuery)
    async def _invalid(request: Request, e: InvalidQuery) -> JSONResponse:
        return fail(422, "invalid-query", str(e))

    @app.exception_handler(SnapshotError)
    async def _snapshot(request: Request, e: SnapshotError) -> JSONResponse:
        return fail(422, "invalid-snapshot", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405:  # every method of the path, not only those of the first route that matched it
            methods = {m for r in request.app.routes if getattr(r, "methods", None)
                       and r.path_regex.match(request.url.path) for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return fail(e.status_code, f"http-{e.status_code}", str(e.detail), headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:  # rolled back; memory rebuilt from the books
        return fail(500, "internal", f"internal error ({type(e).__name__}); the request was rolled back and "
                                     f"nothing was charged")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            err = next(err for err in errors if err.get("type") == "json_invalid")
            where = err.get("loc", ("body", "?"))[-1]
            return fail(400, "malformed-json", f"malformed JSON at character {where}: "
                                               f"{(err.get('ctx') or {}).get('error', 'cannot parse')}")
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}" for err in errors[:5]]
        return fail(422, "invalid-request", "; ".join(parts))

    # -- public --------------------------------------------------------------------------------
    @app.get("/v1/services", response_model=list[ServiceInfo], tags=["public"])
    def services() -> Any:
        """The services, their terms (prices, free quota, rate limit, output format) and input format."""
        return srv().services()

    @app.get("/v1/services/{name}", response_model=ServiceInfo, responses=_errors(404), tags=["public"])
    def service(name: str) -> Any:
        return srv().service_info(name)

    # -- owners --------------------------------------------------------------------------------
    @app.post("/v1/accounts", response_model=AccountOpened, status_code=201, responses=_errors(400, 401, 402, 404, 422),
              tags=["owners"])
    def open_account(body: OpenAccount, who: Owner) -> Any:
        """Open an account (charged its price, as in the simulator). The account's API key is shown once."""
        return srv().open_account(who, body.service)

    @app.get("/v1/owner", response_model=OwnerInfo, responses=_errors(401), tags=["owners"])
    def owner_info(who: Owner) -> Any:
        """The caller's wallet and accounts (never another owner's)."""
        return srv().owner_info(who)

    @app.get("/v1/owner/accounts/{account_id:path}", response_model=AccountState, responses=_errors(401, 403, 404),
             tags=["owners"])
    def owner_account(account_id: str, who: Owner) -> Any:
        return srv().owner_account(who, account_id)

    # -- accounts ------------------------------------------------------------------------------
    @app.post("/v1/services/{name}/predict", response_model=PredictResponse,
              responses=_errors(400, 401, 402, 403, 404, 413, 422, 429), tags=["accounts"])
    def predict(name: str, body: PredictRequest, caller: Account,
                idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)] = None) -> Any:
        """Answer a batch of queries through the scenario's gate and defences; the charge is committed first.

        A retry with the same ``Idempotency-Key`` gets the stored answer (nothing charged or counted again).
        """
        answer, replayed = srv().predict(caller[0], caller[1], name, body.inputs, idempotency_key)
        return JSONResponse(answer, headers={"Idempotent-Replayed": "true"} if replayed else None)

    @app.get("/v1/account", response_model=AccountInfo, responses=_errors(401), tags=["accounts"])
    def account_info(caller: Account) -> Any:
        """The caller's usage, credit and wallet (its own account only)."""
        return srv().account_info(caller[0])

    # -- contest mode --------------------------------------------------------------------------
    @app.post("/v1/submissions", response_model=Submission, status_code=201,
              responses=_errors(401, 404, 413, 422, 429), tags=["contest"],
              openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary"}}}}})
    async def submit(request: Request, who: Owner,
                     service: Annotated[str | None, Query(description="default: the first service")] = None) -> Any:
        """Score a surrogate: the bytes of a safetensors ModelSnapshot of a registered architecture.

        The referee scores it on the hidden test set in the server's own code; no contestant code runs.
        """
        data = await request.body()
        return await run_in_threadpool(srv().submit, who, service, data)

    @app.get("/v1/submissions", response_model=list[SubmissionRecord], responses=_errors(401), tags=["contest"])
    def submissions(who: Owner) -> Any:
        return srv().submissions(who)

    # -- admin ---------------------------------------------------------------------------------
    @app.get("/v1/admin/owners", response_model=list[OwnerSummary], responses=_errors(401), tags=["admin"],
             dependencies=[Admin])
    def owners() -> Any:
        return srv().owners()

    @app.post("/v1/admin/owners", response_model=OwnerCreated, status_code=201, responses=_errors(400, 401, 409, 422),
              tags=["admin"], dependencies=[Admin])
    def add_owner(body: NewOwner) -> Any:
        """A new owner with a budget; its owner key is shown once."""
        return srv().add_owner(body.owner, Budget(**body.budget.model_dump()))

    @app.put("/v1/admin/owners/{owner_name}/budget", response_model=OwnerSummary, responses=_errors(400, 401, 404, 422),
             tags=["admin"], dependencies=[Admin])
    def set_budget(owner_name: str, body: BudgetModel) -> Any:
        return srv().set_budget(owner_name, Budget(**body.model_dump()))

    @app.post("/v1/admin/bans", response_model=AccountState, responses=_errors(400, 401, 404, 422), tags=["admin"],
              dependencies=[Admin])
    def ban(body: BanRequest) -> Any:
        """Ban an account (a ``ban`` ledger entry); its key gets 403 from then on."""
        return srv().ban(body.account, body.note)

    @app.get("/v1/admin/ledger", response_model=LedgerExport, responses=_errors(401, 422), tags=["admin"],
             dependencies=[Admin])
    def ledger(after: Annotated[int, Query(ge=-1, le=2**62)] = -1,
               limit: Annotated[int, Query(ge=1, le=100_000)] = 1000) -> Any:
        """Ledger entries with ``seq > after`` (at most ``limit``), and the whole ledger's digest."""
        return srv().ledger(after, limit)

    @app.post("/v1/admin/rounds/next", response_model=RoundInfo, responses=_errors(401), tags=["admin"],
              dependencies=[Admin])
    def next_round() -> Any:
        """Close the round: simulated benign traffic (if on), the detectors' ``end_round``, the audit."""
        return srv().advance_round()

    @app.get("/v1/admin/summary", response_model=Summary, responses=_errors(401), tags=["admin"], dependencies=[Admin])
    def summary() -> Any:
        return srv().summary()

    return app


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes (``limits`` per path prefix) gets 413 before the app
    reads it. The body is read here, counted as it streams (``Content-Length`` is not trusted), then handed on."""

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int = MAX_BODY,
                 limits: dict[str, int] | None = None) -> None:
        self.app, self.limit = app, limit
        self.limits = limits if limits is not None else {"/v1/submissions": MAX_SUBMISSION}

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = next((v for p, v in self.limits.items() if scope["path"].startswith(p)), self.limit)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._too_large(send, limit)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                return await self._too_large(send, limit)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole, done = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _too_large(send: Callable[..., Awaitable[None]], limit: int) -> None:
        body = json.dumps({"detail": f"request body over the limit of {limit} bytes", "reason": "too-large"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def serve_app(server: ServiceServer, max_body: int = MAX_BODY) -> BodyLimit:
    """The ASGI app to run: the routes behind the body-size limit."""
    return BodyLimit(create_app(server), max_body)
