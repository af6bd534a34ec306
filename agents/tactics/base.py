"""Adaptive tactics: moves that target the defence itself, composed with any attacker body (seed 003 §VII,
seed 001 §3, seed 004 §VI).

A tactic is a stage of an attacker seat's :class:`~extractgym.agents.seats.channel.Channel`, the one send pipeline every
body buys answers through (see :mod:`extractgym.agents.seats.channel` for the path of a query):

* ``sybil`` (:mod:`~extractgym.agents.tactics.sybil`) is an *account policy*: which account the next chunk goes to;
* ``blinding`` (:mod:`~extractgym.agents.tactics.blinding`) transforms what is actually sent;
* ``filter`` (:mod:`~extractgym.agents.tactics.filtering`) withholds queries a substitute detector would flag;
* ``oars`` (:mod:`~extractgym.agents.tactics.oars`) reads every response and resamples rejected queries.

Each is a :class:`~extractgym.agents.seats.channel.Stage` of one kind (``stage = "accounts"``, ``"blinding"``,
``"filter"`` or ``"adapt"``), registered by name (the scenario's ``tactics:`` keys), whose constructor keywords are
its YAML parameters and whose ``knobs`` join the body's, so a brain can learn when to use them. Its hooks receive the
round's knob values; none calls back into the body. A stage may define ``fits(spec) -> str | None`` to say, before
round 1, why it cannot work on a target whose queries look like ``spec``.
"""

from __future__ import annotations

from extractgym.agents.registry import TACTICS, register_tactic

__all__ = ["TACTICS", "register_tactic"]
