"""Attacker bodies, one file each; importing this package registers them."""

from extractgym.agents.attackers import random_sampling  # noqa: F401
