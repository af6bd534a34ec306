"""No defence: the API serves the victim's outputs as they are (the baseline of every comparison)."""

from __future__ import annotations

from extractgym.agents.base import DefenderBase
from extractgym.agents.registry import register_defender


@register_defender("none")
class NoDefence(DefenderBase):
    """Serves everything unchanged. One knob with a single choice, so its action space is ``Discrete(1)``."""

    pure_shape = True
