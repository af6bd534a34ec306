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
from typing import Any

from extractgym.agents.tactics.base import Tactic, register_tactic
from extractgym.envs.api import Account
from extractgym.envs.errors import QueryRefused
from extractgym.envs.protocols import Knob

ACCOUNTS = (1, 2, 4, 8, 16)
ROTATIONS = (None, 25, 50, 100, 200)


@register_tactic("sybil")
class Sybil(Tactic):
    """Several accounts in parallel, rotated after a fixed number of queries.

    Args:
        accounts: live accounts kept per service (>= 1); each batch is split evenly over them.
        rotate_every: answered queries after which an account is retired and a fresh one opened
            (``None``: accounts end only when banned).
    """

    def __init__(self, accounts: int = 4, rotate_every: int | None = None) -> None:
        if accounts < 1:
            raise ValueError(f"sybil: accounts must be >= 1, got {accounts}")
        if rotate_every is not None and rotate_every < 1:
            raise ValueError(f"sybil: rotate_every must be >= 1 or None, got {rotate_every}")
        self.knobs = (Knob.around("accounts", ACCOUNTS, accounts),
                      Knob("rotate_every", tuple(dict.fromkeys((rotate_every, *ROTATIONS))), 0))

    def setup(self) -> None:
        self.mine: dict[str, list[str]] = {}  # service -> account ids in use, in opening order
        self.used: dict[str, int] = {}  # account id -> answered queries
        self.taken: dict[str, int] = {}  # account id -> queries taken in the current batch
        self.at_limit: set[str] = set()  # accounts at their rate limit in round ``limit_round``
        self.limit_round = -1
        self.share = 1
        self.opened = self.retired = 0

    def begin(self, service: str, n: int) -> None:
        self.share = max(1, math.ceil(n / self.accounts))
        self.taken = {}

    def _retired(self, account_id: str) -> bool:
        return self.rotate_every is not None and self.used.get(account_id, 0) >= self.rotate_every

    def _worth_opening(self, service: str) -> bool:
        """Open an account only if the seat could then buy at least one query on it (no money for nothing)."""
        w, terms = self.client.wallet, self.client.service_terms(service)
        if w.left("queries") < 1 or w.left("accounts") < 1:
            return False
        first_query = 0.0 if terms.free_quota > 0 else terms.price_per_query
        return w.can_pay(terms.account_price + first_query)

    def account(self, service: str) -> Account | None:
        """The usable account with room left in this batch that has answered the fewest queries; a new one
        (lazily, while fewer than ``accounts`` are live) when none has room."""
        if self.client.round != self.limit_round:
            self.at_limit, self.limit_round = set(), self.client.round
        live = {a.id: a for a in self.client.accounts(service)}
        before = self.mine.get(service, [])
        mine = [i for i in before if i in live and not self._retired(i)]
        self.retired += sum(1 for i in before if i in live and self._retired(i))
        self.mine[service] = mine
        usable = [i for i in mine[:self.accounts] if i not in self.at_limit]  # a lowered knob parks the extra ones
        fresh = [i for i in usable if self.taken.get(i, 0) < self.share]
        if not fresh and len(mine) < self.accounts and self._worth_opening(service):
            try:
                acc = self.client.open_account(service)
            except QueryRefused:
                acc = None
            if acc is not None:
                self.opened += 1
                mine.append(acc.id)
                live[acc.id] = acc
                self.used[acc.id] = 0
                return acc
        candidates = fresh or usable  # every account took its share (rounding, withheld queries): share again
        if not candidates:
            return None
        return live[min(candidates, key=lambda i: (self.used.get(i, 0), mine.index(i)))]

    def room(self, account: Account, n: int) -> int:
        left = n if self.rotate_every is None else self.rotate_every - self.used.get(account.id, 0)
        share = self.share - self.taken.get(account.id, 0)
        return max(1, min(n, left, share if share > 0 else n))

    def full(self, account: Account) -> bool:
        """True when ``account`` hit its per-round rate limit (another account may take over); False when the
        seat's own budget is what stops it (a new account would not help)."""
        limit = self.client.service_terms(account.service).rate_limit
        current = next((a for a in self.client.accounts(account.service) if a.id == account.id), None)
        if limit is not None and current is not None and current.round_queries >= limit:
            self.at_limit.add(account.id)
            return True
        return False

    def observe(self, account: Account, x: Any, response: Any) -> None:
        self.used[account.id] = self.used.get(account.id, 0) + response.n_answered
        self.taken[account.id] = self.taken.get(account.id, 0) + response.n_answered

    def stats(self) -> dict[str, Any]:
        return {"sybil_opened": self.opened, "sybil_retired": self.retired}
