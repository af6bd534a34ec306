"""Tournaments: attackers x defenders x scenarios x seeds, played with the scenarios' game and referee.

A league spec (``scenarios/tournaments/*.yaml``, :mod:`extractgym.league.spec`) names rosters of attacker and
defender contestants, the scenarios whose seat 0 they fill, the number of seeds and each side's payoff.
:mod:`~extractgym.league.cells` expands it into cells (one episode each, validated before any is played),
:mod:`~extractgym.league.runner` plays them (a local process pool or Ray) into ``results.jsonl``, each row keyed
on the code that played it (:mod:`~extractgym.league.fingerprint`), :mod:`~extractgym.league.analysis` turns the
rows into payoff tables and every registered ranking (:mod:`~extractgym.league.methods`; the math is in
:mod:`~extractgym.league.rankings`) with intervals and tested ranks, :mod:`~extractgym.league.verdict` says what
they mean and what to doubt, and :mod:`~extractgym.league.report` writes the self-contained HTML report
(:mod:`~extractgym.league.compare`: two runs side by side). The CLI is ``extractgym tournament``.

Layering: ``league`` sits above ``scenarios`` (it imports it; nothing below imports ``league``).
"""

from __future__ import annotations

from extractgym.league.spec import LeagueError, LeagueSpec, load_league, shipped_leagues

__all__ = ["LeagueError", "LeagueSpec", "load_league", "shipped_leagues"]
