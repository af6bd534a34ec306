"""Sybil accounts: spread an attack over several accounts, reactively and proactively, with fingerprint hygiene.

Seed 003 §II-B and §VIII count the *accounts* an attack burns: when the detector bans one, the attacker
opens another (reactive switching; every seat does this by default, within its account budget). Seed 001
§3 notes that free queries per account make spreading cheaper, and per-account detector state and rate
limits are what proactive spreading defeats: here the seat keeps ``accounts`` live accounts in parallel,
splits every batch evenly over them, and retires an account after ``rotate_every`` answered queries
(``None``: only a ban ends one). Accounts are opened lazily (when no live account has room left in the
current batch) and only when the seat could then buy at least one query on them; they are opened through
the API, which charges the service's account price and refuses past the seat's account or money budget, so
no budget can be exceeded. Each chunk goes to the account with room that has answered the fewest queries.

Knobs: ``accounts`` (how many in parallel) and ``rotate_every`` (queries per account before rotating).

**Campaigns (docs/sybil.md).** Where the API keeps identities, a campaign of thousands of accounts must also choose
what the provider can link its accounts on; each of these parameters, once given, becomes a knob:

* ``payment_reuse`` / ``proxy_reuse``: accounts opened per payment instrument / network exit (1: a fresh one for
  every account, paying the service's ``instrument_cost`` / ``proxy_cost``; more: cheaper, and linkable);
* ``client`` (a parameter): ``tool`` (the campaign's own client signature on every account) or ``unique`` (a
  distinct profile per account, ``client_cost`` each);
* ``pacing``: ``burst`` (the operator's batch job: every account sends within ``burst_minutes`` from
  ``burst_start`` each round, as many queries as the account may) or ``human`` (each account sends at the hours of
  its network's time zone, as ordinary users do, and at most ``human_queries`` per round: a human's volume, so the
  same traffic needs more accounts);
* ``cover``: the share of each account's traffic that is cover, natural samples from ``cover_pool`` re-sent to
  dilute what the account's content says (paid for like any query, answers thrown away).

A campaign account whose whole request was refused (throttled) is abandoned, as one that was banned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.refs import AttackerData, split_of
from extractgym.agents.seats.channel import Stage
from extractgym.agents.tactics.base import register_tactic
from extractgym.envs.api import Account, Client, Response
from extractgym.envs.errors import QueryRefused
from extractgym.envs.identity import IdentityRequest, diurnal_time
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset

ACCOUNTS = (1, 2, 4, 8, 16)
ROTATIONS = (None, 25, 50, 100, 200)
REUSE = (1, 10, 100, 1000)
PACING = ("burst", "human")
COVER = (0.0, 0.5, 0.8)
HYGIENE = ("payment_reuse", "proxy_reuse", "pacing", "cover")


@register_tactic("sybil")
class Sybil(Stage):
    """Several accounts in parallel, rotated after a fixed number of queries (a channel's account policy).

    Args:
        accounts: live accounts kept per service (>= 1); each batch is split evenly over them.
        rotate_every: answered queries after which an account is retired and a fresh one opened
            (``None``: accounts end only when banned).
        payment_reuse: accounts per payment instrument (``None``: no knob; every account reuses the first).
        proxy_reuse: accounts per network exit (``None``: no knob; every account reuses the first).
        client: ``tool`` or ``unique`` client signatures (identities only).
        pacing: ``burst`` or ``human`` (``None``: no knob; untimed requests, or ``burst`` where identities are kept
            and another hygiene knob is set).
        cover: share of each account's traffic that is cover (``None``: no knob, no cover).
        cover_pool, cover_split: the natural samples cover is drawn from (the attacker's own).
        human_queries: most queries one human-paced account sends per round.
        burst_start, burst_minutes: when the operator's batch job runs each round (time of day, 0-1) and for how
            many minutes.
    """

    stage = "accounts"

    def __init__(self, accounts: int = 4, rotate_every: int | None = None, payment_reuse: int | None = None,
                 proxy_reuse: int | None = None, client: str = "tool", pacing: str | None = None,
                 cover: float | None = None, cover_pool: AttackerData = "digits",
                 cover_split: split_of("cover_pool") = "pool", human_queries: int = 20, burst_start: float = 0.25,
                 burst_minutes: float = 10.0) -> None:
        if accounts < 1:
            raise ValueError(f"sybil: accounts must be >= 1, got {accounts}")
        if rotate_every is not None and rotate_every < 1:
            raise ValueError(f"sybil: rotate_every must be >= 1 or None, got {rotate_every}")
        for name, value in (("payment_reuse", payment_reuse), ("proxy_reuse", proxy_reuse)):
            if value is not None and value < 1:
                raise ValueError(f"sybil: {name} must be >= 1 (accounts per resource) or None, got {value}")
        if client not in ("tool", "unique"):
            raise ValueError(f"sybil: client must be 'tool' or 'unique', got {client!r}")
        if pacing is not None and pacing not in PACING:
            raise ValueError(f"sybil: pacing must be one of {', '.join(PACING)} or None, got {pacing!r}")
        if cover is not None and not (math.isfinite(cover) and 0.0 <= cover < 1.0):
            raise ValueError(f"sybil: cover must be in [0, 1) or None, got {cover}")
        if human_queries < 1:
            raise ValueError(f"sybil: human_queries must be >= 1, got {human_queries}")
        if not (math.isfinite(burst_start) and 0.0 <= burst_start < 1.0) or not 0.0 < burst_minutes <= 1440.0:
            raise ValueError(f"sybil: burst_start must be in [0, 1) and burst_minutes in (0, 1440], got "
                             f"{burst_start}, {burst_minutes}")
        knobs = [Knob.around("accounts", ACCOUNTS, accounts),
                 Knob("rotate_every", tuple(dict.fromkeys((rotate_every, *ROTATIONS))), 0)]
        if payment_reuse is not None:
            knobs.append(Knob.around("payment_reuse", REUSE, payment_reuse))
        if proxy_reuse is not None:
            knobs.append(Knob.around("proxy_reuse", REUSE, proxy_reuse))
        if pacing is not None:
            knobs.append(Knob("pacing", PACING, PACING.index(pacing)))
        if cover is not None:
            knobs.append(Knob.around("cover", COVER, float(cover)))
        self.knobs = tuple(knobs)
        self.campaign = any(v is not None for v in (payment_reuse, proxy_reuse, pacing, cover)) or client != "tool"
        self.client_kind, self.human_queries = client, human_queries
        self.burst_start, self.burst_width = burst_start, burst_minutes / 1440.0
        self.cover_pool, self.cover_split = cover_pool, cover_split
        if cover is not None:
            get_dataset(cover_pool).split(cover_split)  # fail now, naming the pool

    @staticmethod
    def needs_identities(params: Mapping[str, Any]) -> bool:
        """Whether these YAML parameters ask for fingerprint hygiene (the scenario must keep identities)."""
        return any(params.get(k) is not None for k in HYGIENE) or params.get("client", "tool") != "tool"

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        self.client = client
        self.rng = rng if rng is not None else np.random.default_rng(0)
        if self.campaign and not client.keeps_identities:
            raise ValueError("sybil: fingerprint hygiene needs an API that keeps identities (a scenario with an "
                             "identities: section)")
        self.mine: dict[str, list[str]] = {}  # service -> account ids in use, in opening order
        self.dead: set[str] = set()  # banned (or, in a campaign, throttled) accounts
        self.used: dict[str, int] = {}  # account id -> answered queries
        self.taken: dict[str, int] = {}  # account id -> queries taken in the current batch
        self.at_limit: set[str] = set()  # accounts at their rate limit (or human volume) in round ``limit_round``
        self.limit_round = -1
        self.this_round: dict[str, int] = {}  # account id -> queries sent this round (human pacing)
        self.share = 1
        self.opened = self.retired = self.abandoned = self.cover_sent = 0
        self.times: dict[str, float] = {}  # account id -> time of its next request (set with its slot)
        self.cover_x: np.ndarray | None = None
        self._knobs: Mapping[str, Any] = {}

    def begin(self, service: str, n: int, knobs: Mapping[str, Any]) -> None:
        self.share = max(1, math.ceil(n / knobs["accounts"]))
        self.taken = {}
        for i in self.mine.get(service, ()):  # bans decided between batches (delayed, or on a whole cluster)
            if i not in self.dead and self.client.account(i).banned:
                self.dead.add(i)

    def next_slot(self, service: str, n: int, knobs: Mapping[str, Any]) -> tuple[Account, int] | None:
        """The next account with room and how many queries the API lets it take; an account at its rate limit
        hands over to the next one, any other limit (the seat's budgets) ends the batch."""
        while (account := self._account(service, knobs)) is not None:
            want = self._room(account, n, knobs)
            cover = knobs.get("cover") or 0.0
            extra = math.ceil(want * cover / (1.0 - cover)) if cover else 0
            allowance = self.client.affordable(account, want + extra)
            if allowance.n > 0:
                real = allowance.n if not extra else min(want, max(1, math.floor(allowance.n * (1.0 - cover))))
                self.times[account.id] = self._time(account, knobs)
                if allowance.n - real > 0 and not self._cover(account, allowance.n - real):
                    continue  # the cover request ended the account (banned or throttled): the next one
                return account, real
            if allowance.limit != "rate-limit":
                return None
            self.at_limit.add(account.id)
        return None

    def when(self, account: Account, knobs: Mapping[str, Any]) -> float | None:
        """The time of day of the request about to be sent on ``account`` (None where pacing is off)."""
        return self.times.get(account.id)

    def _time(self, account: Account, knobs: Mapping[str, Any]) -> float | None:
        pacing = knobs.get("pacing", "burst" if self.campaign else None)
        if pacing == "burst":  # the operator's batch job
            return float((self.burst_start + self.rng.random() * self.burst_width) % 1.0)
        if pacing == "human":  # the hours of the account's own zone
            return diurnal_time(self.client.fingerprint(account.id).zone, self.rng)
        return None

    def _cover(self, account: Account, k: int) -> bool:
        """Send ``k`` cover queries on ``account``; False if that ended the account."""
        if self.cover_x is None:
            x, _ = get_dataset(self.cover_pool).split(self.cover_split)
            self.cover_x = x
        x = self.cover_x[self.rng.integers(len(self.cover_x), size=k)]
        try:
            response = self.client.query(account, x, at=self.times.get(account.id))
        except QueryRefused as e:  # banned in between: the account is gone; any other refusal: not this round
            (self.dead if e.reason == "banned" else self.at_limit).add(account.id)
            return False
        self.cover_sent += response.n_answered
        self._count(account, response)
        return account.id not in self.dead

    def _retired(self, account_id: str, rotate_every: int | None) -> bool:
        return rotate_every is not None and self.used.get(account_id, 0) >= rotate_every

    def _identity(self) -> IdentityRequest | None:
        """The fingerprint request of the next account opened (None where the API keeps no identities)."""
        if not self.client.keeps_identities:
            return None
        knobs, k = self._knobs, self.opened
        pay, net = knobs.get("payment_reuse"), knobs.get("proxy_reuse")
        return IdentityRequest(payment=0 if pay is None else k // pay, network=0 if net is None else k // net,
                               client=self.client_kind)

    def _account(self, service: str, knobs: Mapping[str, Any]) -> Account | None:
        """The usable account with room left in this batch that has answered the fewest queries; a new one
        (lazily, while fewer than ``accounts`` are live) when none has room."""
        wanted, rotate = knobs["accounts"], knobs["rotate_every"]
        self._knobs = knobs
        if self.client.round != self.limit_round:
            self.at_limit, self.limit_round, self.this_round = set(), self.client.round, {}
        before = self.mine.get(service, [])
        mine = [i for i in before if i not in self.dead and not self._retired(i, rotate)]
        self.retired += sum(1 for i in before if i not in self.dead and self._retired(i, rotate))
        self.mine[service] = mine
        usable = [i for i in mine[:wanted] if i not in self.at_limit]  # a lowered knob parks the extra ones
        fresh = [i for i in usable if self.taken.get(i, 0) < self.share]
        # open an account only if the seat could then buy at least one query on it (the API's own test)
        identity = self._identity() if not fresh and len(mine) < wanted else None
        if not fresh and len(mine) < wanted and self.client.can_open(service, identity=identity):
            try:
                acc = self.client.open_account(service, identity) if identity else self.client.open_account(service)
            except QueryRefused:
                acc = None
            if acc is not None:
                self.opened += 1
                mine.append(acc.id)
                self.used[acc.id] = 0
                return acc
        candidates = fresh or usable  # every account took its share (rounding, withheld queries): share again
        if not candidates:
            return None
        order = {i: k for k, i in enumerate(mine)}
        return self.client.account(min(candidates, key=lambda i: (self.used.get(i, 0), order[i])))

    def _room(self, account: Account, n: int, knobs: Mapping[str, Any]) -> int:
        rotate = knobs["rotate_every"]
        left = n if rotate is None else rotate - self.used.get(account.id, 0)
        share = self.share - self.taken.get(account.id, 0)
        room = max(1, min(n, left, share if share > 0 else n))
        if knobs.get("pacing") == "human":  # a human's volume per round
            room = max(1, min(room, self.human_queries - self.this_round.get(account.id, 0)))
        return room

    def _count(self, account: Account, response: Response) -> None:
        """Book an answer to ``account`` (this round's volume; a campaign abandons a throttled account)."""
        sent = response.n_answered + response.rejected
        self.this_round[account.id] = self.this_round.get(account.id, 0) + sent
        if response.banned or (self.campaign and response.rejected and not response.n_answered):
            self.abandoned += self.campaign and not response.banned
            self.dead.add(account.id)
        elif self._knobs.get("pacing") == "human" and self.this_round[account.id] >= self.human_queries:
            self.at_limit.add(account.id)

    def observe(self, account: Account, sent: Any, response: Response) -> None:
        self.used[account.id] = self.used.get(account.id, 0) + response.n_answered
        self.taken[account.id] = self.taken.get(account.id, 0) + response.n_answered
        self._count(account, response)

    def stats(self) -> dict[str, Any]:
        out = {"sybil_opened": self.opened, "sybil_retired": self.retired}
        if self.campaign:
            out.update(sybil_abandoned=self.abandoned, sybil_cover=self.cover_sent)
        return out
