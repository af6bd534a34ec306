"""Adaptive tactics: moves that target the defence itself, composed with any attacker body (issue 5).

A *tactic* sits between an attacker body and its :class:`~extractgym.envs.api.Client`. Every body buys
answers through :meth:`extractgym.agents.base.AttackerBase.send`, whose one loop consults the seat's
:class:`Tactics` at four points:

* ``account`` / ``room`` -- which account the next chunk goes to and how many queries it may take
  (:mod:`~extractgym.agents.tactics.sybil`: reactive and proactive Sybil accounts);
* ``blind`` -- what is actually sent for the batch the body asked about (:mod:`~extractgym.agents.tactics.blinding`:
  seed 003 §VII-A query blinding; the body still trains on its own inputs with the answers to the blinded ones);
* ``keep`` -- which of the chunk's (blinded) queries are sent at all (:mod:`~extractgym.agents.tactics.filtering`:
  seed 003 §VII-B query filtering; withheld queries are never sent and cost nothing);
* ``observe`` -- what the defender has now seen on an account (the filter's substitute detector state).

A seat with no tactics behaves exactly as before (one account at a time; a new one after a ban: the
reactive Sybil attacker seed 003 counts accounts with). Tactics expose knobs, appended to the body's
by :class:`~extractgym.agents.tactics.wrapper.TacticalAttacker`, so a brain can learn when to use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from extractgym.agents.registry import TACTICS, register_tactic  # noqa: F401  (re-exported)
from extractgym.envs.protocols import Knob

if TYPE_CHECKING:
    from extractgym.agents.base import AttackerBase
    from extractgym.envs.api import Account, Response


class Tactic:
    """One adaptive move. Subclasses override the hooks they need; knob values arrive as attributes."""

    knobs: tuple[Knob, ...] = ()

    def bind(self, attacker: AttackerBase, rng: np.random.Generator) -> None:
        self.attacker, self.client, self.rng = attacker, attacker.client, rng
        self.set_knobs({k.name: k.choices[k.default] for k in self.knobs})
        self.setup()

    def setup(self) -> None:
        """Episode state. Override."""

    def set_knobs(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, name, value)

    def stats(self) -> dict[str, Any]:
        """Figures for reports (queries filtered, accounts rotated, ...)."""
        return {}


class Tactics:
    """The tactics of one attacker seat (at most one of each kind), as the send loop consults them."""

    def __init__(self, sybil: Any = None, blinding: Any = None, filter: Any = None) -> None:  # noqa: A002
        self.sybil, self.blinding, self.filter = sybil, blinding, filter

    @property
    def active(self) -> tuple[Tactic, ...]:
        return tuple(t for t in (self.sybil, self.blinding, self.filter) if t is not None)

    def bind(self, attacker: AttackerBase, rng: np.random.Generator) -> None:
        # one child generator per kind, whichever others are present (adding Sybil does not change the blinding)
        for t, r in zip((self.sybil, self.blinding, self.filter), rng.spawn(3), strict=True):
            if t is not None:
                t.bind(attacker, r)

    def account(self, attacker: AttackerBase, service: str) -> Account | None:
        return self.sybil.account(service) if self.sybil else attacker.account(service)

    def room(self, account: Account, n: int) -> int:
        """How many of the ``n`` pending queries ``account`` may take now (before rotating)."""
        return self.sybil.room(account, n) if self.sybil else n

    def full(self, account: Account) -> bool:
        """``account`` cannot take more this round (rate limit, budget): may another account take over?"""
        return self.sybil.full(account) if self.sybil else False

    def begin(self, service: str, n: int) -> None:
        """A batch of ``n`` queries for ``service`` starts."""
        if self.sybil:
            self.sybil.begin(service, n)

    def blind(self, x: Any, service: str) -> Any:
        return self.blinding.blind(x, service) if self.blinding else x

    def keep(self, account: Account, x: Any) -> np.ndarray:
        return self.filter.keep(account, x) if self.filter else np.ones(len(x), dtype=bool)

    def observe(self, account: Account, x: Any, response: Response) -> None:
        for t in self.active:
            hook = getattr(t, "observe", None)
            if hook is not None:
                hook(account, x, response)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in self.active:
            out.update(t.stats())
        return out


NO_TACTICS = Tactics()
