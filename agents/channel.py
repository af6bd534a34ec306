"""An attacker seat's line to the prediction API: the one send pipeline every body buys answers through.

The factory assembles a :class:`Channel` from the seat's ``tactics:`` and hands it to the body; the body never
holds the API's client. A channel has three stages, each a small object with knobs of its own:

* an **account policy** -- which account the next chunk of a batch goes to and how many queries it may take:
  :class:`ReactiveAccounts` (one account at a time, a new one after a ban: every seat's default, the attacker
  seed 003 counts accounts with) or the proactive :class:`~extractgym.agents.tactics.sybil.Sybil` tactic;
* **blinding** (optional, :mod:`~extractgym.agents.tactics.blinding`): what is actually sent for the batch the body
  asked about (the body trains on its own inputs with the answers to the blinded ones, seed 003 §VII-A);
* a **filter** (optional, :mod:`~extractgym.agents.tactics.filtering`): which of a chunk's queries are sent at all
  (withheld queries are never sent and cost nothing, seed 003 §VII-B);
* an **adapt** stage (optional, :mod:`~extractgym.agents.tactics.oars`): it sees every response, and may rewrite what
  is sent for the batch's queries and keep the ones a defence rejected pending, so they are sent again within the
  batch (OARS-style resampling, Feng et al. CCS 2023).

The send path of one query, one way down: the body calls :meth:`Channel.send`; the channel blinds the batch, asks
its account policy for a slot (an account and how many queries it may take, the count from the API's own
:meth:`~extractgym.envs.api.PredictionAPI.affordable`), lets the filter drop what it would withhold, and sends the
rest through :meth:`~extractgym.envs.api.Client.query`; the API's gate validates, charges and logs; the answer flows
back up, past the adapt stage, which says which of the chunk's queries are done (rejected ones it resamples stay
pending). No stage calls back into the body, and budget questions go only to the API.

Knob values arrive with each round (:meth:`Channel.begin_round`) and are passed to every stage's hooks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from extractgym.envs.api import Account, Client, Response
from extractgym.envs.errors import QueryRefused
from extractgym.envs.protocols import Knob
from extractgym.envs.validation import MAX_BATCH


class AccountPolicy(Protocol):
    """Which account takes the next chunk of a batch (see :class:`ReactiveAccounts`)."""

    knobs: tuple[Knob, ...]

    def bind(self, client: Client, rng: np.random.Generator | None) -> None: ...

    def begin(self, service: str, n: int, knobs: Mapping[str, Any]) -> None:
        """A batch of ``n`` queries for ``service`` starts."""

    def next_slot(self, service: str, n: int, knobs: Mapping[str, Any]) -> tuple[Account, int] | None:
        """An account and how many of the ``n`` pending queries it may take now (> 0), or None: stop this batch."""

    def observe(self, account: Account, response: Response) -> None:
        """What the account was just answered."""

    def stats(self) -> dict[str, Any]: ...


class ReactiveAccounts:
    """One live account per service at a time; after a ban, a new one while the budgets allow (seed 003's
    attacker, which pays for each account it burns)."""

    knobs: tuple[Knob, ...] = ()

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        self.client = client

    def begin(self, service: str, n: int, knobs: Mapping[str, Any]) -> None:
        pass

    def next_slot(self, service: str, n: int, knobs: Mapping[str, Any]) -> tuple[Account, int] | None:
        live = self.client.accounts(service)
        try:
            account = live[-1] if live else self.client.open_account(service)
        except QueryRefused:  # the account or money budget: no account, nothing more this batch
            return None
        allowed = self.client.affordable(account, n).n
        return (account, allowed) if allowed > 0 else None

    def observe(self, account: Account, response: Response) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


@dataclass
class RoundLog:
    """What the channel saw in one round: the seat's own record, from which its observation is computed."""

    asked: int = 0  # queries the body asked to buy
    answered: int = 0
    withheld: int = 0  # by the seat's own filter
    sent: list[Any] = field(default_factory=list)  # what was actually sent and answered (blinded, if blinding)
    outputs: list[np.ndarray] = field(default_factory=list)

    @property
    def refused(self) -> int:
        """Asked but neither answered nor withheld: budgets, rate limits, rejections, bans."""
        return self.asked - self.answered - self.withheld

    def queries(self) -> tuple[Any, np.ndarray]:
        """The answered queries as sent, and their answers (empty arrays when none)."""
        if not self.outputs:
            return np.zeros(0), np.zeros((0, 0))
        x = np.concatenate([np.asarray(p) for p in self.sent])
        return x, np.concatenate(self.outputs)


class Channel:
    """The pipeline between a body and the API's client (see the module docstring).

    Args:
        accounts: the account policy (default :class:`ReactiveAccounts`).
        blinding: a blinding tactic or None.
        filter: a filtering tactic or None.
        adapt: an adaptive tactic that reads every response (:mod:`~extractgym.agents.tactics.oars`) or None.
    """

    def __init__(self, accounts: Any = None, blinding: Any = None, filter: Any = None,  # noqa: A002
                 adapt: Any = None) -> None:
        self.accounts = accounts if accounts is not None else ReactiveAccounts()
        self.blinding, self.filter, self.adapt = blinding, filter, adapt
        self.tactical = accounts is not None or blinding is not None or filter is not None or adapt is not None
        self.knobs: tuple[Knob, ...] = tuple(k for t in self._stages() for k in t.knobs)
        self._knobs: dict[str, Any] = {k.name: k.choices[k.default] for k in self.knobs}
        self._client: Client | None = None
        self.log = RoundLog()

    def _stages(self) -> tuple[Any, ...]:
        return tuple(t for t in (self.accounts, self.blinding, self.filter, self.adapt) if t is not None)

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        """Connect to the owner's client for an episode; ``rng`` (None without tactics) seeds the tactics."""
        self._client = client
        # one child generator per stage kind, whichever others are present (adding Sybil does not change blinding)
        rngs = rng.spawn(4) if rng is not None else (None, None, None, None)  # spawn(4)'s first 3 = spawn(3)'s
        for stage, r in zip((self.accounts, self.blinding, self.filter, self.adapt), rngs, strict=True):
            if stage is not None:
                stage.bind(client, r)

    def begin_round(self, knobs: Mapping[str, Any]) -> None:
        """This round's values of the channel's own knobs (the tactics'); a fresh round log."""
        self._knobs = {**self._knobs, **knobs}
        self.log = RoundLog()

    # -- what a body may ask ----------------------------------------------------------------------------------
    @property
    def round(self) -> int:
        return self._connected().round

    @property
    def service_names(self) -> tuple[str, ...]:
        return self._connected().service_names

    def service_info(self, name: str) -> tuple[int, Any]:
        """``(n_classes, input_spec)`` of a service (copies)."""
        return self._connected().service_info(name)

    def service_terms(self, name: str) -> Any:
        """A copy of a service's published terms."""
        return self._connected().service_terms(name)

    def left(self, what: str) -> float:
        """The seat's unspent ``queries``, ``money`` or ``accounts`` (``inf`` when unlimited)."""
        return self._connected().left(what)

    def _connected(self) -> Client:
        if self._client is None:
            raise RuntimeError("the channel is not connected: bind the seat first")
        return self._client

    # -- the one send loop --------------------------------------------------------------------------------------
    def send(self, service: str, x: Any, adaptive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Buy answers for as many of ``x`` as the budgets allow.

        ``adaptive=False`` sends ``x`` as it is (no blinding, no filtering; accounts are still the policy's): for
        queries whose exact values matter, e.g. DFME's gradient-estimation points.
        Returns the indices of ``x`` that were answered and their outputs (the answers to what was sent).
        """
        client, knobs = self._connected(), self._knobs
        n_classes, spec = client.service_info(service)
        sent = self.blinding.apply(x, spec, knobs) if adaptive and self.blinding is not None else x
        adapt = self.adapt if adaptive else None
        if adapt is not None:  # a private copy of what is sent, which the stage may rewrite as responses come
            sent = adapt.begin(x, sent, spec, knobs)
        self.accounts.begin(service, len(x), knobs)
        self.log.asked += len(x)
        pending = np.arange(len(x))
        answered: list[np.ndarray] = []
        outputs: list[np.ndarray] = []
        while len(pending) and (slot := self.accounts.next_slot(service, len(pending), knobs)) is not None:
            account, n = slot
            chunk = pending[:min(n, MAX_BATCH)]  # what this account can take now; the filter sees only queries that could go out
            if adaptive and self.filter is not None:
                keep = np.asarray(self.filter.keep(account, sent[chunk], knobs), dtype=bool)
                pending = pending[~np.isin(pending, chunk[~keep])]  # withheld: never sent, never charged
                self.log.withheld += int((~keep).sum())
                chunk = chunk[keep]
            if len(chunk):
                pending = self._query(client, account, sent, chunk, pending, answered, outputs, adapt)
        if not answered:
            return np.zeros(0, dtype=np.int64), np.zeros((0, n_classes))
        idx, out = np.concatenate(answered), np.concatenate(outputs)
        order = np.argsort(idx, kind="stable")  # in the order of x (rejections can leave gaps)
        return idx[order], out[order]

    def _query(self, client: Client, account: Account, sent: Any, chunk: np.ndarray, pending: np.ndarray,
               answered: list[np.ndarray], outputs: list[np.ndarray], adapt: Any = None) -> np.ndarray:
        """Send ``chunk`` on ``account``; return what is still pending (nothing after a refusal: the batch ends)."""
        try:
            response = client.query(account, sent[chunk])
        except QueryRefused:  # a budget or rate limit the allowance did not foresee: stop this batch
            return pending[:0]
        got = chunk[response.rows]
        self.accounts.observe(account, response)
        if self.filter is not None:
            self.filter.observe(account, sent[got], response)
        if len(got):
            answered.append(got)
            outputs.append(response.outputs)
            self.log.answered += len(got)
            self.log.sent.append(sent[got])
            self.log.outputs.append(response.outputs)
        # after a ban the rest goes to another account; what a defence rejected without a ban is dropped, unless the
        # adapt stage resamples it (it rewrites those rows of ``sent``) and keeps it pending
        done = got if response.banned else chunk
        if adapt is not None:
            done = adapt.observe(account, chunk, got, response, sent, self._knobs)
        return pending[~np.isin(pending, done)]

    def stats(self) -> dict[str, Any]:
        """The tactics' tallies (queries filtered, accounts rotated, ...)."""
        out: dict[str, Any] = {}
        for t in self._stages():
            out.update(t.stats())
        return out
