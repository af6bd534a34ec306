"""Stress tests of a defence: the strongest adaptive attacker a CPU budget finds against a scenario's defence, and the
defence card that reports it (``extractgym stress``; docs/stress.md).

A layer above :mod:`extractgym.training` (it trains attackers with RL) and below ``serve`` and ``cli``.

* :mod:`~extractgym.stress.search`: the budgeted search (scripts, tactic combinations, best constants, RL from
  scratch and from the best script) and the paired comparison on held-out seeds;
* :mod:`~extractgym.stress.card`: ``card.json`` and the offline ``card.html``.
"""

from __future__ import annotations

from extractgym.stress.search import StressConfig, StressResult, stress

__all__ = ["StressConfig", "StressResult", "stress"]
