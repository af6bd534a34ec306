"""Identities with fingerprints: the observable metadata an account is opened with, and what it costs.

A provider sees more of an account than its queries: how it pays, where it connects from, what client software
signs its requests and when its owner is awake. Abuse teams link accounts on exactly these (shared payment
instruments, shared network exits, identical client signatures; docs/sybil.md cites the practice), and a campaign
that wants thousands of accounts must choose between reusing its resources (cheap, linkable) and buying fresh ones.

Every account opened on an API that keeps identities (a scenario with an ``identities:`` section) gets a
:class:`Fingerprint`, drawn from its owner's resources as the opener asks (:class:`IdentityRequest`):

* ``payment``: the owner's i-th payment instrument (reused; linkable) or a fresh one (costs the service's
  ``instrument_cost``);
* ``network``: the owner's i-th network exit (a proxy, a corporate NAT) or a fresh one (``proxy_cost``); each exit
  sits in a time zone, which is the account's declared ``zone`` (its time-of-day pattern);
* ``client``: ``"tool"`` (the owner's own scripting client: one signature for all its accounts), ``"unique"`` (a
  distinct profile, e.g. an anti-detect browser's: ``client_cost``) or ``"common"`` (one of the popular signatures
  that crowds of ordinary users share).

Fresh resources are paid from the owner's money in the ``open`` entry's charge, like ``identity_cost`` (a market's
price, not provider revenue); a real customer's own card and network (``owned=True``, the benign population) cost
nothing. The fingerprint is written in the ``open`` entry's note, so :meth:`PredictionAPI.replay` rebuilds it, and
its tokens are opaque: a defender sees which accounts share a value, never whose it is.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

CLIENTS = ("tool", "unique", "common")
NOTE_PREFIX = "fingerprint "

# Where users are (hours offset of their local time), for fresh network exits: a coarse population weighting
# (the Americas, Europe/Africa, Asia/Pacific), not a census.
ZONE_WEIGHTS = np.array([0.5, 0.5, 1, 1, 1, 1, 2, 2, 1, 1, 0.5, 0.5, 0.5, 0.5, 1, 2, 3, 4, 4, 3, 2, 1, 0.5, 0.5])
ZONE_WEIGHTS = ZONE_WEIGHTS / ZONE_WEIGHTS.sum()


@dataclass(frozen=True)
class Fingerprint:
    """What a provider observes of an account: opaque tokens for its payment instrument, network exit and client
    signature, and its time zone (``zone``, 0-23: the hour offset its time-of-day pattern follows)."""

    payment: str
    network: str
    client: str
    zone: int

    def encode(self) -> str:
        """The ledger note of the ``open`` entry that records this fingerprint."""
        return f"{NOTE_PREFIX}payment={self.payment} network={self.network} client={self.client} zone={self.zone}"

    @staticmethod
    def decode(note: str) -> Fingerprint | None:
        """The fingerprint an ``open`` entry's note records (None if it records none)."""
        if not note.startswith(NOTE_PREFIX):
            return None
        fields = dict(part.split("=", 1) for part in note[len(NOTE_PREFIX):].split())
        return Fingerprint(fields["payment"], fields["network"], fields["client"], int(fields["zone"]))


@dataclass(frozen=True)
class IdentityRequest:
    """How an owner equips a new account.

    ``payment`` / ``network``: the index of one of the owner's instruments / exits to reuse (an index at or beyond
    what it holds buys a fresh one; ``None``: always fresh). ``client``: ``tool``, ``unique`` or ``common``.
    ``owned``: the owner already holds its resources (a real customer's own card and connection): nothing is charged.
    """

    payment: int | None = 0
    network: int | None = 0
    client: str = "tool"
    owned: bool = False

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, got {self.client!r}")
        for name in ("payment", "network"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0):
                raise ValueError(f"{name} must be an index >= 0 or None (fresh), got {value!r}")


class Identities:
    """The fingerprints of an API's accounts and the resources each owner holds (kept by the API, rebuilt from the
    ledger). ``rng`` draws fresh tokens and zones; ``common_clients`` popular client signatures exist."""

    def __init__(self, rng: np.random.Generator, common_clients: int = 20) -> None:
        if common_clients < 1:
            raise ValueError(f"common_clients must be >= 1, got {common_clients}")
        self.rng = rng
        self._key = rng.bytes(16)  # keys each owner's tool signature: opaque, and the same after a replay
        self._tokens: set[str] = set()  # every token in use (a fresh one is never one of them)
        self.common = tuple(self._token("cli") for _ in range(common_clients))
        self.of: dict[str, Fingerprint] = {}  # account id -> its fingerprint
        self.payments: dict[str, list[str]] = {}  # owner -> instruments it holds, in order bought
        self.networks: dict[str, list[str]] = {}  # owner -> network exits it holds
        self._held: set[tuple[str, str]] = set()  # (owner, token) of everything above: O(1) membership
        self.zone_of: dict[str, int] = {}  # network token -> its zone

    def _token(self, kind: str) -> str:
        """A fresh opaque token, never one already in use (after a replay the generator starts over)."""
        while (token := f"{kind}-{int(self.rng.integers(2**48)):012x}") in self._tokens:
            pass
        self._tokens.add(token)
        return token

    def tool(self, owner: str) -> str:
        """The signature of ``owner``'s own scripting client (the same on all its accounts)."""
        return "cli-" + hashlib.blake2b(owner.encode(), key=self._key, digest_size=6).hexdigest()

    def held(self, owner: str) -> dict[str, int]:
        """How many payment instruments and network exits ``owner`` holds."""
        return {"payment": len(self.payments.get(owner, ())), "network": len(self.networks.get(owner, ()))}

    def fresh(self, owner: str, request: IdentityRequest) -> dict[str, bool]:
        """Which resources ``request`` would buy for ``owner`` now."""
        held = self.held(owner)
        return {"payment": request.payment is None or request.payment >= held["payment"],
                "network": request.network is None or request.network >= held["network"],
                "client": request.client == "unique"}

    def quote(self, owner: str, request: IdentityRequest, config: Any) -> float:
        """What the fresh resources of ``request`` cost ``owner`` on a service with terms ``config``."""
        if request.owned:
            return 0.0
        fresh = self.fresh(owner, request)
        return (config.instrument_cost * fresh["payment"] + config.proxy_cost * fresh["network"]
                + config.client_cost * fresh["client"])

    def draw(self, owner: str, request: IdentityRequest) -> Fingerprint:
        """The fingerprint of a new account of ``owner`` (fresh tokens drawn; nothing recorded until
        :meth:`record`, which the API calls when it applies the ``open`` entry)."""
        fresh = self.fresh(owner, request)
        payment = self._token("pay") if fresh["payment"] else self.payments[owner][request.payment]
        if fresh["network"]:
            network, zone = self._token("net"), int(self.rng.choice(24, p=ZONE_WEIGHTS))
        else:
            network = self.networks[owner][request.network]
            zone = self.zone_of[network]
        if request.client == "tool":
            client = self.tool(owner)
        elif request.client == "unique":
            client = self._token("cli")
        else:
            client = self.common[int(self.rng.integers(len(self.common)))]
        return Fingerprint(payment, network, client, zone)

    def record(self, owner: str, account: str, fp: Fingerprint) -> None:
        """Apply an ``open`` entry's fingerprint: the account's metadata and what its owner now holds."""
        self.of[account] = fp
        self._tokens.update((fp.payment, fp.network, fp.client))
        for held, token in ((self.payments.setdefault(owner, []), fp.payment),
                            (self.networks.setdefault(owner, []), fp.network)):
            if (owner, token) not in self._held:
                self._held.add((owner, token))
                held.append(token)
        self.zone_of.setdefault(fp.network, fp.zone)


def diurnal_time(zone: int, rng: np.random.Generator, peak: float = 14.0, spread: float = 3.0) -> float:
    """A request time (fraction of the round's day, UTC) for a user in ``zone``: local time normal around ``peak``
    hours with ``spread`` hours of standard deviation (people are awake in the afternoon of their own zone)."""
    local = rng.normal(peak, spread)
    return float(((local - zone) / 24.0) % 1.0)


@dataclass(frozen=True)
class BenignMetadata:
    """How ordinary customers' metadata looks, legitimate sharing included (a scenario's ``identities:``).

    Args:
        corporate_share: share of customers behind a corporate network (one NAT exit for all its users).
        corporate_size: mean users per corporate network (sizes are geometric: many small offices, a few large).
        shared_payment: share of customers paying with the previous customer's instrument (a family or team card).
        common_client: share of customers whose client signature is a popular one (a stock mobile app or browser),
            shared with crowds of others; the rest have distinct signatures (most browsers are unique: Eckersley,
            "How Unique Is Your Web Browser?", PETS 2010, found 83.6% of 470,161 unique).
        common_clients: how many popular signatures there are.
        peak, spread: customers send at local ``peak`` hours, normal with ``spread`` hours of deviation.
    """

    corporate_share: float = 0.3
    corporate_size: float = 40.0
    shared_payment: float = 0.05
    common_client: float = 0.2
    common_clients: int = 20
    peak: float = 14.0
    spread: float = 3.0

    def __post_init__(self) -> None:
        for name in ("corporate_share", "shared_payment", "common_client"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.corporate_size >= 1.0:
            raise ValueError(f"corporate_size must be >= 1, got {self.corporate_size}")
        if not 0.0 < self.spread <= 24.0 or not 0.0 <= self.peak < 24.0:
            raise ValueError(f"peak must be in [0, 24) and spread in (0, 24], got {self.peak}, {self.spread}")

    def requests(self, n: int, rng: np.random.Generator) -> list[IdentityRequest]:
        """Identity requests for ``n`` customers of one owner, in order: a ``corporate_share`` of them behind
        corporate networks, filled one after another (each of its users reuses its exit), the others on their own
        connection; family cards shared with the previous customer."""
        out: list[IdentityRequest] = []
        networks = payments = 0  # what the owner holds so far (each fresh request buys one)
        corporate_left, corporate = 0, 0
        for i in range(n):
            if rng.random() < self.corporate_share:  # at work: the current corporate network until it is full
                if corporate_left == 0:  # a new corporate network
                    corporate, networks = networks, networks + 1
                    corporate_left = int(rng.geometric(1.0 / self.corporate_size))
                network, corporate_left = corporate, corporate_left - 1
            else:
                network, networks = networks, networks + 1
            if i and rng.random() < self.shared_payment:
                payment = payments - 1
            else:
                payment, payments = payments, payments + 1
            client = "common" if rng.random() < self.common_client else "unique"
            out.append(IdentityRequest(payment=payment, network=network, client=client, owned=True))
        return out
