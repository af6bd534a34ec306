"""Adaptive tactics (Sybil accounts, query blinding, query filtering) composable with every attacker body.

See :mod:`extractgym.agents.tactics.base` for how they plug into the send loop.
"""

from extractgym.agents.tactics import blinding, filtering, sybil  # noqa: F401  (registration)
from extractgym.agents.tactics.base import NO_TACTICS, TACTICS, Tactic, Tactics, register_tactic
from extractgym.agents.tactics.wrapper import TacticalAttacker, build_tactics

__all__ = ["NO_TACTICS", "TACTICS", "Tactic", "Tactics", "TacticalAttacker", "build_tactics", "register_tactic"]
