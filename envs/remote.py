"""Remote prediction services: a scenario service whose answers come from an HTTP endpoint.

A scenario service with ``remote: {url, key, service, protocol}`` keeps the simulator's books (accounts, budgets,
free quota, rate limit, the ledger) exactly as for a local service, but its answers come from the endpoint, which
applies its own gate and defences. Any attacker body, with any tactic, then attacks that endpoint unchanged.
:class:`~extractgym.envs.api.PredictionAPI` calls a :class:`RemoteService` (a service's ``backend``) when it opens
an account and when the local gate has passed a request; the endpoint's refusals come back as the simulator's:

=================================  ==========================================================================
endpoint                           simulator
=================================  ==========================================================================
200 with ``n_answered < n``        the leading answers, and the local account is banned (as a local detector)
401                                :class:`~extractgym.envs.errors.RemoteFailure` (a wrong or revoked key: the
                                   run stops and says so, instead of playing nothing)
402                                ``QueryRefused("query-budget" | "money-budget" | "account-budget")``
403 (``reason: banned``)           the local account is banned, ``QueryRefused("banned")``
404                                ``QueryRefused("unknown-service")``
413, 422                           ``InvalidQuery`` with the endpoint's message
429                                retried after ``Retry-After`` while that fits the deadline, else
                                   ``QueryRefused("rate-limit")`` (also at once when no ``Retry-After`` says
                                   when a retry can succeed)
5xx, network errors                retried until the deadline, then :class:`RemoteFailure` (the server is gone:
                                   the run stops and says so)
=================================  ==========================================================================

Retries back off exponentially (``backoff``, doubled per try, each wait at most ``max_wait``) until ``deadline``
seconds after the first try, long enough by default for a server to restart (it restores its books from a
snapshot and the ledger's tail). A predict request carries an ``Idempotency-Key`` that stays the same over its
retries, so an extractgym server never charges a retried request twice, even across its restart. At the end of an
episode :func:`reconcile` compares every remote account's books with the server's (``GET /v1/account``).

Protocols:

* ``extractgym`` (an ``extractgym serve`` server): ``url`` is the server's base URL, ``key`` an owner key; each
  local account opens its own remote account (``POST /v1/accounts``). When the game is built, the service's
  terms (prices, free quota, rate limit, output format, classes, input shape) are checked against the server's
  ``GET /v1/services/{service}``, so local budget accounting is the server's.
* ``json`` (anyone's endpoint): ``url`` is the endpoint. The batch is put at ``inputs_field`` (a dotted path)
  of a copy of ``body``, the key goes in header ``key_header`` (after ``key_prefix``, e.g. ``"Bearer "``), and the
  answer's rows are read at ``outputs_field``: probability rows, or class indices with ``outputs: labels``.
  Every local account shares the endpoint's one key; the local books still apply the scenario's terms.

Keys may be given as ``key_env``, the name of an environment variable, to keep them out of scenario files.

:func:`remote_predict` exposes a remote service as a plain ``predict(x) -> probabilities`` function, e.g. for
the Adversarial Robustness Toolbox (ART is not a dependency)::

    from art.estimators.classification import BlackBoxClassifier
    predict = remote_predict("http://127.0.0.1:8000", key="OWNER-KEY", service="api")
    classifier = BlackBoxClassifier(predict, input_shape=(1, 8, 8), nb_classes=10, clip_values=(0.0, 1.0))
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from extractgym.envs.api import SERVICE_TERMS
from extractgym.envs.errors import InvalidQuery, QueryRefused, RemoteFailure

BUDGET_REASONS = ("query-budget", "money-budget", "account-budget")
TERMS = tuple(term.name for term in SERVICE_TERMS)  # what a server's terms must match (declared once, in envs/api.py)


@dataclass(frozen=True)
class RemoteConfig:
    """Where a remote service lives and how to talk to it (the scenario's ``services.N.remote``).

    Attributes:
        url: the server's base URL (``extractgym``) or the endpoint's URL (``json``); http or https.
        key: owner key (``extractgym``) or API key (``json``); or give ``key_env``.
        key_env: environment variable holding the key.
        keys: per-seat keys (``{attacker_1: KEY}``) for seats that act for other remote owners than ``key``'s.
        service: the remote service's name (``extractgym``; default: the local service's name).
        protocol: ``"extractgym"`` or ``"json"``.
        timeout: seconds per HTTP request.
        retries: most further tries after a network error, a 5xx or a 429 (``None``: as many as ``deadline`` allows).
        deadline: seconds after a request's first try past which it is not retried (covers a server's restart).
        backoff: first wait between tries (doubled each time) when no ``Retry-After`` is given.
        max_wait: longest single wait, ``Retry-After`` included.
        inputs_field: (``json``) dotted path of the batch in the request body.
        outputs_field: (``json``) dotted path of the answer's rows in the response body.
        outputs: (``json``) the rows are ``"probs"`` (probability vectors) or ``"labels"`` (class indices).
        key_header: (``json``) header that carries the key.
        key_prefix: (``json``) text before the key in that header, e.g. ``"Bearer "``.
        body: (``json``) fixed fields of every request body.
    """

    url: str
    key: str | None = None
    key_env: str | None = None
    keys: Mapping[str, str] = field(default_factory=dict)
    service: str | None = None
    protocol: Literal["extractgym", "json"] = "extractgym"
    timeout: float = 30.0
    retries: int | None = None
    deadline: float = 120.0
    backoff: float = 0.25
    max_wait: float = 30.0
    inputs_field: str = "inputs"
    outputs_field: str = "outputs"
    outputs: Literal["probs", "labels"] = "probs"
    key_header: str = "X-API-Key"
    key_prefix: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        if (self.key is None) == (self.key_env is None):
            raise ValueError("give exactly one of key and key_env")
        if not (self.timeout > 0 and self.backoff >= 0 and self.max_wait >= 0 and self.deadline >= 0
                and (self.retries is None or self.retries >= 0)):
            raise ValueError("timeout must be > 0, and retries, deadline, backoff and max_wait >= 0")
        if not self.inputs_field or not self.outputs_field:
            raise ValueError("inputs_field and outputs_field must name a field")

    def resolved_key(self, owner: str | None = None) -> str:
        if owner in self.keys:
            return self.keys[owner]
        if self.key is not None:
            return self.key
        value = os.environ.get(str(self.key_env), "")
        if not value:
            raise ValueError(f"remote service {self.url}: environment variable {self.key_env} (key_env) is not set")
        return value


@dataclass(frozen=True)
class RemoteAnswer:
    """What the endpoint answered: rows for the ``n_answered`` leading queries, and its charge if it says."""

    outputs: np.ndarray
    n_answered: int
    charge: float | None = None


class RemoteService:
    """The backend of a remote scenario service: remote accounts, requests with retries, errors mapped.

    Args:
        config: the scenario's ``remote:`` block.
        name: the local service's name (the remote one defaults to it).
        n_classes: classes the victim has (answers are checked against it).
        client: an ``httpx.Client`` to use (tests pass FastAPI's ``TestClient``); default: one of its own.
        sleep: how to wait between retries (tests pass a recorder).
    """

    def __init__(self, config: RemoteConfig, name: str, n_classes: int, client: Any = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.name, self.n_classes = config, name, n_classes
        self.remote_name = config.service or name
        self._client, self._own_client = client, client is None
        self.sleep, self.clock = sleep, clock
        self._keys: dict[str, str] = {}  # local account id -> remote account key

    @property
    def client(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.Client(timeout=self.config.timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None and self._own_client:
            self._client.close()
        self._client = None if self._own_client else self._client

    def __getstate__(self) -> dict[str, Any]:  # picklable (vector envs): the connection is not
        state = dict(self.__dict__)
        if state["_own_client"]:
            state["_client"] = None
        return state

    def _url(self, path: str) -> str:
        return self.config.url.rstrip("/") + path

    # -- the extractgym protocol's checks ---------------------------------------------------------
    def check(self, terms: Any, input_spec: Any) -> None:
        """Raise ``ValueError`` unless the server's terms for the service are the scenario's (``extractgym``)."""
        self.config.resolved_key()  # a missing key fails now, not at the first account
        if self.config.protocol != "extractgym":
            return
        try:
            r = self._send("GET", self._url(f"/v1/services/{self.remote_name}"), {})
        except RemoteFailure as e:
            raise ValueError(f"cannot reach the remote service at {self.config.url} ({e}); is the server "
                             f"(extractgym serve) running there?") from None
        if r.status_code != 200:
            raise ValueError(f"remote service {self.remote_name!r} at {self.config.url}: {_detail(r)}")
        info = r.json()
        diff = [f"{k}: scenario {getattr(terms, k)!r}, server {info.get(k)!r}" for k in TERMS
                if info.get(k) != getattr(terms, k)]
        if info.get("n_classes") != self.n_classes:
            diff.append(f"n_classes: scenario {self.n_classes}, server {info.get('n_classes')!r}")
        got = info.get("input", {})
        if (got.get("kind"), tuple(got.get("shape", ()))) != (input_spec.kind, tuple(input_spec.shape)):
            diff.append(f"input: scenario {input_spec.kind} {tuple(input_spec.shape)}, server {got.get('kind')} "
                        f"{tuple(got.get('shape', ()))}")
        if diff:
            raise ValueError(f"remote service {self.remote_name!r} at {self.config.url} has other terms than the "
                             f"scenario's service {self.name!r} (local budget accounting would be wrong): "
                             + "; ".join(diff))
        for seat, key in [(None, self.config.resolved_key()), *self.config.keys.items()]:
            self._check_owner(seat, key, terms)

    def _check_owner(self, seat: str | None, key: str, terms: Any) -> None:
        """The owner key is the server's, and its budget there can still buy an account and a query (else the run
        would pay for an account and play nothing)."""
        whose = f"the owner key of {seat}" if seat else "the owner key"
        try:
            r = self._send("GET", self._url("/v1/owner"), {"X-Owner-Key": key}, loud_401=False)
        except RemoteFailure as e:
            raise ValueError(str(e)) from None
        if r.status_code == 401:
            raise ValueError(f"remote service at {self.config.url} refused {whose} ({_detail(r)}): a wrong or revoked "
                             f"key (EXTRACTGYM_OWNER_KEY, key_env or key)")
        if r.status_code != 200:
            raise ValueError(f"remote service at {self.config.url}: {whose}: {_detail(r)}")
        left = (r.json().get("wallet") or {}).get("left") or {}
        need_money = getattr(terms, "opening_charge", 0.0) + (getattr(terms, "price_per_query", 0.0)
                                                              if getattr(terms, "free_quota", 0) < 1 else 0.0)
        needs = (("queries", 1), ("accounts", 1), ("money", need_money))
        short = [f"{what} {left[what]:g} left" for what, need in needs
                 if left.get(what) is not None and left[what] < need - 1e-12]
        if short:
            raise ValueError(f"remote service at {self.config.url}: {whose} belongs to {r.json().get('owner')!r}, "
                             f"whose budget on the server cannot buy an account and a query ({', '.join(short)}): this "
                             f"run would play nothing (raise it with PUT /v1/admin/owners/OWNER/budget, or serve a "
                             f"fresh --db)")

    def reconcile(self, api: Any) -> list[str]:
        """Where the server's books (``GET /v1/account`` of each remote account) disagree with the local ones:
        queries answered and bans, per account. Empty when they agree."""
        out = []
        if self.config.protocol != "extractgym":
            return out
        for account, key in self._keys.items():
            local = api.accounts.get(account)
            if local is None:
                continue
            r = self._send("GET", self._url("/v1/account"), {"X-API-Key": key})
            if r.status_code != 200:
                out.append(f"{account}: the server did not show its books ({_detail(r)})")
                continue
            theirs = r.json()
            if theirs.get("queries") != local.queries:
                out.append(f"{account}: {local.queries} queries here, {theirs.get('queries')} on the server")
            if bool(theirs.get("banned")) != local.banned:
                out.append(f"{account}: {'banned' if local.banned else 'not banned'} here, "
                           f"{'banned' if theirs.get('banned') else 'not banned'} on the server")
        return out

    # -- accounts and queries ---------------------------------------------------------------------
    def open(self, account: str, owner: str | None = None) -> None:
        """Open the remote account behind local ``account`` of ``owner`` (``json``: the endpoint's one key)."""
        if self.config.protocol == "json":
            self._keys[account] = self.config.resolved_key(owner)
            return
        r = self._send("POST", self._url("/v1/accounts"), {"X-Owner-Key": self.config.resolved_key(owner)},
                       {"service": self.remote_name}, idempotent=False)
        if r.status_code != 201:
            raise _refusal(r)
        self._keys[account] = str(r.json()["api_key"])

    def query(self, account: str, x: np.ndarray) -> RemoteAnswer:
        """Ask the endpoint about batch ``x`` on ``account``'s remote account."""
        key = self._keys.get(account)
        if key is None:
            raise QueryRefused("unknown-account", f"no remote account behind {account!r}")
        batch = x.tolist()
        idem = {"Idempotency-Key": uuid.uuid4().hex}
        if self.config.protocol == "json":
            c = self.config
            r = self._send("POST", c.url, {c.key_header: c.key_prefix + key, **idem},
                           _put(dict(c.body), c.inputs_field, batch))
            if r.status_code != 200:
                raise _refusal(r)
            return RemoteAnswer(self._rows(_get(_json(r), c.outputs_field), len(x)), len(x))
        r = self._send("POST", self._url(f"/v1/services/{self.remote_name}/predict"), {"X-API-Key": key, **idem},
                       {"inputs": batch})
        if r.status_code != 200:
            raise _refusal(r)
        body = _json(r)
        n = int(body.get("n_answered", -1))
        if not 0 <= n <= len(x):
            raise QueryRefused("remote-error", f"the endpoint answered n_answered={n} for {len(x)} queries")
        return RemoteAnswer(self._rows(body.get("outputs"), n, probs=True), n, body.get("charge"))

    def _rows(self, rows: Any, n: int, probs: bool = False) -> np.ndarray:
        """The answer as float rows ``(n, n_classes)``, or a ``remote-error`` refusal naming what is wrong."""
        try:
            arr = np.asarray(rows, dtype=np.float64)
        except (TypeError, ValueError):
            raise QueryRefused("remote-error", "the endpoint's answer is not a list of numbers") from None
        if not probs and self.config.outputs == "labels":
            if arr.shape != (n,) or not np.all((arr >= 0) & (arr < self.n_classes) & (arr == np.round(arr))):
                raise QueryRefused("remote-error", f"expected {n} class indices in [0, {self.n_classes}), "
                                                   f"got shape {arr.shape}")
            return np.eye(self.n_classes)[arr.astype(np.int64)]
        if n == 0 and arr.size == 0:
            return np.zeros((0, self.n_classes))
        if arr.shape != (n, self.n_classes) or not np.isfinite(arr).all():
            raise QueryRefused("remote-error", f"expected {n} finite rows of {self.n_classes} probabilities, "
                                               f"got shape {arr.shape}")
        return arr

    # -- HTTP with retries ------------------------------------------------------------------------
    def _send(self, method: str, url: str, headers: dict[str, str], body: Any = None, idempotent: bool = True,
              loud_401: bool = True) -> Any:
        """One request, retried after network errors, 5xx and 429 until the deadline (``Retry-After`` honoured,
        capped at ``max_wait``). Raises :class:`RemoteFailure` when the server stays unreachable or failing, or
        answers 401. A request that is not ``idempotent`` (opening an account) is not retried once it may have
        reached the server: a network error after sending it is a failure, not a second account."""
        import httpx

        c = self.config
        delay, start, attempt = c.backoff, self.clock(), 0
        while True:
            out_of_tries = c.retries is not None and attempt >= c.retries
            try:
                r = self.client.request(method, url, headers=headers, json=body, timeout=c.timeout)
            except httpx.TransportError as e:
                sent = not isinstance(e, httpx.ConnectError)
                wait = min(delay, c.max_wait)
                if out_of_tries or (sent and not idempotent) or self.clock() + wait - start > c.deadline:
                    raise RemoteFailure(f"the remote service at {c.url} is unreachable ({type(e).__name__}: {e}) "
                                        f"after {attempt + 1} tries over {self.clock() - start:.1f} s") from None
                self.sleep(wait)
                delay, attempt = delay * 2, attempt + 1
                continue
            if r.status_code == 401 and loud_401:
                raise RemoteFailure(f"the remote service at {c.url} refused the key: {_detail(r)}")
            if r.status_code >= 500 or r.status_code == 429:
                told = _retry_after(r)
                wait = min(delay if told is None else told, c.max_wait)
                hopeless = r.status_code == 429 and (told is None or told > c.max_wait)
                if out_of_tries or hopeless or self.clock() + wait - start > c.deadline:
                    if r.status_code >= 500:
                        raise RemoteFailure(f"the remote service at {c.url} keeps failing: {_detail(r)} (after "
                                            f"{attempt + 1} tries over {self.clock() - start:.1f} s)")
                    return r
                self.sleep(wait)
                delay, attempt = delay * 2, attempt + 1
                continue
            return r


def _retry_after(r: Any) -> float | None:
    value = r.headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def _json(r: Any) -> Any:
    try:
        return r.json()
    except ValueError:
        raise QueryRefused("remote-error", f"the endpoint's answer is not JSON: {r.text[:200]!r}") from None


def _detail(r: Any) -> str:
    try:
        body = r.json()
        detail = body.get("detail", body) if isinstance(body, dict) else body
    except ValueError:
        detail = r.text[:200]
    return f"HTTP {r.status_code}: {detail}"


def _refusal(r: Any) -> Exception:
    """The simulator's error for an endpoint's refusal."""
    try:
        body = r.json()
        reason = body.get("reason") if isinstance(body, dict) else None
    except ValueError:
        reason = None
    s, msg = r.status_code, _detail(r)
    if s in (413, 422):
        return InvalidQuery(f"the remote service rejected the queries: {msg}")
    if s == 402:
        return QueryRefused(reason if reason in BUDGET_REASONS else "money-budget", msg)
    if s == 403:
        return QueryRefused("banned" if reason in (None, "banned") else str(reason), msg)
    by_status = {401: "unknown-account", 404: "unknown-service", 429: "rate-limit"}
    if s in by_status:
        return QueryRefused(by_status[s], msg)
    return QueryRefused("remote-unavailable" if s >= 500 else "remote-error", msg)


def _get(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, list) and part.lstrip("-").isdigit():
            try:
                data = data[int(part)]
            except IndexError:
                raise QueryRefused("remote-error", f"the endpoint's answer has no {path!r}") from None
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            raise QueryRefused("remote-error", f"the endpoint's answer has no {path!r}")
    return data


def _put(data: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node[part] = dict(node.get(part) or {})
        node = node[part]
    node[parts[-1]] = value
    return data


def remote_predict(url: str, key: str, service: str = "api", n_classes: int | None = None,
                   batch_size: int = 256, client: Any = None, **options: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A plain ``predict(x) -> probabilities`` over a remote service (e.g. for ART's ``BlackBoxClassifier``).

    It opens one account on first use (``extractgym`` protocol) and sends ``x`` in batches of ``batch_size``.
    Refusals raise :class:`~extractgym.envs.errors.QueryRefused` (a ban included: a predict function cannot
    return part of an answer); nothing here keeps budgets (the endpoint's own apply).

    Args:
        url, key, service: as in :class:`RemoteConfig` (``key`` is the owner key for ``extractgym``).
        n_classes: classes of the answers (default: asked from an extractgym server).
        batch_size: most queries per request.
        client: an ``httpx.Client`` to use.
        **options: further :class:`RemoteConfig` fields (``protocol``, ``retries``, ``outputs_field``, ...).
    """
    config = RemoteConfig(url=url, key=key, service=service, **options)
    backend = RemoteService(config, service, n_classes or 0, client=client)
    if n_classes is None:
        if config.protocol != "extractgym":
            raise ValueError("give n_classes for a json endpoint")
        r = backend._send("GET", backend._url(f"/v1/services/{service}"), {})
        if r.status_code != 200:
            raise ValueError(f"remote service {service!r} at {url}: {_detail(r)}")
        backend.n_classes = int(r.json()["n_classes"])

    def predict(x: Any) -> np.ndarray:
        if "predict" not in backend._keys:
            backend.open("predict")
        arr = x if isinstance(x, np.ndarray) and x.dtype == object else np.asarray(x, dtype=np.float32)
        out = []
        for i in range(0, len(arr), batch_size):
            chunk = arr[i:i + batch_size]
            ans = backend.query("predict", chunk)
            if ans.n_answered < len(chunk):
                raise QueryRefused("banned", f"the remote service banned the account after {i + ans.n_answered} "
                                             f"of {len(arr)} queries")
            out.append(ans.outputs)
        return np.concatenate(out) if out else np.zeros((0, backend.n_classes))

    return predict


def reconcile(api: Any) -> list[str]:
    """Every remote service's disagreements between its server's books and ``api``'s (empty: they agree)."""
    out = []
    for svc in api.services.values():
        if isinstance(svc.backend, RemoteService):
            out += [f"service {svc.name}: {p}" for p in svc.backend.reconcile(api)]
    return out
