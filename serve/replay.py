"""Rebuilding a served API from its stored books.

Two functions, kept apart on purpose:

* :func:`replay` applies stored ledger entries to a :class:`~extractgym.envs.api.PredictionAPI`'s accounts,
  wallets, bans and ledger, exactly as the API made them (the ledger is the truth: nothing is re-decided).
  It is the one place that knows how an entry changes the API's state, so it can be swapped for an
  event-sourced ``PredictionAPI.replay(entries)`` without touching anything else.
* :func:`replay_defences` rebuilds the defenders' state by feeding them a stored request through the API's own
  :meth:`~extractgym.envs.api.PredictionAPI.defend`, the path :meth:`~extractgym.envs.api.PredictionAPI.query`
  takes (screen, victim, shape). Their verdicts change nothing (the stored ``ban`` entries decide) but must agree
  with the books, and every detector's history, counters and random generator end where they were.

Why detector state is rebuilt by replay: a stateful detector's state is arbitrary Python (histories of encodings,
running Shapiro-Wilk sums, per-account counters, a random generator), and digests alone cannot rebuild it (a
detector needs the queries' values), so the server stores each request's batch with its ledger row
(``query_data``) and replays them, with ``end_round`` and the referee's audit at the stored round boundaries.
Replay is deterministic: a defender built from the same scenario and seed and fed the same calls in the same order
ends in the same state; a restart reproduces the uncrashed server exactly (the restart test checks the answers that
follow). Replay is the definition; :mod:`extractgym.serve.snapshot` only shortens it: a restart starts from the
newest stored snapshot of the state and replays the entries after it with these same two functions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from extractgym.envs.api import LedgerEntry, PredictionAPI
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


def replay_defences(api: PredictionAPI, entry: LedgerEntry, x: np.ndarray) -> None:
    """Feed the request behind a ``query`` entry to the API's defenders (:meth:`PredictionAPI.defend`, the path
    :meth:`~extractgym.envs.api.PredictionAPI.query` takes), before :func:`replay` applies the entry.

    Raises:
        ReplayError: the defenders now serve another number of queries than the entry records (the stored books
            and the rebuilt detectors would disagree from here on).
    """
    acc = api.accounts[entry.account]
    x = validate_queries(x, api.services[acc.service].victim.input_spec)
    served = len(api.defend(acc, x).rows)
    if served != entry.n:
        raise ReplayError(f"ledger entry {entry.seq}: the defenders now serve {served} of its {len(x)} queries; "
                          f"the books say {entry.n} (was the scenario or a defender changed?)")
