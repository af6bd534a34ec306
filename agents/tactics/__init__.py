"""Adaptive tactics (Sybil accounts, query blinding, query filtering, OARS-style adaptation): stages of an attacker
seat's channel.

See :mod:`extractgym.agents.tactics.base`, and :mod:`extractgym.agents.channel` for how they compose.
"""

from extractgym.agents.tactics import blinding, filtering, oars, sybil  # noqa: F401  (registration)
from extractgym.agents.tactics.base import TACTICS, register_tactic

STAGES = {"sybil": "accounts", "blinding": "blinding", "filter": "filter", "oars": "adapt"}  # key -> channel stage

__all__ = ["STAGES", "TACTICS", "register_tactic"]
