"""Rankings on golden games: equilibria, Nash averaging and alpha-Rank against known and published values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from extractgym.league import rankings as rk

RPS = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
UNIFORM = np.full(3, 1 / 3)


# -- rock-paper-scissors: every method is uniform ------------------------------------------------
def test_rock_paper_scissors_nash_is_uniform():
    eq = rk.zero_sum_nash(RPS)
    np.testing.assert_allclose(eq.row, UNIFORM, atol=1e-9)
    np.testing.assert_allclose(eq.col, UNIFORM, atol=1e-9)
    assert eq.value == pytest.approx(0.0, abs=1e-12)
    ent = rk.max_entropy_nash(RPS)
    np.testing.assert_allclose(ent.row, UNIFORM, atol=1e-9)
    np.testing.assert_allclose(ent.col, UNIFORM, atol=1e-9)


def test_rock_paper_scissors_alpharank_and_nash_averaging_are_uniform():
    rows, cols, joint = rk.alpharank(RPS, -RPS, alpha=10.0, m=50)
    np.testing.assert_allclose(rows, UNIFORM, atol=1e-9)
    np.testing.assert_allclose(cols, UNIFORM, atol=1e-9)
    np.testing.assert_allclose(joint, np.full((3, 3), 1 / 9), atol=1e-9)
    np.testing.assert_allclose(rk.alpharank_single(RPS, alpha=1.0, m=20), UNIFORM, atol=1e-9)
    skill_rows, skill_cols, _ = rk.nash_averaging(RPS)
    np.testing.assert_allclose(skill_rows, 0.0, atol=1e-9)
    np.testing.assert_allclose(skill_cols, 0.0, atol=1e-9)


# -- a strictly dominated contestant gets weight 0 -----------------------------------------------
DOMINATED = np.vstack([RPS, RPS.min(axis=0) - 0.5])           # a fourth row worse than every other, everywhere


def test_strictly_dominated_row_gets_zero_weight():
    for eq in (rk.zero_sum_nash(DOMINATED), rk.max_entropy_nash(DOMINATED)):
        assert eq.row[3] == pytest.approx(0.0, abs=1e-9)
        np.testing.assert_allclose(eq.row[:3], UNIFORM, atol=1e-7)
    skill_rows, _, _ = rk.nash_averaging(DOMINATED)
    assert skill_rows[3] < skill_rows[:3].min() - 0.4
    rows, cols, _ = rk.alpharank(DOMINATED, -DOMINATED, alpha=10.0, m=50)
    assert rows[3] < 1e-6
    np.testing.assert_allclose(rows[:3], rows[0], rtol=1e-6)


def test_strictly_dominated_column_gets_zero_weight():
    game = np.hstack([RPS, RPS.max(axis=1, keepdims=True) + 0.5])   # a column that concedes most to every row
    eq = rk.max_entropy_nash(game)
    assert eq.col[3] == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(eq.col[:3], UNIFORM, atol=1e-7)
    _, cols, _ = rk.alpharank(game, -game, alpha=10.0, m=50)
    assert cols[3] < 1e-6


def test_dominant_pure_strategy_takes_all_weight():
    game = np.array([[1.0, 2.0], [0.5, 0.0]])                  # row 0 dominates; the column player then picks 0
    eq = rk.zero_sum_nash(game)
    np.testing.assert_allclose(eq.row, [1, 0], atol=1e-9)
    np.testing.assert_allclose(eq.col, [1, 0], atol=1e-9)
    assert eq.value == pytest.approx(1.0)


# -- a 2x2 game with a known mixed equilibrium ---------------------------------------------------
def test_two_by_two_mixed_equilibrium_to_1e6():
    # row indifference: 3p - 2(1-p) = -p + (1-p) -> p = 3/7; column: 3q - (1-q) = -2q + (1-q) -> q = 2/7; v = 1/7
    game = np.array([[3.0, -1.0], [-2.0, 1.0]])
    for eq in (rk.zero_sum_nash(game), rk.max_entropy_nash(game)):
        np.testing.assert_allclose(eq.row, [3 / 7, 4 / 7], atol=1e-6)
        np.testing.assert_allclose(eq.col, [2 / 7, 5 / 7], atol=1e-6)
        assert eq.value == pytest.approx(1 / 7, abs=1e-6)


def test_max_entropy_picks_the_spread_out_equilibrium():
    # columns 1 and 2 are copies: every split between them is optimal; the max-entropy one splits evenly
    game = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    eq = rk.max_entropy_nash(game)
    np.testing.assert_allclose(eq.row, [0.5, 0.5], atol=1e-6)
    np.testing.assert_allclose(eq.col, [0.5, 0.25, 0.25], atol=1e-6)


def test_nash_averaging_is_invariant_to_copies():
    # Balduzzi et al. 2018: adding a copy of a contestant changes nobody's Nash-averaged skill
    game = np.array([[0.2, 0.7, 0.4], [0.6, 0.1, 0.5], [0.3, 0.3, 0.3]])
    rows, cols, _ = rk.nash_averaging(game)
    rows2, cols2, _ = rk.nash_averaging(np.vstack([game, game[1]]))
    np.testing.assert_allclose(rows2[:3], rows, atol=1e-6)
    assert rows2[3] == pytest.approx(rows[1], abs=1e-6)
    np.testing.assert_allclose(cols2, cols, atol=1e-6)


# -- alpha-Rank against published values ---------------------------------------------------------
def test_alpharank_single_population_han_et_al_2013():
    """The stationary distribution of Han et al. 2013's commitment game, m=20, alpha=0.1, as published in
    OpenSpiel's ``open_spiel/python/egt/alpharank_test.py`` (``test_stationary_distribution``)."""
    r, t, p, s, delta, eps = 1.0, 2.0, 0.0, -1.0, 4.0, 0.25
    game = np.array([[r - eps / 2, r - eps, 0, s + delta - eps, r - eps], [r, r, s, s, s], [0, t, p, p, p],
                     [t - delta, t, p, p, p], [r, t, p, p, p]])
    expected = [0.40966787, 0.07959841, 0.20506998, 0.08505983, 0.2206039]
    np.testing.assert_allclose(rk.alpharank_single(game, alpha=0.1, m=20), expected, atol=1e-4)


@pytest.mark.parametrize("name, a, b, alpha, m, expected", [
    # Battle of the Sexes, the asymmetric example of Omidshafiei et al. 2019 (two populations)
    ("battle-of-the-sexes", [[3.0, 0.0], [0.0, 2.0]], [[2.0, 0.0], [0.0, 3.0]], 0.1, 50,
     [0.499986034284341, 2.7725025293608465e-05, 2.0645670371116192e-07, 0.49998603423366167]),
    ("general-sum-3x2", [[1.0, 0.2], [0.4, 0.9], [0.7, 0.5]], [[0.1, 0.8], [0.6, 0.3], [0.2, 0.4]], 5.0, 20,
     [0.2002812286563913, 0.11120187925759034, 0.14089649720728858, 0.31323125240080246, 0.07768558236977682,
      0.1567035601081505]),
    ("biased-rps-zero-sum", [[0, -0.5, 1], [0.5, 0, -0.1], [-1, 0.1, 0.0]],
     [[0, 0.5, -1], [-0.5, 0, 0.1], [1, -0.1, 0.0]], 2.0, 50,
     [0.09371324578523563, 0.09342142497353667, 0.0685098722625585, 0.0934214249735364, 0.32577004015512684,
      0.11615157737907028, 0.06850987226255857, 0.11615157737907036, 0.024350964829306716]),
])
def test_alpharank_two_populations_matches_openspiel(name, a, b, alpha, m, expected):
    """Joint stationary distributions (profiles row-major) computed by OpenSpiel 2.0.2's
    ``alpharank.compute([A, B], m=m, alpha=alpha)`` (the reference implementation of Omidshafiei et al. 2019)."""
    rows, cols, joint = rk.alpharank(np.array(a), np.array(b), alpha=alpha, m=m)
    np.testing.assert_allclose(joint.ravel(), expected, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(rows, joint.sum(axis=1))
    np.testing.assert_allclose(cols, joint.sum(axis=0))


def test_alpharank_auto_lowers_alpha_until_the_chain_is_irreducible():
    # two strict pure equilibria: at a huge alpha both absorb, the stationary distribution is not unique
    a, b = np.array([[3.0, 0.0], [0.0, 2.0]]), np.array([[2.0, 0.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match="stationary"):
        rk.alpharank(a, b, alpha=1e4, m=50)
    rows, cols, used = rk.alpharank_auto(a, b, alpha=1e4, m=50)
    assert used < 1e4
    assert rows.sum() == pytest.approx(1.0) and cols.sum() == pytest.approx(1.0)


def test_fixation_probability_is_stable_and_monotone():
    u = np.array([-1e4, -50.0, -1.0, 0.0, 1e-16, 1.0, 50.0, 1e4])
    rho = rk.fixation(u, 50)
    assert np.all(np.isfinite(rho)) and np.all(rho >= 0) and np.all(rho <= 1)
    assert np.all(np.diff(rho) >= -1e-15)
    assert rho[3] == pytest.approx(1 / 50) and rho[4] == pytest.approx(1 / 50)
    assert rho[-1] == pytest.approx(1.0)
    assert rk.fixation(np.array([0.3]), 20)[0] == pytest.approx((1 - np.exp(-0.3)) / (1 - np.exp(-6.0)))


# -- properties of equilibria on random games ----------------------------------------------------
games = arrays(np.float64, st.tuples(st.integers(1, 5), st.integers(1, 5)),
               elements=st.floats(-1, 1, allow_nan=False, allow_infinity=False))


@settings(max_examples=60, deadline=None)
@given(games)
def test_equilibria_guarantee_the_value(game):
    for eq in (rk.zero_sum_nash(game), rk.max_entropy_nash(game)):
        assert eq.row.sum() == pytest.approx(1.0) and eq.col.sum() == pytest.approx(1.0)
        assert np.all(eq.row >= 0) and np.all(eq.col >= 0)
        assert np.all(eq.row @ game >= eq.value - 1e-6)          # no column does better against the rows' mix
        assert np.all(game @ eq.col <= eq.value + 1e-6)          # no row does better against the columns' mix


@settings(max_examples=30, deadline=None)
@given(games)
def test_alpharank_is_a_distribution(game):
    rows, cols, _ = rk.alpharank_auto(game, -game, alpha=10.0, m=20)
    assert rows.sum() == pytest.approx(1.0) and cols.sum() == pytest.approx(1.0)
    assert np.all(rows >= 0) and np.all(cols >= 0)


# -- intervals and ranks -------------------------------------------------------------------------
def test_ranks_follow_scores_and_share_a_rank_only_where_tests_cannot_tell():
    score = np.array([0.8, 0.75, 0.2, 0.1])
    untestable = np.ones((4, 4))
    np.testing.assert_array_equal(rk.ranks_by_score(score, untestable), [1, 1, 1, 1])
    decisive = np.zeros((4, 4))
    np.testing.assert_array_equal(rk.ranks_by_score(score, decisive), [1, 2, 3, 4])
    p = np.zeros((4, 4))
    p[0, 1] = p[1, 0] = p[2, 3] = p[3, 2] = 0.5
    np.testing.assert_array_equal(rk.ranks_by_score(score, p), [1, 1, 3, 3])


def test_t_interval_contains_the_mean_and_narrows_with_replicates():
    rng = np.random.default_rng(0)
    values = rng.normal(0.5, 0.1, size=(3, 4, 40))
    mean, lo, hi = rk.t_interval(values)
    assert np.all(lo <= mean) and np.all(mean <= hi)
    _, lo5, hi5 = rk.t_interval(values[..., :5])
    assert np.mean(hi - lo) < np.mean(hi5 - lo5)
    same, same_lo, same_hi = rk.t_interval(values[..., :1])
    np.testing.assert_array_equal(same, same_lo)
    np.testing.assert_array_equal(same, same_hi)


def test_competitive_part_is_the_game_itself_when_zero_sum():
    a = np.array([[0.3, -0.2], [0.1, 0.4]])
    np.testing.assert_allclose(rk.competitive_part(a, -a), a)
    np.testing.assert_allclose(rk.competitive_part(a, a), 0.0)


def test_holes_in_a_game_are_refused():
    with pytest.raises(ValueError, match="finite"):
        rk.zero_sum_nash(np.array([[0.0, np.nan]]))
