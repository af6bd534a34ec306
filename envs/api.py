"""The simulated prediction API: services, accounts, pricing, budgets and an append-only ledger.

Every request passes the same gate, in this order, and is either served whole (or up to the point
where a defender bans the account) or refused with a reason, never silently truncated:

1. the account exists, belongs to the caller and is not banned;
2. the queries are valid for the service's victim (:func:`~extractgym.envs.validation.validate_queries`):
   invalid queries raise :class:`InvalidQuery` and are neither charged nor logged;
3. the per-account rate limit for this round, then the owner's query and money budgets;
4. the defenders screen the batch; a ban serves only the leading queries they accepted;
5. the victim answers, the defenders shape the probabilities, the service's output format applies;
6. the charge (after the account's free quota) and a ledger entry are written.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from extractgym.envs.errors import QueryRefused
from extractgym.envs.outputs import one_hot_top, top_k
from extractgym.envs.protocols import DefenderBody
from extractgym.envs.validation import validate_queries
from extractgym.victims.base import Victim

OUTPUT_FORMATS = ("probs", "top-k", "label")


@dataclass(frozen=True)
class ServiceConfig:
    """Commercial terms of one service.

    Attributes:
        name: service id used by accounts and the ledger.
        price_per_query: money charged per answered query beyond the free quota.
        account_price: money charged when an account is opened.
        free_quota: answered queries per account that cost nothing.
        rate_limit: most queries one account may send per round (``None``: unlimited).
        output: ``"probs"``, ``"top-k"`` (the ``top_k`` largest probabilities, renormalised) or ``"label"`` (one-hot).
        top_k: k for the ``"top-k"`` format.
    """

    name: str
    price_per_query: float = 0.0
    account_price: float = 0.0
    free_quota: int = 0
    rate_limit: int | None = None
    output: str = "probs"
    top_k: int = 1

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_FORMATS:
            raise ValueError(f"service {self.name!r}: output must be one of {OUTPUT_FORMATS}, got {self.output!r}")
        for attr in ("price_per_query", "account_price", "free_quota", "top_k"):
            value = getattr(self, attr)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"service {self.name!r}: {attr} must be finite and >= 0, got {value}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"service {self.name!r}: rate_limit must be >= 1 or None, got {self.rate_limit}")


@dataclass(frozen=True)
class Budget:
    """Most an owner may ever spend; ``None`` is unlimited."""

    queries: int | None = None
    money: float | None = None
    accounts: int | None = None


@dataclass
class Wallet:
    """What an owner has spent so far, against its :class:`Budget`."""

    budget: Budget
    queries: int = 0
    money: float = 0.0
    accounts: int = 0

    def left(self, what: str) -> float:
        cap = getattr(self.budget, what)
        return math.inf if cap is None else cap - getattr(self, what)

    def can_pay(self, amount: float) -> bool:
        """Whether ``amount`` fits the money budget (1e-12 of slack for float sums of prices)."""
        return self.left("money") >= amount - 1e-12


@dataclass
class Account:
    """An API account. Only the API mutates it."""

    id: str
    owner: str
    service: str
    opened_round: int
    free_left: int
    queries: int = 0
    round_queries: int = 0
    banned: bool = False
    banned_round: int | None = None


@dataclass(frozen=True)
class LedgerEntry:
    """One event. ``kind``: ``open``, ``query``, ``ban``. ``digest`` fingerprints the queries' bytes."""

    seq: int
    round: int
    kind: str
    owner: str
    account: str
    service: str
    n: int = 0
    charge: float = 0.0
    digest: str = ""
    note: str = ""


class Ledger:
    """Append-only record of accounts opened, queries served and bans. There is no way to edit or remove."""

    def __init__(self) -> None:
        self._entries: list[LedgerEntry] = []

    def append(self, **fields: Any) -> LedgerEntry:
        entry = LedgerEntry(seq=len(self._entries), **fields)
        self._entries.append(entry)
        return entry

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(tuple(self._entries))

    def __getitem__(self, i: int) -> LedgerEntry:
        return self._entries[i]

    def digest(self) -> str:
        """A fingerprint of the whole ledger: equal ledgers, equal digests."""
        h = hashlib.sha256()
        for e in self._entries:
            h.update(repr(e).encode())
        return h.hexdigest()


class LedgerView:
    """Read access to a :class:`Ledger` (what defenders get): no ``append``."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def __len__(self) -> int:
        return len(self._ledger)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self._ledger)

    def __getitem__(self, i: int) -> LedgerEntry:
        return self._ledger[i]

    def digest(self) -> str:
        return self._ledger.digest()


@dataclass(frozen=True)
class Response:
    """The API's answer. ``outputs`` are the defended, formatted rows for the ``n_answered`` leading queries."""

    outputs: np.ndarray
    n_answered: int
    charge: float
    banned: bool = False
    raw: np.ndarray | None = field(default=None, repr=False)  # undefended victim rows; audit calls only


@dataclass
class Service:
    """A service: its terms and its victim. A remote service's answers come from ``backend``
    (:class:`~extractgym.envs.remote.RemoteService`: the endpoint's own gate and defences); the victim is the
    local reference the referee scores against, and the books are kept here as for a local service."""

    config: ServiceConfig
    victim: Victim
    backend: Any = None

    @property
    def name(self) -> str:
        return self.config.name


def format_outputs(probs: np.ndarray, config: ServiceConfig) -> np.ndarray:
    """Apply a service's output format to rows of probabilities."""
    if config.output == "probs":
        return probs
    return one_hot_top(probs) if config.output == "label" else top_k(probs, config.top_k)


class PredictionAPI:
    """Services behind one front door, with owners, accounts, defences and a ledger."""

    def __init__(self, services: Sequence[Service], defences: Sequence[DefenderBody] = ()) -> None:
        if not services:
            raise ValueError("the API needs at least one service")
        self.services = {s.name: s for s in services}
        if len(self.services) != len(services):
            raise ValueError("service names must be unique")
        self.defences = list(defences)
        self.ledger = Ledger()
        self.accounts: dict[str, Account] = {}
        self.wallets: dict[str, Wallet] = {}
        self.round = 0

    # -- owners and accounts -------------------------------------------------------------------
    def register_owner(self, owner: str, budget: Budget = Budget()) -> Wallet:
        if owner in self.wallets:
            raise ValueError(f"owner {owner!r} is already registered")
        self.wallets[owner] = Wallet(budget)
        return self.wallets[owner]

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise QueryRefused("unknown-service", f"no service {name!r}; known: {', '.join(self.services)}") from None

    def open_account(self, owner: str, service: str) -> Account:
        svc = self.service(service)
        wallet = self.wallets.get(owner)
        if wallet is None:
            raise ValueError(f"unknown owner {owner!r}: register it with register_owner() first")
        if wallet.left("accounts") < 1:
            raise QueryRefused("account-budget", f"{owner} has used all {wallet.budget.accounts} accounts of its budget")
        price = svc.config.account_price
        if not wallet.can_pay(price):
            raise QueryRefused("money-budget", f"opening an account costs {price:g}; {owner} has {wallet.left('money'):g} left")
        acc = Account(id=f"{service}/{owner}/{wallet.accounts}", owner=owner, service=service,
                      opened_round=self.round, free_left=svc.config.free_quota)
        if svc.backend is not None:
            svc.backend.open(acc.id, owner)  # the remote account; a refusal raises before anything changes here
        wallet.accounts += 1
        wallet.money += price
        self.accounts[acc.id] = acc
        self.ledger.append(round=self.round, kind="open", owner=owner, account=acc.id, service=service, charge=price)
        return acc

    def ban(self, account_id: str, note: str = "") -> None:
        acc = self.accounts[account_id]
        if not acc.banned:
            acc.banned, acc.banned_round = True, self.round
            self.ledger.append(round=self.round, kind="ban", owner=acc.owner, account=acc.id,
                               service=acc.service, note=note)

    def start_round(self, round_index: int) -> None:
        self.round = round_index
        for acc in self.accounts.values():
            acc.round_queries = 0

    # -- queries -------------------------------------------------------------------------------
    def quote(self, account: Account, n: int) -> float:
        """Money that ``n`` answered queries on ``account`` would cost now."""
        return max(0, n - account.free_left) * self.services[account.service].config.price_per_query

    def affordable(self, owner: str, account_id: str, n: int) -> int:
        """The most of ``n`` queries the gate of :meth:`query` would let through on this account now (before any
        defence screens them): the rate limit, then the query and money budgets, with the same tests."""
        acc = self.accounts.get(account_id)
        if acc is None or acc.owner != owner or acc.banned:
            return 0
        cfg, wallet = self.services[acc.service].config, self.wallets[owner]
        if cfg.rate_limit is not None:
            n = min(n, cfg.rate_limit - acc.round_queries)
        n = int(min(n, wallet.left("queries")))
        left = wallet.left("money")
        if cfg.price_per_query > 0 and math.isfinite(left):
            n = min(n, acc.free_left + int((left + 1e-9) // cfg.price_per_query))
            while n > 0 and not wallet.can_pay(self.quote(acc, n)):
                n -= 1  # the division above may round up by one: the gate's own test decides
        return max(n, 0)

    def query(self, owner: str, account_id: str, x: Any, audit: bool = False) -> Response:
        """Serve a batch of queries for ``owner`` on ``account_id`` (see the module docstring for the gate)."""
        acc = self.accounts.get(account_id)
        if acc is None:
            raise QueryRefused("unknown-account", f"no account {account_id!r}")
        if acc.owner != owner:
            raise QueryRefused("not-owner", f"account {account_id!r} does not belong to {owner}")
        if acc.banned:
            raise QueryRefused("banned", f"account {account_id!r} was banned in round {acc.banned_round}")
        svc = self.services[acc.service]
        x = validate_queries(x, svc.victim.input_spec)
        n = len(x)
        limit = svc.config.rate_limit
        if limit is not None and acc.round_queries + n > limit:
            raise QueryRefused("rate-limit", f"{n} queries would exceed the limit of {limit} per account per round "
                                             f"({acc.round_queries} already sent this round)")
        wallet = self.wallets[owner]
        if wallet.left("queries") < n:
            raise QueryRefused("query-budget", f"{n} queries requested; {owner} has {wallet.left('queries'):g} left")
        if not wallet.can_pay(self.quote(acc, n)):
            raise QueryRefused("money-budget", f"{n} queries cost {self.quote(acc, n):g}; "
                                               f"{owner} has {wallet.left('money'):g} left")
        digest = _digest(x)  # before any state changes: nothing below may fail half-way
        if svc.backend is not None:
            accepted, out, raw = self._ask_remote(svc, acc, x)
        else:
            accepted = n
            for d in self.defences:
                # a defence sees a copy of the account; a bad answer (negative, too large) cannot serve more
                accepted = max(0, min(accepted, int(d.screen(replace(acc), x[:accepted]))))
            raw = svc.victim.predict_proba(x[:accepted]) if accepted else np.zeros((0, svc.victim.n_classes))
            raw.setflags(write=False)  # defences return new arrays; the undefended rows stay the referee's truth
            out = raw
            for d in self.defences:
                out = d.shape(out, acc, x[:accepted])
            out = format_outputs(out, svc.config)
        banned = accepted < n
        served = x[:accepted]
        charge = self.quote(acc, accepted)
        acc.free_left = max(0, acc.free_left - accepted)
        acc.queries += accepted
        acc.round_queries += accepted
        wallet.queries += accepted
        wallet.money += charge
        self.ledger.append(round=self.round, kind="query", owner=owner, account=acc.id, service=acc.service,
                           n=accepted, charge=charge, digest=digest if accepted == n else _digest(served))
        if banned:
            self.ban(acc.id, note=f"flagged after {accepted} of {n} queries")
        return Response(outputs=out, n_answered=accepted, charge=charge, banned=banned, raw=raw if audit else None)

    def _ask_remote(self, svc: Service, acc: Account, x: np.ndarray) -> tuple[int, np.ndarray, None]:
        """A remote service's answer (its own defences applied); a remote ban is recorded here too."""
        try:
            answer = svc.backend.query(acc.id, x)
        except QueryRefused as e:
            if e.reason == "banned":
                self.ban(acc.id, note=f"banned by the remote service: {e}")
            raise
        return answer.n_answered, answer.outputs, None

    def defended(self, probs: np.ndarray, x: np.ndarray | None, service: str) -> np.ndarray:
        """What the defences and the output format make of ``probs`` (the referee's audit; nothing logged)."""
        out = probs
        for d in self.defences:
            out = d.shape(out, None, x)
        return format_outputs(out, self.services[service].config)


def _digest(x: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=8)
    if x.dtype == object:
        for s in x:
            h.update(s.encode())
            h.update(b"\0")
    else:
        h.update(x.tobytes())
    return h.hexdigest()


@dataclass
class OutputStats:
    """Running statistics of the outputs an owner received (what it could compute itself)."""

    n: int = 0
    requests: int = 0
    bans: int = 0
    confidence: float = 0.0  # sum of top probabilities
    entropy: float = 0.0  # sum of entropies normalised by log(C)

    def add(self, r: Response) -> None:
        self.requests += 1
        self.bans += int(r.banned)
        if r.n_answered:
            p = r.outputs
            self.n += r.n_answered
            self.confidence += float(p.max(axis=1).sum())
            ent = -(p * np.log(np.clip(p, 1e-12, 1.0))).sum(axis=1) / math.log(max(p.shape[1], 2))
            self.entropy += float(ent.sum())


class Client:
    """An owner's handle on the API: all an attacker can see and do. No victim, no test set, no other owner."""

    def __init__(self, api: PredictionAPI, owner: str) -> None:
        self._api = api
        self.owner = owner
        self.stats = OutputStats()

    @property
    def wallet(self) -> Wallet:
        """A copy of this owner's wallet (editing it changes nothing at the API)."""
        return replace(self._api.wallets[self.owner])

    @property
    def round(self) -> int:
        return self._api.round

    def service_terms(self, name: str) -> ServiceConfig:
        return self._api.service(name).config

    def service_info(self, name: str) -> tuple[int, Any]:
        """``(n_classes, input_spec)`` of a service: what any customer is told."""
        v = self._api.service(name).victim
        return v.n_classes, v.input_spec

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self._api.services)

    def accounts(self, service: str | None = None, active: bool = True) -> list[Account]:
        """Copies of this owner's accounts (editing a copy changes nothing at the API)."""
        return [replace(a) for a in self._api.accounts.values() if a.owner == self.owner
                and (service is None or a.service == service) and (not active or not a.banned)]

    def open_account(self, service: str) -> Account:
        return replace(self._api.open_account(self.owner, service))

    def query(self, account: Account, x: Any) -> Response:
        """Send queries on ``account``; raises :class:`QueryRefused` or :class:`InvalidQuery` (nothing charged)."""
        response = self._api.query(self.owner, account.id, x)
        self.stats.add(response)
        return response

    def quote(self, account: Account, n: int) -> float:
        return self._api.quote(account, n)

    def affordable(self, account: Account, n: int) -> int:
        """The most of ``n`` queries the API would serve on ``account`` right now, budgets and rate limit included."""
        return self._api.affordable(self.owner, account.id, n)


class DefenderView:
    """Read-only facts a defender may use besides the requests it screens: accounts and the ledger."""

    def __init__(self, api: PredictionAPI) -> None:
        self._api = api

    @property
    def round(self) -> int:
        return self._api.round

    @property
    def ledger(self) -> LedgerView:
        return LedgerView(self._api.ledger)

    def account(self, account_id: str) -> Account:
        """A copy of an account (editing it changes nothing at the API)."""
        return replace(self._api.accounts[account_id])

    def n_classes(self, service: str) -> int:
        return self._api.services[service].victim.n_classes

    def services(self) -> tuple[str, ...]:
        return tuple(self._api.services)

    def input_spec(self, service: str) -> Any:
        """The service's input spec (what any customer is told): stateful detectors check their data matches."""
        return self._api.services[service].victim.input_spec

    def victim_name(self, service: str) -> str:
        return str(getattr(self._api.services[service].victim, "name", service))

    def victim_proba(self, service: str, x: np.ndarray) -> np.ndarray:
        """The owner's own undefended victim on ``x`` (nothing charged or logged): PRADA groups queries by its class."""
        return self._api.services[service].victim.predict_proba(x)
