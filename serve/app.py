"""The HTTP face of a served scenario: FastAPI routers over :class:`~extractgym.serve.state.ServiceServer`, behind
a gate that authenticates and bounds every request before its body is read.

The routes live one resource per file in :mod:`extractgym.serve.routes` (found there by :func:`create_app`, which
only wires them: routers, error handlers, docs). Keys travel in headers: ``X-API-Key`` (an account, handed out once
when it is opened), ``X-Owner-Key`` (an owner: opens accounts, submits surrogates) and ``X-Admin-Key``. Errors are
JSON ``{"detail": message, "reason": code}``:

=====  ==========================================================================================
400    malformed JSON
401    unknown, missing or revoked key (answered from the headers: the body is never read)
402    a budget is exhausted (queries, money, accounts)
403    a banned account, an account of another service, the contest's submission limit
404    unknown service, account or owner (another owner's account is unknown too)
409    an owner that already exists
413    a body over its limit: bytes, items of a batch, or a snapshot's header or tensors (counted as it streams)
422    an invalid request or query (the simulator's own :class:`~extractgym.envs.errors.InvalidQuery` messages)
429    a rate limit, or the upload rate; ``Retry-After`` says when a retry can succeed (absent when only the
       operator can close the round: nobody knows when)
500    an internal error (e.g. the database could not commit): rolled back, memory rebuilt from the database
503    the books could not be made durable (a failed fsync): everything is refused until a restart
=====  ==========================================================================================

Nothing is charged or logged for any of them. The OpenAPI spec is at ``/openapi.json``; Swagger UI at ``/docs``
and ReDoc at ``/redoc`` load their scripts from this server (files of the ``fastapi-offline`` package), not a CDN.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.staticfiles import StaticFiles

from extractgym.envs.errors import InvalidQuery, QueryRefused
from extractgym.serve import routes
from extractgym.serve.common import KEYS
from extractgym.serve.state import Caps, ServiceError, ServiceServer
from extractgym.victims.snapshot import SnapshotError

REFUSALS = {"query-budget": 402, "money-budget": 402, "account-budget": 402, "banned": 403, "not-owner": 404,
            "rate-limit": 429, "unknown-account": 401, "unknown-service": 404}
MAX_BODY = 16 * 2**20
TARPIT = 0.1  # seconds before the gate refuses a bad key or body: a client looping them sends ten a second at most
MAX_JSON = 64 * 2**10  # the bodies of every route but predict and submissions are a few hundred bytes
ASSETS = "/docs-assets"


async def _known_query(request: Request) -> None:
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


def _fail(status: int, reason: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail, "reason": reason}, status_code=status, headers=headers)


def _handlers(app: FastAPI) -> None:
    """The errors every route may raise, as ``{"detail", "reason"}`` bodies with their status."""

    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, e: ServiceError) -> JSONResponse:
        return _fail(e.status, e.reason, e.message, e.headers)

    @app.exception_handler(QueryRefused)
    async def _refused(request: Request, e: QueryRefused) -> JSONResponse:
        status = REFUSALS.get(e.reason, 403)
        wait = request.app.state.server.retry_after() if status == 429 else None
        return _fail(status, e.reason, str(e), {"Retry-After": str(wait)} if wait is not None else None)

    @app.exception_handler(InvalidQuery)
    async def _invalid(request: Request, e: InvalidQuery) -> JSONResponse:
        return _fail(422, "invalid-query", str(e))

    @app.exception_handler(SnapshotError)
    async def _snapshot(request: Request, e: SnapshotError) -> JSONResponse:
        return _fail(422, "invalid-snapshot", str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        headers = dict(e.headers or {})
        if e.status_code == 405:  # every method of the path, not only those of the first route that matched it
            methods = {m for r in request.app.routes if getattr(r, "methods", None)
                       and r.path_regex.match(request.url.path) for m in r.methods}
            headers["Allow"] = ", ".join(sorted(methods))
        return _fail(e.status_code, f"http-{e.status_code}", str(e.detail), headers)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:  # rolled back; memory rebuilt from the books
        return _fail(500, "internal", f"internal error ({type(e).__name__}); the request was rolled back and "
                                      f"nothing was charged")

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        return validation_error(e.errors())

    @app.exception_handler(ValidationError)
    async def _parsed(request: Request, e: ValidationError) -> JSONResponse:  # a body a route parsed itself
        return validation_error(e.errors(), ("body",))


def validation_error(errors: list[Any], prefix: tuple[str, ...] = ()) -> JSONResponse:
    """A pydantic error list as one 400 (malformed JSON) or 422 naming the first problems by their path."""
    bad_json = next((err for err in errors if err.get("type") == "json_invalid"), None)
    if bad_json is not None:
        loc = bad_json.get("loc") or ()
        where = f" at character {loc[-1]}" if loc and isinstance(loc[-1], int) else ""
        return _fail(400, "malformed-json", f"malformed JSON{where}: "
                                            f"{(bad_json.get('ctx') or {}).get('error', 'cannot parse')}")
    parts, seen = [], set()
    for err in errors:
        loc = (*prefix, *err.get("loc", ()))
        if "inputs" in loc:  # a batch item: numbers in nested lists, or a string (pydantic names each union branch)
            i = loc.index("inputs")
            where = ".".join(str(p) for p in loc[:i + 2])
            if where in seen:
                continue
            seen.add(where)
            found = type(err.get("input")).__name__.replace("bool", "boolean (true/false)")
            parts.append(f"{where}: a query is a nested list of numbers (image services) or a string (text "
                         f"services); found {found} inside it")
        else:
            parts.append(f"{'.'.join(str(p) for p in loc)}: {err.get('msg', 'invalid')}")
    return _fail(422, "invalid-request", "; ".join(parts[:5]))


def _docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` and ReDoc at ``/redoc``, from the files the ``fastapi-offline`` package ships."""
    import fastapi_offline

    app.mount(ASSETS, StaticFiles(directory=os.path.join(os.path.dirname(fastapi_offline.__file__), "static")),
              name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI",
                                   swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{ASSETS}/favicon.png",
                              with_google_fonts=False)


def create_app(server: ServiceServer | None) -> FastAPI:
    """The FastAPI app for ``server`` (wrap it in :class:`Gate` to serve it; :func:`serve_app` does).

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

    app = FastAPI(title="extractgym prediction service", version="1", docs_url=None, redoc_url=None,
                  description="A scenario served for real: the simulator's prediction API, defences and ledger "
                              "over HTTP.", lifespan=lifespan, dependencies=[Depends(_known_query)])
    app.state.server = server
    _handlers(app)
    extra: dict[str, Any] = {}
    for module in routes.modules():
        app.include_router(module.router)
        for model in getattr(module, "SCHEMAS", ()):  # bodies a route parses itself (faster than FastAPI's)
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            extra.update(schema.pop("$defs", {}))
            extra[model.__name__] = schema
    _docs(app)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default_openapi()
            spec.setdefault("components", {}).setdefault("schemas", {}).update(extra)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


class Gate:
    """ASGI middleware in front of the routes: each request is authenticated from its headers, then its body is
    bounded while it streams, and only then handed to the app.

    * A route that asks for a caller (:data:`~extractgym.serve.common.KEYS`) gets its key checked first: an
      unknown, missing or revoked key is answered 401 and the connection closed without reading the body, so a
      request without a key costs the same whatever it carries.
    * The body is counted as it arrives (``Content-Length`` is not trusted): its bytes against the route's limit
      (``max_body`` at most), a batch's items against what ``max_batch`` queries can hold
      (:meth:`~extractgym.serve.state.ServiceServer.predict_caps`), an upload's safetensors header and tensors
      (:meth:`~extractgym.serve.state.ServiceServer.upload_caps`, which also counts the upload against the owner's
      upload rate). Over a limit: 413 (or 422), the connection closed, nothing parsed.

    Those refusals are answered after ``tarpit`` seconds (a sleeping coroutine: free for the server), so a client
    that loops bad keys or oversized bodies on one connection at a time gets at most ``1 / tarpit`` of them a second.
    """

    def __init__(self, app: FastAPI, max_body: int = MAX_BODY, tarpit: float = 0.0) -> None:
        self.app, self.max_body, self.tarpit = app, max_body, tarpit
        self._routes: list[tuple[Any, tuple[str, str] | None]] | None = None

    def _table(self) -> list[tuple[Any, tuple[str, str] | None]]:
        """Every route of :mod:`extractgym.serve.routes` with the key it asks for (its dependencies, walked)."""
        if self._routes is None:
            table = []
            for module in routes.modules():
                for route in module.router.routes:
                    key, todo = None, [getattr(route, "dependant", None)]
                    while todo:
                        d = todo.pop()
                        if d is not None:
                            key = key or KEYS.get(d.call)
                            todo.extend(d.dependencies)
                    table.append((route, key))
            self._routes = table
        return self._routes

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Awaitable[Any]],
                       send: Callable[..., Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route, key, params = None, None, {}
        for r, k in self._table():
            match, child = r.matches(scope)
            if match == Match.FULL:
                route, key, params = r, k, child.get("path_params", {})
                break
        srv: ServiceServer | None = self.app.state.server
        caps = Caps(min(self.max_body, MAX_JSON))
        try:
            if srv is not None:
                srv.check_open()
                caller = None
                if key is not None:
                    header = key[1].lower().encode()
                    value = next((v for n, v in scope.get("headers") or [] if n == header), None)
                    caller = srv.authenticate(key[0], value.decode("latin-1") if value is not None else None)
                name = getattr(route, "name", None)
                if name == "predict":
                    caps = srv.predict_caps(str(params.get("name", "")))
                elif name == "submit" and scope["method"] == "POST":
                    caps = srv.upload_caps(str(caller))
            caps = caps.at_most(self.max_body)
        except ServiceError as e:
            if e.status == 401:
                await asyncio.sleep(self.tarpit)  # a client that loops bad keys waits, costing the server nothing
            return await _reply(send, e.status, e.reason, e.message, e.headers)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > caps.bytes:
            await asyncio.sleep(self.tarpit)
            return await _reply(send, 413, "too-large", f"request body over the limit of {caps.bytes} bytes")
        chunks, counter = [], caps.counter()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            problem = counter.feed(body)
            if problem is not None:
                await asyncio.sleep(self.tarpit)
                return await _reply(send, problem[0], problem[1], problem[2])
            chunks.append(body)
            if not message.get("more_body", False):
                break
        problem = counter.end()
        if problem is not None:
            return await _reply(send, problem[0], problem[1], problem[2])
        whole, done = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal done
            if not done:
                done = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reply(send: Callable[..., Awaitable[None]], status: int, reason: str, detail: str,
                 headers: dict[str, str] | None = None) -> None:
    """An error answered by the gate; the connection is closed (what the client still sends is never read)."""
    body = json.dumps({"detail": detail, "reason": reason}).encode()
    extra = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


def serve_app(server: ServiceServer, max_body: int = MAX_BODY, tarpit: float = 0.0) -> Gate:
    """The ASGI app to run: the routes behind the gate (``tarpit``: seconds the gate waits before refusing a bad
    key or an oversized body; :mod:`extractgym.serve.launch` serves with :data:`TARPIT`)."""
    return Gate(create_app(server), max_body, tarpit)


BodyLimit = Gate  # the name this middleware had before it authenticated too
