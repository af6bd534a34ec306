"""Tournaments: attackers x defenders x scenarios x seeds, played with the scenarios' game and referee.

A league spec (``scenarios/tournaments/*.yaml``, :mod:`extractgym.league.spec`) names rosters of attacker and
defender contestants, the scenarios whose seat 0 they fill, the number of seeds and each side's payoff.
:mod:`~extractgym.league.cells` expands it into cells (one episode each, validated before any is played),
:mod:`~extractgym.league.runner` plays them (a local process pool or Ray) into ``results.jsonl``,
:mod:`~extractgym.league.rankings` turns the rows into payoff tables and rankings (pure math), and
:mod:`~extractgym.league.report` writes the self-contained HTML report. The CLI is ``extractgym tournament``.

Layering: ``league`` sits above ``scenarios`` (it imports it; nothing below imports ``league``).
"""

from __future__ import annotations

from extractgym.league.spec import LeagueError, LeagueSpec, load_league, shipped_leagues

__all__ = ["LeagueError", "LeagueSpec", "load_league", "shipped_leagues"]
