"""Small base classes for attacker and defender bodies (DESIGN.md: body and brain).

Plumbing that several bodies share lives in plain functions (``agents/surrogate.py``); these bases
only hold the episode wiring and the knob mechanics.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.envs.api import Account, Client, DefenderView
from extractgym.envs.errors import QueryRefused
from extractgym.envs.protocols import Knob


class AttackerBase:
    """Episode wiring for attackers: client, RNG, accounts, and budget-aware sending.

    Subclasses set ``self.knobs`` and ``self.target`` in ``__init__`` and implement ``play_round`` and
    ``predict_proba``; ``bind`` calls :meth:`setup` for episode state.
    """

    knobs: tuple[Knob, ...] = ()
    target: str = ""
    tactics: Any = None  # the seat's :class:`~extractgym.agents.tactics.Tactics`, set by TacticalAttacker

    def bind(self, client: Client, rng: np.random.Generator) -> None:
        self.client, self.rng = client, rng
        if not self.target:
            self.target = client.service_names[0]
        if self.target not in client.service_names:
            raise ValueError(f"{type(self).__name__}: unknown target service {self.target!r}; "
                             f"services: {', '.join(client.service_names)}")
        self.setup()

    def setup(self) -> None:
        """Episode state (pool order, surrogate). Override."""

    def account(self, service: str) -> Account | None:
        """A live account on ``service``, opening one if none is left (None when the budget forbids)."""
        live = self.client.accounts(service)
        if live:
            return live[-1]
        try:
            return self.client.open_account(service)
        except QueryRefused:
            return None

    def affordable(self, account: Account, n: int) -> int:
        """The most of ``n`` queries the API would serve on ``account`` right now (it owns the budget arithmetic)."""
        return self.client.affordable(account, n)

    def send(self, service: str, x: Any, adaptive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Buy answers for as many of ``x`` as the budgets allow, opening a new account after a ban.

        The one send loop of every body. With the seat's tactics (``self.tactics``, see
        :mod:`extractgym.agents.tactics`) it spreads the batch over Sybil accounts, sends blinded versions of
        the queries and withholds those a substitute detector flags; without, it uses one account at a time.
        ``adaptive=False`` sends ``x`` as it is (no blinding, no filtering; accounts are still the tactics'):
        for queries whose exact values matter, e.g. DFME's gradient-estimation points.
        Returns the indices of ``x`` that were answered and their outputs (answers to what was sent).
        """
        t = self.tactics
        if t is None:
            from extractgym.agents.tactics.base import NO_TACTICS as t
        t.begin(service, len(x))
        sent = t.blind(x, service) if adaptive else x
        pending = np.arange(len(x))
        done: list[np.ndarray] = []
        outs: list[np.ndarray] = []
        while len(pending):
            acc = t.account(self, service)
            if acc is None:
                break
            n = self.affordable(acc, t.room(acc, len(pending)))
            if n == 0:
                if t.full(acc):
                    continue  # this account hit its rate limit; another one may take the rest
                break
            chunk = pending[:n]  # what this account can take now; the filter sees only queries that could go out
            withheld = False
            if adaptive:
                keep = np.asarray(t.keep(acc, sent[chunk]), dtype=bool)
                withheld = not keep.all()
                if withheld:  # never sent, never charged, never answered
                    pending = pending[~np.isin(pending, chunk[~keep])]
                    chunk = chunk[keep]
                    if not len(chunk):
                        continue
            try:
                r = self.client.query(acc, sent[chunk])
            except QueryRefused:
                break  # rate limit or a budget the quote did not foresee: stop for this round
            answered = chunk[:r.n_answered]
            t.observe(acc, sent[answered], r)
            if r.n_answered:
                done.append(answered)
                outs.append(r.outputs)
                pending = pending[~np.isin(pending, answered)]
            if r.banned:
                continue  # the rest goes to another account, if the budgets allow one
            if r.n_answered == 0 or (t.sybil is None and not withheld):
                break  # served what we could afford; nothing more to do this round
            # Sybil: the next account takes the next share; a filter: what it withheld left budget for more
        if not done:
            n_classes = self.client.service_info(service)[0]
            return np.zeros(0, dtype=np.int64), np.zeros((0, n_classes))
        return np.concatenate(done), np.concatenate(outs)

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        raise NotImplementedError

    def predict_proba(self, x: Any) -> np.ndarray:
        raise NotImplementedError


class DefenderBase:
    """A defence that serves everything and changes nothing until a subclass says otherwise.

    Subclasses declare ``knobs``; :meth:`set_knobs` stores each knob's value as an attribute of the same name.
    """

    knobs: tuple[Knob, ...] = (Knob("noop", (None,)),)

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        self.view, self.rng = view, rng
        self.set_knobs({k.name: k.choices[k.default] for k in self.knobs})

    def set_knobs(self, knobs: dict[str, Any]) -> None:
        for name, value in knobs.items():
            setattr(self, name, value)

    def screen(self, account: Account, x: np.ndarray) -> int:
        return len(x)

    def shape(self, probs: np.ndarray, account: Account | None, x: np.ndarray | None) -> np.ndarray:
        return probs

    def end_round(self, round_index: int) -> None:
        pass
