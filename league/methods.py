"""The league's rankings, each one registered function (like bodies): ``game -> (attacker scores, defender scores)``.

A ranking reads a :class:`Game` -- the mean payoff tables of one scope, ``[attackers, defenders]``, each side's
own payoff (higher is better for it) -- and returns one score per attacker and one per defender. Registering it
is all it takes to appear in every table, CSV, interval, rank and the report::

    from extractgym.league.methods import register_ranking

    @register_ranking("best", "best case")
    def best_case(game):
        \"\"\"Each contestant's best payoff against the other side.\"\"\"
        return game.attacker.max(axis=1), game.defender.max(axis=0)

The analysis (:mod:`extractgym.league.analysis`) computes every registered ranking on the tables averaged over
seeds (the point), then on tables of seeds resampled with replacement (the bootstrap, ``rankings.bootstrap``
times), and derives the interval and the rank from those. A ranking that is a mean over the seeds of a per-seed
score (``per_seed=True``, the mean payoff) gets Student's t over the seeds instead, exact for a mean and cheaper.
``complete=False`` says it can be computed with holes in the tables (a pair without a finished episode);
``better="lower"`` orders it ascending (a regret); ``bounds`` clips its interval (a probability's [0, 1]);
``mass=True`` says the scores are a distribution the contestants share (an equilibrium's weights), which changes how
ties are tested (:func:`extractgym.league.rankings.ranks_by_group_max`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from extractgym.league import rankings as rk

Scores = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class Game:
    """One scope's mean payoff tables ``[attackers, defenders]``: ``attacker`` (the attackers' payoffs) and
    ``defender`` (the defenders'), with the alpha-Rank settings. Shared solutions are computed once per game."""

    attacker: np.ndarray
    defender: np.ndarray
    alpha: float = 100.0
    population: int = 50
    notes: dict[str, float] = field(default_factory=dict, compare=False)

    @cached_property
    def competitive(self) -> np.ndarray:
        """The zero-sum part ``(A - B) / 2`` the equilibria are computed on (``A`` when ``B = -A``)."""
        return rk.competitive_part(self.attacker, self.defender)

    @cached_property
    def equilibrium(self) -> rk.Equilibrium:
        """The maximum-entropy equilibrium of the competitive part (unique)."""
        return rk.max_entropy_nash(self.competitive)

    @cached_property
    def alpharank(self) -> Scores:
        """Two-population alpha-Rank masses (alpha lowered where the chain is reducible; ``notes['alpha']``)."""
        ma, md, used = rk.alpharank_auto(self.attacker, self.defender, self.alpha, self.population)
        self.notes["alpha"] = used
        return ma, md


@dataclass(frozen=True)
class RankingMethod:
    """A registered ranking: its key, title, function and how its intervals and ranks are computed."""

    key: str
    title: str
    fn: Callable[[Game], Scores]
    doc: str
    per_seed: bool = False
    complete: bool = True
    better: str = "higher"
    bounds: tuple[float, float] | None = None
    mass: bool = False


RANKINGS: dict[str, RankingMethod] = {}


def register_ranking(key: str, title: str, *, per_seed: bool = False, complete: bool = True,
                     better: str = "higher", bounds: tuple[float, float] | None = None, mass: bool = False
                     ) -> Callable[[Callable[[Game], Scores]], Callable[[Game], Scores]]:
    """Register ``fn(game) -> (attacker scores, defender scores)`` as the ranking ``key`` (module docstring)."""
    if better not in ("higher", "lower"):
        raise ValueError(f"better must be 'higher' or 'lower', got {better!r}")

    def add(fn: Callable[[Game], Scores]) -> Callable[[Game], Scores]:
        if key in RANKINGS and RANKINGS[key].fn is not fn:
            raise ValueError(f"ranking {key!r} is registered twice")
        doc = " ".join((fn.__doc__ or "").split())
        RANKINGS[key] = RankingMethod(key, title, fn, doc, per_seed, complete, better, bounds, mass)
        return fn

    return add


def scores(ranking: RankingMethod, game: Game) -> Scores:
    """The ranking's scores on ``game`` as float arrays (NaN where it cannot be computed)."""
    n_a, n_d = game.attacker.shape
    holes = not (np.isfinite(game.attacker).all() and np.isfinite(game.defender).all())
    if holes and ranking.complete:
        return np.full(n_a, np.nan), np.full(n_d, np.nan)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            a, d = ranking.fn(game)
    except ValueError:  # e.g. alpha-Rank without a unique stationary distribution at any alpha
        return np.full(n_a, np.nan), np.full(n_d, np.nan)
    a, d = np.asarray(a, dtype=float).reshape(-1), np.asarray(d, dtype=float).reshape(-1)
    if a.shape != (n_a,) or d.shape != (n_d,):
        raise ValueError(f"ranking {ranking.key!r} returned {a.shape} and {d.shape} scores for a {n_a} x {n_d} game")
    return a, d


# -- the built-in rankings -----------------------------------------------------------------------------------------
@register_ranking("mean", "mean payoff", per_seed=True, complete=False)
def mean_payoff(game: Game) -> Scores:
    """Mean payoff over the other side's contestants."""
    return np.nanmean(game.attacker, axis=1), np.nanmean(game.defender, axis=0)


@register_ranking("worst", "worst case", complete=False)
def worst_case(game: Game) -> Scores:
    """The lowest payoff over the other side's contestants."""
    return np.nanmin(game.attacker, axis=1), np.nanmin(game.defender, axis=0)


@register_ranking("nash", "Nash weight", bounds=(0.0, 1.0), mass=True)
def nash_weight(game: Game) -> Scores:
    """Probability in the maximum-entropy zero-sum equilibrium of the competitive part (A - B)/2: linear
    programming for the value, then the most spread-out optimal mixture (unique; alike contestants share weight)."""
    return game.equilibrium.row, game.equilibrium.col


@register_ranking("nash_avg", "Nash average")
def nash_average(game: Game) -> Scores:
    """Payoff in the competitive game against the other side's equilibrium mixture (Balduzzi et al. 2018)."""
    c, eq = game.competitive, game.equilibrium
    return c @ eq.col, -(c.T @ eq.row)


@register_ranking("regret", "regret vs equilibrium", better="lower", bounds=(0.0, float("inf")))
def regret(game: Game) -> Scores:
    """How much less the contestant earns, in its own payoff, against the other side's equilibrium mixture than
    the best of its side does (0 for a best response; in a zero-sum game, 0 on the equilibrium's support)."""
    eq = game.equilibrium
    a, d = game.attacker @ eq.col, eq.row @ game.defender
    return a.max() - a, d.max() - d


@register_ranking("alpharank", "alpha-Rank mass", bounds=(0.0, 1.0), mass=True)
def alpharank_mass(game: Game) -> Scores:
    """Marginal in the two-population alpha-Rank stationary distribution (Omidshafiei et al. 2019), on each
    side's payoffs scaled to range 1."""
    return game.alpharank


def exploitability(game: Game) -> float:
    """NashConv of the reported equilibrium in the league's own (general-sum) game: what the best deviation gains
    each side against the other's equilibrium mixture, summed. 0 for an exact equilibrium of a zero-sum game; more
    says the competitive part's equilibrium is not one of the game as played."""
    eq = game.equilibrium
    a, d = game.attacker @ eq.col, eq.row @ game.defender
    return max(0.0, float(a.max() - eq.row @ a + d.max() - d @ eq.col))   # >= 0 up to rounding


def alpha_sweep(game: Game, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """alpha-Rank masses ``[alpha, contestant]`` of each side as the selection intensity grows (OpenSpiel's
    ``alpharank.sweep_pi_vs_alpha``), on payoffs scaled to range 1; NaN where the chain is reducible."""
    a, d = rk.scaled(game.attacker), rk.scaled(game.defender)
    out_a, out_d = np.full((len(alphas), a.shape[0]), np.nan), np.full((len(alphas), a.shape[1]), np.nan)
    for k, alpha in enumerate(alphas):
        try:
            out_a[k], out_d[k], _ = rk.alpharank(a, d, float(alpha), game.population)
        except ValueError:
            continue
    return out_a, out_d


def default_alphas() -> np.ndarray:
    return np.logspace(-2, 3, 21)


__all__ = ["RANKINGS", "Game", "RankingMethod", "alpha_sweep", "default_alphas", "exploitability", "register_ranking",
           "scores"]
