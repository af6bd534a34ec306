"""Rebuilding a served API from its stored books.

Two functions, kept apart on purpose:

* :func:`replay` applies stored ledger entries to a :class:`~extractgym.envs.api.PredictionAPI`'s accounts,
  wallets, bans and ledger, exactly as the API made them (the ledger is the truth: nothing is re-decided).
  It is the one place that knows how an entry changes the API's state, so it can be swapped for an
  event-sourced ``PredictionAPI.replay(entries)`` without touching anything else.
* :func:`replay_defences` rebuilds the defenders' state by feeding them a stored request the way
  :meth:`PredictionAPI.query` did: each defender screens it (with a copy of the account as it was), then the
  victim's rows of the served part are shaped in order. Their verdicts are ignored (the stored ``ban`` entries
  decide), but every detector's history, counters and random generator end where they were.

Why detector state is rebuilt by replay and not persisted: a stateful detector's state is arbitrary Python
(histories of encodings, running Shapiro-Wilk sums, per-account counters, a random generator): persisting it
would mean pickling every defender after every request, which is slow (the similarity detector keeps up to
2.7 MiB per account), couples the database to the defenders' private attributes, and would run unpickling on
restart. Digests alone cannot rebuild it (a detector needs the queries' values), so the server stores each
request's batch with its ledger row (``query_data``) and replays them, with ``end_round`` and the referee's
audit at the stored round boundaries. Replay is deterministic: a defender built from the same scenario and seed
and fed the same calls in the same order ends in the same state; a restart reproduces the uncrashed server
exactly (the restart test checks the answers that follow).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import numpy as np

from extractgym.envs.api import LedgerEntry, PredictionAPI, Verdict
from extractgym.envs.validation import validate_queries

KINDS = ("open", "query", "reject", "flag", "ban")


class ReplayError(RuntimeError):
    """Stored entries that cannot have come from this API (an unknown owner or account, a gap in the sequence)."""


def replay(api: PredictionAPI, entries: Iterable[LedgerEntry]) -> None:
    """Apply ``entries`` to the API's accounts, wallets and ledger, in order, by the API's own event-sourced
    :meth:`~extractgym.envs.api.PredictionAPI.replay` (the one place that knows how an entry changes its state).

    The entries must follow the API's own ledger (the first one's ``seq`` is ``len(api.ledger)``), and their
    owners must be registered. Money sums in the same order as the API's, so wallets come out bit-identical.
    """
    for e in entries:
        if e.seq != len(api.ledger):
            raise ReplayError(f"ledger entry {e.seq} does not follow the API's {len(api.ledger)} entries")
        if e.owner not in api.wallets:
            raise ReplayError(f"ledger entry {e.seq}: unknown owner {e.owner!r}")
        if e.kind != "open" and e.account not in api.accounts:
            raise ReplayError(f"ledger entry {e.seq}: unknown account {e.account!r}")
        if e.kind not in KINDS:
            raise ReplayError(f"ledger entry {e.seq}: unknown kind {e.kind!r}")
        api.replay([e])


def replay_defences(api: PredictionAPI, entry: LedgerEntry, x: np.ndarray) -> int:
    """Feed the request behind a ``query`` entry to the API's defenders, before :func:`replay` applies it.

    Returns how many queries the defenders accepted this time (equal to ``entry.n`` when replay is faithful).
    """
    acc = api.accounts[entry.account]
    svc = api.services[acc.service]
    x = validate_queries(x, svc.victim.input_spec)
    rows = np.arange(len(x))
    for d, knobs in zip(api.defences, api.defence_knobs, strict=True):
        verdict = Verdict.of(d.screen(replace(acc), x[rows], knobs), len(rows))
        if not (verdict.ban and svc.config.ban_delay > 0):
            rows = rows[verdict.serve]
    served = x[rows[:entry.n]]  # the stored verdict decides what was served
    out = svc.victim.predict_proba(served) if len(served) else np.zeros((0, svc.victim.n_classes))
    out.setflags(write=False)
    for d, knobs in zip(api.defences, api.defence_knobs, strict=True):  # called as the API calls them (also on no
        out = d.shape(out, replace(acc), served, knobs)                 # rows), so random defences draw the same
    return len(rows)
