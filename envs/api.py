"""The simulated prediction API: services, accounts, pricing, budgets and an append-only ledger.

Every request passes the same gate, in this order, and is either served whole (or up to the point
where a defender bans the account) or refused with a reason, never silently truncated:

1. the account exists, belongs to the caller and is not banned;
2. the request's structure (type, dtype, shape, batch size up to
   :data:`~extractgym.envs.validation.MAX_BATCH`) is checked without reading its values, so a huge zero-copy view
   is refused before it costs memory; then the values, on a private copy (NaN, range, empty text): the sender
   cannot change what the defences and the ledger see after sending. Invalid queries raise :class:`InvalidQuery`
   and are neither charged nor logged;
3. the per-account rate limit for this round, then the owner's query and money budgets (:class:`QueryRefused`,
   nothing charged);
4. the defenders screen the batch; a ban serves only the leading queries they accepted;
5. the victim answers, the defenders shape the probabilities, the service's output format applies;
6. a ledger entry is written, and the charge (after the account's free quota) follows from it.

One set of books: accounts and wallets change only by applying ledger entries (:meth:`PredictionAPI.replay`
rebuilds them from a stored ledger), and the referee's round figures are pure functions of the ledger.
Defences receive their knob values with every call (:meth:`PredictionAPI.set_defence_knobs`), and copies of
accounts, never the API's own objects.
"""

from __future__ import annotations

import hashlib
import math
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from extractgym.envs.errors import InvalidQuery, QueryRefused
from extractgym.envs.identity import Fingerprint, Identities, IdentityRequest
from extractgym.envs.outputs import one_hot_top, top_k
from extractgym.envs.protocols import DefenderBody, preset_values
from extractgym.envs.validation import validate_queries
from extractgym.victims.base import Victim

OUTPUT_FORMATS = ("probs", "top-k", "label")


MAX_MONEY = 1e12  # money, prices and budgets: far beyond any real one, and exact in float arithmetic
MAX_COUNT = 10**12


@dataclass(frozen=True)
class Term:
    """One published term of :class:`ServiceConfig`: its name, type, default, meaning and bounds."""

    name: str
    type: Any
    default: Any
    doc: str
    bounds: Mapping[str, Any]


def _term(default: Any, doc: str, **bounds: Any) -> Any:
    """A published term of a service: its default, what it means, and its bounds (pydantic ``Field`` keywords:
    ``ge``, ``le``). The scenario schema, the HTTP service's models and the remote client all derive from
    :class:`ServiceConfig`'s fields: a new term is one line here (see :data:`SERVICE_TERMS`)."""
    return field(default=default, metadata={"doc": doc, "bounds": bounds})


@dataclass(frozen=True)
class ServiceConfig:
    """Commercial terms of one service: ``name`` and the published terms below, each declared once here (its
    default, meaning and bounds); the scenario schema (``services:``), the HTTP service's ``/v1/services`` model and
    the remote client's check of a server's terms are derived from these fields (:data:`SERVICE_TERMS`)."""

    name: str
    price_per_query: float = _term(0.0, "money charged per answered query beyond the free quota",
                                   ge=0, le=MAX_MONEY)
    account_price: float = _term(0.0, "money charged when an account is opened", ge=0, le=MAX_MONEY)
    free_quota: int = _term(0, "answered queries per account that cost nothing", ge=0, le=MAX_COUNT)
    rate_limit: int | None = _term(None, "most queries one account may send per round (null: unlimited)",
                                   ge=1, le=MAX_COUNT)
    output: Literal["probs", "top-k", "label"] = _term(
        "probs", "probs, top-k (the top_k largest probabilities, renormalised) or label (one-hot)")
    top_k: int = _term(1, "k for the top-k output format", ge=1, le=100_000)
    charge_rejected: bool = _term(False, "queries a defence rejects are charged and count against the query budget, "
                                         "as answered ones, with or without a ban (some providers bill every call)")
    account_credit: float = _term(0.0, "prepaid credit deposited when an account is opened; queries are paid from "
                                       "it before the owner's wallet, and what is left is lost when the account is "
                                       "banned", ge=0, le=MAX_MONEY)
    identity_cost: float = _term(0.0, "what each new account costs its owner beyond the provider's price (a "
                                      "verified card or phone number): paid from the owner's money, not provider "
                                      "revenue", ge=0, le=MAX_MONEY)
    ban_delay: int = _term(0, "rounds between a defence's flag and the ban taking effect (0: at once, the rest of "
                              "the request refused); a delayed ban lets the flagged account keep buying until then",
                           ge=0, le=1000)
    instrument_cost: float = _term(0.0, "what a fresh payment instrument for a new account costs its owner (an API "
                                        "that keeps identities: docs/sybil.md); reusing one is free but links the "
                                        "accounts", ge=0, le=MAX_MONEY)
    proxy_cost: float = _term(0.0, "what a fresh network exit (a proxy) for a new account costs its owner; reusing "
                                   "one is free but links the accounts", ge=0, le=MAX_MONEY)
    client_cost: float = _term(0.0, "what a distinct client signature (a unique browser profile) for a new account "
                                    "costs its owner, instead of its own tool's signature", ge=0, le=MAX_MONEY)

    @property
    def opening_charge(self) -> float:
        """Money an owner pays to open one account: price, prepaid credit and identity."""
        return self.account_price + self.account_credit + self.identity_cost

    def __post_init__(self) -> None:
        if self.output not in OUTPUT_FORMATS:
            raise ValueError(f"service {self.name!r}: output must be one of {OUTPUT_FORMATS}, got {self.output!r}")
        for term in SERVICE_TERMS:
            value = getattr(self, term.name)
            if value is None or isinstance(value, str | bool):
                continue
            low, high = term.bounds.get("ge", -math.inf), term.bounds.get("le", math.inf)
            if not (math.isfinite(value) and low <= value <= high):
                raise ValueError(f"service {self.name!r}: {term.name} must be finite and in [{low:g}, {high:g}], "
                                 f"got {value}")


_HINTS = typing.get_type_hints(ServiceConfig)
SERVICE_TERMS: tuple[Term, ...] = tuple(Term(f.name, _HINTS[f.name], f.default, f.metadata["doc"], f.metadata["bounds"])
                                        for f in fields(ServiceConfig) if f.name != "name")
"""The published terms of a service, in declaration order (every :class:`ServiceConfig` field but ``name``)."""


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
    credit: float = 0.0  # prepaid credit left (lost on a ban)
    queries: int = 0
    round_queries: int = 0
    banned: bool = False
    banned_round: int | None = None
    flagged_round: int | None = None  # a defence flagged it; the ban follows after the service's ban_delay


@dataclass(frozen=True)
class LedgerEntry:
    """One event. ``kind``: ``open`` (charge: price, prepaid credit and identity), ``query`` (charge: what the wallet
    paid after the free quota and the account's credit), ``reject`` (queries a defence refused without a ban; ``n``
    counts them where the service bills rejections), ``flag`` (a defence flagged the account; the ban follows after
    the service's delay) and ``ban``. ``digest`` fingerprints the queries' bytes."""

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
    """Append-only record of accounts opened, queries served and bans. There is no way to edit or remove.

    ``sink`` (optional) receives every entry before it is stored, e.g. to write it durably in the same transaction
    as the request (the HTTP service); if the sink raises, the entry is not stored and nothing changes.
    """

    def __init__(self, sink: Callable[[LedgerEntry], None] | None = None) -> None:
        self._entries: list[LedgerEntry] = []
        self.sink = sink

    def append(self, **fields: Any) -> LedgerEntry:
        entry = LedgerEntry(seq=len(self._entries), **fields)
        if self.sink is not None:
            self.sink(entry)
        self._entries.append(entry)
        return entry

    def since(self, start: int) -> tuple[LedgerEntry, ...]:
        """The entries from position ``start`` on (a round's slice)."""
        return tuple(self._entries[start:])

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

    def since(self, start: int) -> tuple[LedgerEntry, ...]:
        return self._ledger.since(start)


@dataclass(frozen=True)
class Allowance:
    """How many of the queries asked about an account would pass the gate now, and what limits them.

    ``limit`` is ``None`` when all would pass, else the binding constraint: ``"rate-limit"`` (this account, this
    round: another account may take more), ``"query-budget"``, ``"money-budget"`` (the owner: no account helps) or
    ``"unusable"`` (unknown, foreign or banned account).
    """

    n: int
    limit: str | None = None


@dataclass(frozen=True)
class Verdict:
    """A defence's decision on a request: which of its queries to serve, and whether to ban the account.

    A defence's ``screen`` may return an ``int`` instead: serve that many leading queries, and ban the account if
    that is fewer than all (a stateful detector that flags a query). A verdict can also *reject* queries without a
    ban (Blacklight-style): they are not answered, charged only if the service says so, and the account stays.
    """

    serve: np.ndarray  # bool per query
    ban: bool = False

    @staticmethod
    def of(answer: Any, n: int) -> Verdict:
        """A screen's answer as a verdict on ``n`` queries; an out-of-range count cannot serve more than asked."""
        if isinstance(answer, Verdict):
            serve = np.asarray(answer.serve, dtype=bool).reshape(-1)
            if len(serve) != n:
                raise ValueError(f"a defence's verdict covers {len(serve)} queries; the request has {n}")
            return Verdict(serve, bool(answer.ban))
        k = max(0, min(n, int(answer)))
        return Verdict(np.arange(n) < k, k < n)


@dataclass(frozen=True)
class Response:
    """The API's answer. ``outputs`` are the defended, formatted rows of the ``n_answered`` queries served, which
    are the request's rows ``answered`` (the leading ones unless a defence rejected some); ``rejected`` counts the
    queries a defence refused without banning the account."""

    outputs: np.ndarray
    n_answered: int
    charge: float
    banned: bool = False
    raw: np.ndarray | None = field(default=None, repr=False)  # undefended victim rows; audit calls only
    answered: np.ndarray | None = field(default=None, repr=False)
    rejected: int = 0

    @property
    def rows(self) -> np.ndarray:
        """Indices (into the request) of the rows of ``outputs``."""
        return np.arange(self.n_answered) if self.answered is None else self.answered


@dataclass(frozen=True)
class Defended:
    """What the defences made of one batch (:meth:`PredictionAPI.defend`): the request's ``rows`` served, whether
    a defence banned the account (``banned``) or flagged it for a delayed ban (``flagged``), the victim's
    undefended answers to those rows (``raw``; ``None`` from a remote service) and the defended, formatted
    ``outputs``."""

    rows: np.ndarray
    banned: bool
    flagged: bool
    raw: np.ndarray | None
    outputs: np.ndarray


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

    def __init__(self, services: Sequence[Service], defences: Sequence[DefenderBody] = (),
                 identities: Identities | None = None) -> None:
        if not services:
            raise ValueError("the API needs at least one service")
        self.services = {s.name: s for s in services}
        if len(self.services) != len(services):
            raise ValueError("service names must be unique")
        self.defences = list(defences)
        self.defence_knobs: list[dict[str, Any]] = [preset_values(d.knobs) for d in self.defences]
        self.ledger = Ledger()
        self.accounts: dict[str, Account] = {}
        self.wallets: dict[str, Wallet] = {}
        self.round = 0
        # the fingerprints of accounts (docs/sybil.md); None: the API keeps no identities (every shipped scenario
        # before issue 26)
        self.identities = identities
        self.now: float | None = None  # time of day (0..1) of the request being served, where its sender gave one
        self.banned_count = 0
        # indexes that keep every per-query and per-round cost flat in the number of accounts (docs/sybil.md):
        # an owner's accounts, the accounts with traffic this round, and those flagged for a delayed ban
        self._owned: dict[str, dict[str, Account]] = {}
        self._active: set[str] = set()
        self._flagged: dict[str, None] = {}
        self._opened: dict[str, int] = {}  # account -> the seq of its open entry (accounts' creation order)
        # called with each query's ledger entry and the validated batch it was asked (the HTTP service stores the
        # batch with the entry, in the same transaction); None: nothing
        self.on_query: Callable[[LedgerEntry, np.ndarray], None] | None = None

    def set_defence_knobs(self, values: Sequence[Mapping[str, Any]]) -> None:
        """This round's knob values, one mapping per defence (passed to every screen/shape/end_round call)."""
        if len(values) != len(self.defences):
            raise ValueError(f"{len(values)} knob settings for {len(self.defences)} defences")
        self.defence_knobs = [dict(v) for v in values]

    # -- the books: every state change is a ledger entry applied here ---------------------------------
    def _record(self, **fields: Any) -> LedgerEntry:
        entry = self.ledger.append(**fields)
        self._apply(entry)
        return entry

    def _apply(self, e: LedgerEntry) -> None:
        wallet = self.wallets[e.owner]
        wallet.money += e.charge
        if e.kind == "open":
            cfg = self.services[e.service].config
            wallet.accounts += 1
            acc = self.accounts[e.account] = Account(id=e.account, owner=e.owner, service=e.service,
                                                     opened_round=e.round, free_left=cfg.free_quota,
                                                     credit=cfg.account_credit)
            self._owned.setdefault(e.owner, {})[e.account] = acc
            self._opened[e.account] = e.seq
            fp = Fingerprint.decode(e.note) if self.identities is not None else None
            if fp is not None:
                self.identities.record(e.owner, e.account, fp)
        elif e.kind in ("query", "reject"):  # a reject entry's n counts only where the service charges rejections
            acc = self.accounts[e.account]
            acc.credit -= min(self._billed(acc, e.n), acc.credit)  # the wallet paid the rest (the entry's charge)
            acc.free_left = max(0, acc.free_left - e.n)
            acc.queries += e.n
            if e.round == self.round:
                acc.round_queries += e.n
                self._active.add(acc.id)
            wallet.queries += e.n
        elif e.kind == "ban":
            acc = self.accounts[e.account]
            self.banned_count += not acc.banned
            acc.banned, acc.banned_round = True, e.round
            self._flagged.pop(acc.id, None)
        elif e.kind == "flag":
            self.accounts[e.account].flagged_round = e.round
            self._flagged[e.account] = None

    def replay(self, entries: Iterable[LedgerEntry]) -> None:
        """Rebuild accounts, wallets and bans from stored entries (owners must be registered first)."""
        for e in entries:
            stored = self.ledger.append(**{k: v for k, v in vars(e).items() if k != "seq"})
            if stored.seq != e.seq:
                raise ValueError(f"ledger replay out of order: entry {e.seq} would be stored as {stored.seq}")
            self._apply(stored)

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

    def open_account(self, owner: str, service: str, identity: IdentityRequest | None = None) -> Account:
        """Open an account for ``owner`` on ``service``. Where the API keeps identities, ``identity`` says which of
        the owner's resources equip it (default: reuse its first instrument and network, its own client), and the
        fresh ones are charged with the opening (docs/sybil.md)."""
        svc = self.service(service)
        wallet = self.wallets.get(owner)
        if wallet is None:
            raise ValueError(f"unknown owner {owner!r}: register it with register_owner() first")
        if identity is not None and self.identities is None:
            raise ValueError("this API keeps no identities (the scenario has no identities: section)")
        if wallet.left("accounts") < 1:
            raise QueryRefused("account-budget", f"{owner} has used all {wallet.budget.accounts} accounts of its budget")
        price = svc.config.opening_charge + self._identity_quote(owner, svc.config, identity)
        if not wallet.can_pay(price):
            raise QueryRefused("money-budget", f"opening an account costs {price:g}; {owner} has {wallet.left('money'):g} left")
        account = f"{service}/{owner}/{wallet.accounts}"
        if svc.backend is not None:
            if self.identities is not None:
                raise ValueError("identities are kept for local services only")
            svc.backend.open(account, owner)  # the remote account; a refusal raises before anything changes here
        note = self.identities.draw(owner, identity or IdentityRequest()).encode() if self.identities else ""
        entry = self._record(round=self.round, kind="open", owner=owner, account=account, service=service,
                             charge=price, note=note)
        return self.accounts[entry.account]

    def _identity_quote(self, owner: str, config: ServiceConfig, identity: IdentityRequest | None) -> float:
        return 0.0 if self.identities is None else self.identities.quote(owner, identity or IdentityRequest(), config)

    def can_open(self, owner: str, service: str, queries: int = 1, identity: IdentityRequest | None = None) -> bool:
        """Whether ``owner`` could open an account on ``service`` now and then buy ``queries`` on it (the gate's
        own tests: account budget, account price and fresh identity resources plus the charge of those queries
        after the free quota)."""
        svc, wallet = self.service(service), self.wallets[owner]
        if wallet.left("accounts") < 1 or wallet.left("queries") < queries:
            return False
        cfg = svc.config
        charge = max(0.0, max(0, queries - cfg.free_quota) * cfg.price_per_query - cfg.account_credit)
        return wallet.can_pay(cfg.opening_charge + self._identity_quote(owner, cfg, identity) + charge)

    def owned(self, owner: str) -> Mapping[str, Account]:
        """``owner``'s accounts (the API's own objects, in opening order): an index, so that asking costs nothing
        per other account."""
        return self._owned.get(owner, {})

    def ban(self, account_id: str, note: str = "") -> None:
        acc = self.accounts[account_id]
        if not acc.banned:
            if acc.credit > 0:
                note = f"{note}; {acc.credit:g} prepaid credit forfeited".lstrip("; ")
            self._record(round=self.round, kind="ban", owner=acc.owner, account=acc.id, service=acc.service, note=note)

    def flag(self, account_id: str, note: str = "") -> None:
        """A defence flagged the account: ban it now, or after the service's ``ban_delay`` rounds."""
        acc = self.accounts[account_id]
        if acc.banned or acc.flagged_round is not None:
            return
        if self.services[acc.service].config.ban_delay == 0:
            self.ban(account_id, note)
        else:
            self._record(round=self.round, kind="flag", owner=acc.owner, account=acc.id, service=acc.service, note=note)

    def start_round(self, round_index: int) -> None:
        """Open a round: rate-limit counts restart and delayed bans fall due, before the round's traffic. Its cost
        is in the accounts that had traffic or a pending flag, not in all accounts."""
        self.round = round_index
        for account_id in self._active:
            self.accounts[account_id].round_queries = 0
        self._active.clear()
        due = [self.accounts[a] for a in self._flagged]
        due = [acc for acc in due if round_index >= acc.flagged_round + self.services[acc.service].config.ban_delay]
        for acc in sorted(due, key=lambda a: self._opened[a.id]):  # in the accounts' opening order
            self.ban(acc.id, note=f"flagged in round {acc.flagged_round}")

    def sweep(self) -> None:
        """Bans the defences ask for after a round's traffic (account linking acts on whole clusters, including
        accounts that send nothing more): each defence with a ``sweep(knobs)`` hook returns ``(account id, note)``
        pairs, flagged here in order (banned now, or after the service's ``ban_delay``)."""
        for d, knobs in zip(self.defences, self.defence_knobs, strict=True):
            hook = getattr(d, "sweep", None)
            if not callable(hook):
                continue
            for account_id, note in hook(knobs):
                if account_id in self.accounts:
                    self.flag(account_id, note)

    # -- queries -------------------------------------------------------------------------------
    def _billed(self, account: Account, n: int) -> float:
        """The price of ``n`` answered queries on ``account`` after its free quota (before its prepaid credit)."""
        return max(0, n - account.free_left) * self.services[account.service].config.price_per_query

    def quote(self, account: Account, n: int) -> float:
        """Money from the owner's wallet that ``n`` answered queries on ``account`` would cost now (the account's
        free quota first, then its prepaid credit)."""
        return max(0.0, self._billed(account, n) - account.credit) if account.credit > 0 else self._billed(account, n)

    def affordable(self, owner: str, account_id: str, n: int) -> Allowance:
        """How many of ``n`` queries the gate of :meth:`query` would let through on this account now (before any
        defence screens them), and the binding limit: the rate limit, then the query and money budgets, with the
        same tests as the gate."""
        acc = self.accounts.get(account_id)
        if acc is None or acc.owner != owner or acc.banned:
            return Allowance(0, "unusable")
        cfg, wallet = self.services[acc.service].config, self.wallets[owner]
        want, limit = max(int(n), 0), None
        if cfg.rate_limit is not None and cfg.rate_limit - acc.round_queries < want:
            want, limit = max(cfg.rate_limit - acc.round_queries, 0), "rate-limit"
        if wallet.left("queries") < want:
            want, limit = max(int(wallet.left("queries")), 0), "query-budget"
        left = wallet.left("money")
        if cfg.price_per_query > 0 and math.isfinite(left) and not wallet.can_pay(self.quote(acc, want)):
            most = acc.free_left + int(min((max(left, 0.0) + acc.credit + 1e-9) // cfg.price_per_query, 2.0**62))
            want = min(want, most)
            while want > 0 and not wallet.can_pay(self.quote(acc, want)):
                want -= 1  # the division above may round up by one: the gate's own test decides
            limit = "money-budget"
        return Allowance(want, limit if want < n else None)

    def query(self, owner: str, account_id: str, x: Any, audit: bool = False, at: float | None = None) -> Response:
        """Serve a batch of queries for ``owner`` on ``account_id`` (see the module docstring for the gate).

        ``at``: the time of day the request is sent (a fraction of the round in [0, 1)), which the defences see as
        :attr:`DefenderView.now`; ``None``: untimed."""
        if at is not None and (isinstance(at, bool) or not isinstance(at, int | float | np.floating)
                               or not 0.0 <= float(at) < 1.0):
            raise InvalidQuery(f"at (the request's time of day) must be a number in [0, 1) or None, got {at!r}")
        acc = self.accounts.get(account_id)
        if acc is None:
            raise QueryRefused("unknown-account", f"no account {account_id!r}")
        if acc.owner != owner:
            raise QueryRefused("not-owner", f"account {account_id!r} does not belong to {owner}")
        if acc.banned:
            raise QueryRefused("banned", f"account {account_id!r} was banned in round {acc.banned_round}")
        svc = self.services[acc.service]
        # structure first (an oversized batch is refused unread), then the values on a private copy: what the sender
        # does with its own array afterwards changes nothing here
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
        self.now = None if at is None else float(at)
        if svc.backend is not None:  # a remote service: its own defences have answered
            d = self._ask_remote(svc, acc, x)
        else:
            d = self.defend(acc, x)
        rows, banned, flagged, raw, out = d.rows, d.banned, d.flagged, d.raw, d.outputs
        accepted = len(rows)
        served = x[rows]
        leading = bool(np.array_equal(rows, np.arange(accepted)))
        # every query the API did not answer was refused: those a defence rejected, and with a ban the rest of the
        # request too. ``rejected`` (the Response's) counts them only without a ban, as before; the published terms
        # bill every refused query in both cases (a ban does not make the calls free)
        refused = n - accepted
        rejected = 0 if banned else refused
        billed = refused if svc.config.charge_rejected else 0
        charge = self.quote(acc, accepted)
        entry = self._record(round=self.round, kind="query", owner=owner, account=acc.id, service=acc.service,
                             n=accepted, charge=charge, digest=digest if accepted == n else _digest(served))
        if self.on_query is not None:
            self.on_query(entry, x)
        if rejected or billed:
            reject_charge = self.quote(self.accounts[acc.id], billed)
            note = f"{rejected} of {n} queries rejected" if not banned else f"{refused} of {n} queries refused (ban)"
            self._record(round=self.round, kind="reject", owner=owner, account=acc.id, service=acc.service,
                         n=billed, charge=reject_charge, note=note)
            charge += reject_charge
        if banned or flagged:
            self.flag(acc.id, note=f"flagged after {accepted} of {n} queries")
        return Response(outputs=out, n_answered=accepted, charge=charge, banned=banned, raw=raw if audit else None,
                        answered=None if leading else rows, rejected=rejected)

    def defend(self, acc: Account, x: np.ndarray) -> Defended:
        """What the defences make of a validated batch on ``acc``: each screens it in order (a copy of the account,
        only what earlier defences let through; a bad answer cannot serve more), the victim answers the rows they
        accepted, each defence shapes those answers in order, and the service's output format applies.

        Nothing is charged or recorded here: :meth:`query` does that from the result. A server restoring its
        defenders calls this with each stored request, in order, so they end in the state they were in.
        """
        svc = self.services[acc.service]
        rows, banned, flagged = np.arange(len(x)), False, False
        delayed = svc.config.ban_delay > 0
        for d, knobs in zip(self.defences, self.defence_knobs, strict=True):
            verdict = Verdict.of(d.screen(replace(acc), x[rows], knobs), len(rows))
            if verdict.ban and delayed:  # the flag is recorded; the account is served until its ban falls due
                flagged = True
                continue
            rows, banned = rows[verdict.serve], banned or verdict.ban
        raw = svc.victim.predict_proba(x[rows]) if len(rows) else np.zeros((0, svc.victim.n_classes))
        raw.setflags(write=False)  # defences return new arrays; the undefended rows stay the referee's truth
        out = raw
        for d, knobs in zip(self.defences, self.defence_knobs, strict=True):  # also on no rows: random defences
            out = d.shape(out, replace(acc), x[rows], knobs)                   # draw the same either way
        return Defended(rows, banned, flagged, raw, format_outputs(out, svc.config))

    def _ask_remote(self, svc: Service, acc: Account, x: np.ndarray) -> Defended:
        """A remote service's answer (its own defences applied); a remote ban is recorded here too."""
        try:
            answer = svc.backend.query(acc.id, x)
        except QueryRefused as e:
            if e.reason == "banned":
                self.ban(acc.id, note=f"banned by the remote service: {e}")
            raise
        accepted = answer.n_answered
        return Defended(np.arange(accepted), accepted < len(x), False, None, answer.outputs)

    def defended(self, probs: np.ndarray, x: np.ndarray | None, service: str) -> np.ndarray:
        """What the defences and the output format make of ``probs`` (the referee's audit; nothing logged)."""
        out = probs
        for d, knobs in zip(self.defences, self.defence_knobs, strict=True):
            out = d.shape(out, None, x, knobs)
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


class Client:
    """An owner's handle on the API: what an attacker seat's channel uses. No victim, no test set, no other owner.

    Everything it returns is a copy (wallets, accounts, service terms, input specs): editing one changes nothing at
    the API. Bodies never hold a client: the seat hands them a :class:`~extractgym.agents.seats.channel.Channel`.
    """

    def __init__(self, api: PredictionAPI, owner: str) -> None:
        self._api = api
        self.owner = owner

    @property
    def wallet(self) -> Wallet:
        """A copy of this owner's wallet (editing it changes nothing at the API)."""
        return replace(self._api.wallets[self.owner])

    @property
    def round(self) -> int:
        return self._api.round

    def left(self, what: str) -> float:
        """This owner's unspent ``queries``, ``money`` or ``accounts`` (``inf`` when unlimited)."""
        return self._api.wallets[self.owner].left(what)

    def service_terms(self, name: str) -> ServiceConfig:
        """A copy of a service's published terms (prices, quota, rate limit, output format)."""
        return replace(self._api.service(name).config)

    def service_info(self, name: str) -> tuple[int, Any]:
        """``(n_classes, input_spec)`` of a service, copied: what any customer is told."""
        v = self._api.service(name).victim
        return int(v.n_classes), replace(v.input_spec)

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self._api.services)

    def accounts(self, service: str | None = None, active: bool = True) -> list[Account]:
        """Copies of this owner's accounts (editing a copy changes nothing at the API)."""
        return [replace(a) for a in self._api.owned(self.owner).values()
                if (service is None or a.service == service) and (not active or not a.banned)]

    def account(self, account_id: str) -> Account:
        """A copy of one of this owner's accounts (whatever how many it has); :class:`QueryRefused` if it is not
        one of them."""
        acc = self._api.owned(self.owner).get(account_id)
        if acc is None:
            raise QueryRefused("unknown-account", f"{self.owner} has no account {account_id!r}")
        return replace(acc)

    @property
    def keeps_identities(self) -> bool:
        """Whether the API gives accounts fingerprints (then :meth:`open_account` takes an identity request)."""
        return self._api.identities is not None

    def fingerprint(self, account_id: str) -> Fingerprint | None:
        """The fingerprint one of this owner's accounts was equipped with (None where no identities are kept)."""
        self.account(account_id)  # this owner's, or refused
        return self._api.identities.of.get(account_id) if self._api.identities is not None else None

    def holdings(self) -> dict[str, int]:
        """How many payment instruments and network exits this owner holds (empty where no identities are kept)."""
        return self._api.identities.held(self.owner) if self._api.identities is not None else {}

    def open_account(self, service: str, identity: IdentityRequest | None = None) -> Account:
        return replace(self._api.open_account(self.owner, service, identity))

    def query(self, account: Account, x: Any, at: float | None = None) -> Response:
        """Send queries on ``account`` (``at``: the time of day sent, in [0, 1)); raises :class:`QueryRefused` or
        :class:`InvalidQuery` (nothing charged)."""
        return self._api.query(self.owner, _account_id(account), x, at=at)

    def quote(self, account: Account, n: int) -> float:
        _account_id(account)
        return self._api.quote(account, n)

    def affordable(self, account: Account, n: int) -> Allowance:
        """How many of ``n`` queries the API would serve on ``account`` right now, and what limits them."""
        return self._api.affordable(self.owner, _account_id(account), n)

    def can_open(self, service: str, queries: int = 1, identity: IdentityRequest | None = None) -> bool:
        """Whether a new account on ``service`` could be opened now and then buy ``queries`` (the API's own tests)."""
        return self._api.can_open(self.owner, service, queries, identity)


def _account_id(account: Any) -> str:
    """The id of an account a client was given (anything else is an invalid request, named, nothing charged)."""
    if not isinstance(account, Account):
        raise InvalidQuery(f"account must be an Account (from open_account or accounts()), got {type(account).__name__}")
    return account.id


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

    def identity(self, account_id: str) -> Fingerprint | None:
        """The fingerprint an account was opened with (immutable), or None where the API keeps no identities: its
        payment, network and client tokens (opaque: which accounts share one, never whose it is) and time zone."""
        return self._api.identities.of.get(account_id) if self._api.identities is not None else None

    @property
    def now(self) -> float | None:
        """The time of day (a fraction of the round, in [0, 1)) the request being screened was sent, or None."""
        return self._api.now

    @property
    def accounts_opened(self) -> int:
        """How many accounts exist (in opening order, the ledger's ``open`` entries)."""
        return len(self._api.accounts)

    def n_classes(self, service: str) -> int:
        return self._api.services[service].victim.n_classes

    def services(self) -> tuple[str, ...]:
        return tuple(self._api.services)

    def input_spec(self, service: str) -> Any:
        """The service's input spec (what any customer is told): stateful detectors check their data matches."""
        return replace(self._api.services[service].victim.input_spec)

    def victim_name(self, service: str) -> str:
        return str(getattr(self._api.services[service].victim, "name", service))

    def victim_proba(self, service: str, x: np.ndarray) -> np.ndarray:
        """The owner's own undefended victim on ``x`` (nothing charged or logged): PRADA groups queries by its class."""
        return self._api.services[service].victim.predict_proba(x)
