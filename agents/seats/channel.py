"""An attacker seat's line to the prediction API: the one send pipeline every body buys answers through.

The factory assembles a :class:`Channel` from the seat's ``tactics:`` and hands it to the body; the body never
holds the API's client. A channel has a stage of each kind the seat uses (:data:`STAGE_KINDS`), each a tactic
(:class:`Stage`, one file in ``agents/tactics/``) with knobs of its own:

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

A new tactic of an existing kind is one file in ``agents/tactics/`` (a :class:`Stage` with ``stage = KIND``,
registered with ``register_tactic``). A new kind of stage is one more name at the end of :data:`STAGE_KINDS` (its
random stream comes after the others', which stay as they were) and the hooks its tactic implements.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from extractgym.envs.api import Account, Client, Response
from extractgym.envs.errors import QueryRefused
from extractgym.envs.protocols import Knob
from extractgym.envs.validation import MAX_BATCH

STAGE_KINDS = ("accounts", "blinding", "filter", "adapt")
"""The channel's stage kinds, in the order a batch passes them. A kind's position is also the index of its random
stream (``rng.spawn(len(STAGE_KINDS))``): a new kind goes at the end, and the other stages' streams stay as they
were, so a scenario without the new stage plays exactly as before."""


class Stage:
    """One stage of a :class:`Channel`: a tactic (``agents/tactics/``, one file each, registered by name) of one
    kind (:data:`STAGE_KINDS`). Every hook is optional; the defaults change nothing. Hooks receive the round's knob
    values (``knobs``) and never call back into the body.

    * ``prepare(x, sent, spec, knobs) -> sent``: what is actually sent for the batch ``x`` (blinding; OARS keeps a
      private copy it may rewrite), given what the earlier stages made of it;
    * ``keep(account, x, knobs) -> bool mask``: which queries of a chunk go out (withheld ones cost nothing);
    * ``observe(account, sent, response)``: the answer to a chunk (``sent``: the rows that were answered);
    * ``settle(account, chunk, got, response, sent, knobs) -> done``: which of the chunk's queries are done (None:
      the default, every query that was sent unless a ban cut the request short); rewriting rows of ``sent`` and
      leaving them pending resends them within the batch.

    ``prepare``, ``keep`` and ``settle`` apply only to adaptive sends (``Channel.send(..., adaptive=True)``);
    ``observe`` sees every answer. An account policy (kind ``accounts``) also answers ``begin`` and ``next_slot``
    (:class:`ReactiveAccounts`), and may answer ``when(account, knobs) -> float | None``: the time of day its next
    request on ``account`` is sent (pacing, docs/sybil.md; None: untimed, every policy's default). A stage may define
    ``fits(spec)`` to say, before round 1, why it cannot work on a target whose queries look like ``spec``.
    """

    stage: ClassVar[str] = ""
    knobs: tuple[Knob, ...] = ()

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        """Connect to the owner's client for an episode (``rng``: this stage kind's own stream)."""

    def prepare(self, x: Any, sent: Any, spec: Any, knobs: Mapping[str, Any]) -> Any:
        return sent

    def keep(self, account: Account, x: Any, knobs: Mapping[str, Any]) -> np.ndarray | None:
        return None

    def observe(self, account: Account, sent: Any, response: Response) -> None:
        pass

    def settle(self, account: Account, chunk: np.ndarray, got: np.ndarray, response: Response, sent: Any,
               knobs: Mapping[str, Any]) -> np.ndarray | None:
        return None

    def stats(self) -> dict[str, Any]:
        return {}


class ReactiveAccounts(Stage):
    """One live account per service at a time; after a ban, a new one while the budgets allow (seed 003's
    attacker, which pays for each account it burns). Every channel's account policy unless a tactic of kind
    ``accounts`` (:class:`~extractgym.agents.tactics.sybil.Sybil`) replaces it.

    An account policy answers two more hooks: ``begin(service, n, knobs)`` (a batch of ``n`` queries starts) and
    ``next_slot(service, n, knobs) -> (account, how many of the n pending it may take now) | None`` (None: stop
    this batch)."""

    stage = "accounts"

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


@dataclass(frozen=True)
class Delivery:
    """How the last :meth:`Channel.send` ended, so a body can tell a refusal from the end of its budget.

    ``refused``: queries sent and never answered (a defence rejected them, or refused them with a ban and no later
    account answered them); ``unsent``: queries still pending when the batch stopped because a limit was reached
    (the seat's query, money or account budget, a rate limit); ``exhausted``: whether that happened, i.e. asking
    again now would buy nothing more. ``asked == answered + withheld + refused + unsent``.
    """

    asked: int = 0
    answered: int = 0
    withheld: int = 0
    refused: int = 0
    unsent: int = 0

    @property
    def exhausted(self) -> bool:
        return self.unsent > 0


class Channel:
    """The pipeline between a body and the API's client (see the module docstring).

    Args:
        stages: the seat's tactics, at most one per kind (:data:`STAGE_KINDS`); without one of kind ``accounts``,
            the account policy is :class:`ReactiveAccounts`.
    """

    def __init__(self, stages: Iterable[Stage] = ()) -> None:
        by_kind: dict[str, Stage] = {}
        for s in stages:
            kind = getattr(s, "stage", "")
            if kind not in STAGE_KINDS:
                raise ValueError(f"{type(s).__name__}: unknown channel stage {kind!r}; stages: {', '.join(STAGE_KINDS)}")
            if kind in by_kind:
                raise ValueError(f"{type(by_kind[kind]).__name__} and {type(s).__name__} are both {kind!r} stages: "
                                 f"a channel takes one of each")
            by_kind[kind] = s
        self.tactical = bool(by_kind)
        self.accounts = by_kind.pop("accounts", None) or ReactiveAccounts()
        self.stages: tuple[Stage, ...] = (self.accounts, *(by_kind[k] for k in STAGE_KINDS if k in by_kind))
        self._tactics = tuple(s for s in self.stages if s is not self.accounts)  # what adaptive=False skips
        self.knobs: tuple[Knob, ...] = tuple(k for s in self.stages for k in s.knobs)
        self._knobs: dict[str, Any] = {k.name: k.choices[k.default] for k in self.knobs}
        self._client: Client | None = None
        self.log = RoundLog()
        self.last = Delivery()  # how the last send ended (refused vs a budget reached)
        self._unsent = 0

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        """Connect to the owner's client for an episode; ``rng`` (None without tactics) seeds the stages, one child
        stream per stage kind (:data:`STAGE_KINDS`), whichever others are present: adding Sybil does not change
        blinding's draws."""
        self._client = client
        rngs = rng.spawn(len(STAGE_KINDS)) if rng is not None else [None] * len(STAGE_KINDS)
        for stage in self.stages:
            stage.bind(client, rngs[STAGE_KINDS.index(stage.stage)])

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
        :attr:`last` then says why any of ``x`` went unanswered (:class:`Delivery`: refused by a defence, or a
        budget or rate limit reached).
        """
        client, knobs = self._connected(), self._knobs
        n_classes, spec = client.service_info(service)
        tactics = self._tactics if adaptive else ()
        sent = x
        for stage in tactics:  # a private copy where a stage rewrites what is sent as responses come
            sent = stage.prepare(x, sent, spec, knobs)
        self.accounts.begin(service, len(x), knobs)
        self.log.asked += len(x)
        pending = np.arange(len(x))
        answered: list[np.ndarray] = []
        outputs: list[np.ndarray] = []
        withheld, self._unsent = self.log.withheld, 0
        while len(pending) and (slot := self.accounts.next_slot(service, len(pending), knobs)) is not None:
            account, n = slot
            chunk = pending[:min(n, MAX_BATCH)]  # what this account can take now; filters see only what could go out
            for stage in tactics:
                keep = stage.keep(account, sent[chunk], knobs)
                if keep is None:
                    continue
                keep = np.asarray(keep, dtype=bool)
                pending = pending[~np.isin(pending, chunk[~keep])]  # withheld: never sent, never charged
                self.log.withheld += int((~keep).sum())
                chunk = chunk[keep]
            if len(chunk):
                pending = self._query(client, account, sent, chunk, pending, answered, outputs, tactics)
        n_answered, n_withheld, unsent = sum(len(a) for a in answered), self.log.withheld - withheld, \
            len(pending) + self._unsent
        self.last = Delivery(len(x), n_answered, n_withheld, len(x) - n_answered - n_withheld - unsent, unsent)
        if not answered:
            return np.zeros(0, dtype=np.int64), np.zeros((0, n_classes))
        idx, out = np.concatenate(answered), np.concatenate(outputs)
        order = np.argsort(idx, kind="stable")  # in the order of x (rejections can leave gaps)
        return idx[order], out[order]

    def _query(self, client: Client, account: Account, sent: Any, chunk: np.ndarray, pending: np.ndarray,
               answered: list[np.ndarray], outputs: list[np.ndarray], tactics: tuple[Stage, ...]) -> np.ndarray:
        """Send ``chunk`` on ``account``; return what is still pending (nothing after a refusal: the batch ends)."""
        when = getattr(self.accounts, "when", None)
        at = when(account, self._knobs) if callable(when) else None
        try:
            response = client.query(account, sent[chunk]) if at is None else client.query(account, sent[chunk], at=at)
        except QueryRefused:  # a budget or rate limit the allowance did not foresee: stop this batch
            self._unsent = len(pending)
            return pending[:0]
        got = chunk[response.rows]
        for stage in self.stages:
            stage.observe(account, sent[got], response)
        if len(got):
            answered.append(got)
            outputs.append(response.outputs)
            self.log.answered += len(got)
            self.log.sent.append(sent[got])
            self.log.outputs.append(response.outputs)
        # after a ban the rest goes to another account; what a defence rejected without a ban is dropped, unless a
        # stage resamples it (it rewrites those rows of ``sent``) and keeps it pending
        done = got if response.banned else chunk
        for stage in tactics:
            settled = stage.settle(account, chunk, got, response, sent, self._knobs)
            if settled is not None:
                done = settled
        return pending[~np.isin(pending, done)]

    def stats(self) -> dict[str, Any]:
        """The tactics' tallies (queries filtered, accounts rotated, ...)."""
        out: dict[str, Any] = {}
        for stage in self.stages:
            out.update(stage.stats())
        return out
