"""Sybil accounts: spread an attack over several accounts, reactively and proactively.

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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.seats.channel import Stage
from extractgym.agents.tactics.base import register_tactic
from extractgym.envs.api import Account, Client, Response
from extractgym.envs.errors import QueryRefused
from extractgym.envs.protocols import Knob

ACCOUNTS = (1, 2, 4, 8, 16)
ROTATIONS = (None, 25, 50, 100, 200)


@register_tactic("sybil")
class Sybil(Stage):
    """Several accounts in parallel, rotated after a fixed number of queries (a channel's account policy).

    Args:
        accounts: live accounts kept per service (>= 1); each batch is split evenly over them.
        rotate_every: answered queries after which an account is retired and a fresh one opened
            (``None``: accounts end only when banned).
    """

    stage = "accounts"

    def __init__(self, accounts: int = 4, rotate_every: int | None = None) -> None:
        if accounts < 1:
            raise ValueError(f"sybil: accounts must be >= 1, got {accounts}")
        if rotate_every is not None and rotate_every < 1:
            raise ValueError(f"sybil: rotate_every must be >= 1 or None, got {rotate_every}")
        self.knobs = (Knob.around("accounts", ACCOUNTS, accounts),
                      Knob("rotate_every", tuple(dict.fromkeys((rotate_every, *ROTATIONS))), 0))

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        self.client = client
        self.mine: dict[str, list[str]] = {}  # service -> account ids in use, in opening order
        self.used: dict[str, int] = {}  # account id -> answered queries
        self.taken: dict[str, int] = {}  # account id -> queries taken in the current batch
        self.at_limit: set[str] = set()  # accounts at their rate limit in round ``limit_round``
        self.limit_round = -1
        self.share = 1
        self.opened = self.retired = 0

    def begin(self, service: str, n: int, knobs: Mapping[str, Any]) -> None:
        self.share = max(1, math.ceil(n / knobs["accounts"]))
        self.taken = {}

    def next_slot(self, service: str, n: int, knobs: Mapping[str, Any]) -> tuple[Account, int] | None:
        """The next account with room and how many queries the API lets it take; an account at its rate limit
        hands over to the next one, any other limit (the seat's budgets) ends the batch."""
        while (account := self._account(service, knobs)) is not None:
            allowance = self.client.affordable(account, self._room(account, n, knobs))
            if allowance.n > 0:
                return account, allowance.n
            if allowance.limit != "rate-limit":
                return None
            self.at_limit.add(account.id)
        return None

    def _retired(self, account_id: str, rotate_every: int | None) -> bool:
        return rotate_every is not None and self.used.get(account_id, 0) >= rotate_every

    def _account(self, service: str, knobs: Mapping[str, Any]) -> Account | None:
        """The usable account with room left in this batch that has answered the fewest queries; a new one
        (lazily, while fewer than ``accounts`` are live) when none has room."""
        wanted, rotate = knobs["accounts"], knobs["rotate_every"]
        if self.client.round != self.limit_round:
            self.at_limit, self.limit_round = set(), self.client.round
        live = {a.id: a for a in self.client.accounts(service)}
        before = self.mine.get(service, [])
        mine = [i for i in before if i in live and not self._retired(i, rotate)]
        self.retired += sum(1 for i in before if i in live and self._retired(i, rotate))
        self.mine[service] = mine
        usable = [i for i in mine[:wanted] if i not in self.at_limit]  # a lowered knob parks the extra ones
        fresh = [i for i in usable if self.taken.get(i, 0) < self.share]
        # open an account only if the seat could then buy at least one query on it (the API's own test)
        if not fresh and len(mine) < wanted and self.client.can_open(service):
            try:
                acc = self.client.open_account(service)
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
        return live[min(candidates, key=lambda i: (self.used.get(i, 0), mine.index(i)))]

    def _room(self, account: Account, n: int, knobs: Mapping[str, Any]) -> int:
        rotate = knobs["rotate_every"]
        left = n if rotate is None else rotate - self.used.get(account.id, 0)
        share = self.share - self.taken.get(account.id, 0)
        return max(1, min(n, left, share if share > 0 else n))

    def observe(self, account: Account, sent: Any, response: Response) -> None:
        self.used[account.id] = self.used.get(account.id, 0) + response.n_answered
        self.taken[account.id] = self.taken.get(account.id, 0) + response.n_answered

    def stats(self) -> dict[str, Any]:
        return {"sybil_opened": self.opened, "sybil_retired": self.retired}
