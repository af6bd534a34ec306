"""Brains: what sets a seat's knobs each round, as ``obs -> action``.

* :mod:`~extractgym.agents.brains.base`: the registry (:data:`BRAINS`), ``preset``, ``random``, ``sticky-random``;
* :mod:`~extractgym.agents.brains.scripts`: hand-written brains that read the observation (registered on import);
* :mod:`~extractgym.agents.brains.learned`: a saved stable-baselines3 policy playing a seat.
"""

from extractgym.agents.brains import scripts  # noqa: F401  (registration)
from extractgym.agents.brains.base import (
                                           BRAINS,
                                           PresetBrain,
                                           RandomBrain,
                                           StickyRandomBrain,
                                           pinned_action,
                                           pinned_indices,
)

__all__ = ["BRAINS", "PresetBrain", "RandomBrain", "StickyRandomBrain", "pinned_action", "pinned_indices"]
