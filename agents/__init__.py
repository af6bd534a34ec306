"""Attacker and defender bodies, their registries and brains.

Importing this package registers every shipped body in :data:`ATTACKERS` / :data:`DEFENDERS`.
"""

from extractgym.agents import attackers, brains, defenders  # noqa: F401  (registration)
from extractgym.agents.registry import ATTACKERS, DEFENDERS

__all__ = ["ATTACKERS", "DEFENDERS"]
