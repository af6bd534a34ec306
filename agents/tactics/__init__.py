"""Adaptive tactics (Sybil accounts, query blinding, query filtering, OARS-style adaptation): stages of an attacker
seat's channel, one file each, registered by name (the scenario's ``tactics:`` keys).

Importing this package imports every module in it, which registers them (like attackers and defenders). Each
tactic is a :class:`~extractgym.agents.seats.channel.Stage` of one kind (its ``stage`` attribute); see
:mod:`extractgym.agents.tactics.base`, and :mod:`extractgym.agents.seats.channel` for how stages compose.
"""

import importlib
import pkgutil

from extractgym.agents.tactics.base import TACTICS, register_tactic

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TACTICS", "register_tactic"]
