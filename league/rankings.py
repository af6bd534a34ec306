"""Rankings from payoff matrices: pure functions of numpy arrays (no league, no I/O).

* :func:`zero_sum_nash`: an equilibrium of a two-player zero-sum matrix game by linear programming (HiGHS).
* :func:`max_entropy_nash`: the maximum-entropy equilibrium (unique; Balduzzi et al. 2018, "Re-evaluating
  evaluation", NeurIPS, https://arxiv.org/abs/1806.02643).
* :func:`nash_averaging`: Balduzzi et al.'s agent-vs-task Nash averaging on an attackers x defenders matrix:
  each contestant's payoff against the other side's maximum-entropy equilibrium mixture.
* :func:`alpharank`: two-population alpha-Rank (Omidshafiei et al. 2019, "alpha-Rank: Multi-agent evaluation by
  evolution", Sci. Rep. 9, https://arxiv.org/abs/1903.01373); :func:`alpharank_single` the single-population
  (symmetric game) version. Written after OpenSpiel's ``open_spiel/python/egt/alpharank.py``
  (``compute(payoff_tables, m, alpha)``), whose transition model it follows.
* :func:`competitive_part`: the zero-sum component ``(A - B) / 2`` of a general-sum bimatrix game (Kalai and
  Kalai 2013, "Cooperation in strategic games revisited", QJE), on which the zero-sum rankings are computed;
  it is ``A`` itself when ``B = -A``.
* :func:`ranks_with_ties`: rank = 1 + the number of contestants better with confidence (their interval lies
  wholly above), so contestants whose intervals overlap can share a rank.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy.optimize import linprog, minimize


@dataclass(frozen=True)
class Equilibrium:
    """Mixed strategies of the row (maximiser) and column (minimiser) players and the game's value."""

    row: np.ndarray
    col: np.ndarray
    value: float


def _as_matrix(payoffs: np.ndarray) -> np.ndarray:
    m = np.asarray(payoffs, dtype=float)
    if m.ndim != 2 or 0 in m.shape:
        raise ValueError(f"a payoff matrix must be 2-D and non-empty, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("a payoff matrix must be finite (a missing cell leaves a hole in the game)")
    return m


def _maximin(m: np.ndarray) -> tuple[np.ndarray, float]:
    """The row player's optimal mixture of ``max_p min_j (p^T m)_j`` and the value."""
    n_rows, n_cols = m.shape
    c = np.zeros(n_rows + 1)
    c[-1] = -1.0                                            # maximise v
    a_ub = np.hstack([-m.T, np.ones((n_cols, 1))])          # v - (p^T m)_j <= 0 for every column j
    a_eq = np.hstack([np.ones((1, n_rows)), np.zeros((1, 1))])
    bounds = [(0, None)] * n_rows + [(None, None)]
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(n_cols), A_eq=a_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:
        raise ValueError(f"linear program failed: {res.message}")
    p = np.clip(res.x[:n_rows], 0.0, None)
    return p / p.sum(), float(res.x[-1])


def zero_sum_nash(payoffs: np.ndarray) -> Equilibrium:
    """An equilibrium of the zero-sum game where the row player receives ``payoffs`` and the column player pays it.

    Two linear programs (one per player); the value is the row player's.
    """
    m = _as_matrix(payoffs)
    p, v = _maximin(m)
    q, _ = _maximin(-m.T)
    return Equilibrium(p, q, v)


def _max_entropy_side(m: np.ndarray, value: float, start: np.ndarray, other: np.ndarray, tol: float) -> np.ndarray:
    """Maximum-entropy mixture of the row player among those that guarantee ``value`` (within ``tol``);
    ``start`` is an optimal row mixture, ``other`` an optimal column mixture."""
    n = m.shape[0]
    if n == 1:
        return np.ones(1)
    # strategies that are in no equilibrium support keep weight 0. By complementary slackness a row that does
    # worse than the value against an optimal column mixture is in none; each remaining row outside ``start``'s
    # support is checked by maximising its weight over the optimal mixtures (an LP).
    support = np.zeros(n, dtype=bool)
    against = m @ other
    a_ub = -m.T
    b_ub = -(value - tol) * np.ones(m.shape[1])
    for i in range(n):
        if start[i] > tol:
            support[i] = True
            continue
        if against[i] < value - tol:
            continue
        c = np.zeros(n)
        c[i] = -1.0
        res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=np.ones((1, n)), b_eq=[1.0], bounds=[(0, None)] * n,
                      method="highs")
        support[i] = res.status == 0 and -res.fun > 10 * tol
    idx = np.flatnonzero(support)
    sub = m[idx]
    x0 = np.full(len(idx), 1.0 / len(idx))
    x0 = 0.5 * x0 + 0.5 * start[idx] / max(start[idx].sum(), 1e-300)

    def neg_entropy(x: np.ndarray) -> tuple[float, np.ndarray]:
        x = np.clip(x, 1e-300, None)
        return float(np.sum(x * np.log(x))), np.log(x) + 1.0

    cons = [{"type": "eq", "fun": lambda x: np.sum(x) - 1.0, "jac": lambda x: np.ones_like(x)},
            {"type": "ineq", "fun": lambda x: sub.T @ x - (value - tol), "jac": lambda x: sub.T}]
    res = minimize(neg_entropy, x0, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * len(idx), constraints=cons,
                   options={"ftol": 1e-14, "maxiter": 500})
    x = np.clip(res.x if res.success else start[idx], 0.0, None)
    out = np.zeros(n)
    out[idx] = x / x.sum()
    return out


def max_entropy_nash(payoffs: np.ndarray, tol: float = 1e-9) -> Equilibrium:
    """The maximum-entropy equilibrium of the zero-sum game (each player's mixture of maximum entropy among its
    optimal ones; the set of optimal mixtures is a polytope, so it is unique). ``tol`` is relative to the
    payoffs' range."""
    m = _as_matrix(payoffs)
    eq = zero_sum_nash(m)
    scale = max(float(np.ptp(m)), 1e-12)
    p = _max_entropy_side(m, eq.value, eq.row, eq.col, tol * scale)
    q = _max_entropy_side(-m.T, -eq.value, eq.col, eq.row, tol * scale)
    return Equilibrium(p, q, eq.value)


def nash_averaging(payoffs: np.ndarray) -> tuple[np.ndarray, np.ndarray, Equilibrium]:
    """Agent-vs-task Nash averaging (Balduzzi et al. 2018, Appendix D) of a zero-sum matrix.

    Returns the row players' skills ``payoffs @ q*`` (each row's payoff against the columns' max-entropy
    equilibrium mixture), the column players' skills ``-(payoffs.T @ p*)`` (each column's own payoff, i.e. minus
    what it concedes, against the rows' mixture) and the equilibrium. Rows in the support score the value;
    others less. Adding copies of a contestant changes nobody's skill (the paper's invariance).
    """
    m = _as_matrix(payoffs)
    eq = max_entropy_nash(m)
    return m @ eq.col, -(m.T @ eq.row), eq


def competitive_part(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The zero-sum component ``(A - B) / 2`` of the bimatrix game (row payoffs ``A``, column payoffs ``B``)."""
    return (np.asarray(a, dtype=float) - np.asarray(b, dtype=float)) / 2.0


# -- alpha-Rank ----------------------------------------------------------------------------------
def fixation(u: np.ndarray, m: int) -> np.ndarray:
    """Fixation probability of a mutant with fitness advantage ``u = alpha * (f_mutant - f_resident)`` in a
    monomorphic population of ``m`` (Fermi selection): ``(1 - e^-u) / (1 - e^-mu)``, ``1/m`` at ``u = 0``.
    Computed without overflow for any ``u``."""
    u = np.asarray(u, dtype=float)
    out = np.full(u.shape, 1.0 / m)
    pos, neg = u > 1e-14, u < -1e-14
    out[pos] = np.expm1(-u[pos]) / np.expm1(-m * u[pos])
    w = -u[neg]                                  # (e^w - 1) / (e^mw - 1), in logs: log expm1(x) = x + log1p(-e^-x)
    out[neg] = np.exp(w + np.log1p(-np.exp(-w)) - m * w - np.log1p(-np.exp(-m * w)))
    return out


def stationary_distribution(c: np.ndarray) -> np.ndarray:
    """The stationary distribution of the row-stochastic matrix ``c``; ``ValueError`` unless it is unique."""
    vals, vecs = scipy.linalg.eig(c.T)
    mask = np.abs(vals - 1.0) < 1e-10
    if mask.sum() != 1:
        raise ValueError(f"expected one stationary distribution, found {int(mask.sum())} (the chain is reducible "
                         f"at this selection intensity; lower alpha)")
    pi = np.real(vecs[:, mask]).ravel()
    pi = pi / pi.sum()
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def alpharank(payoff_a: np.ndarray, payoff_b: np.ndarray, alpha: float = 100.0,
              m: int = 50) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two-population alpha-Rank of the game where the row population earns ``payoff_a`` and the column
    population ``payoff_b`` (both rows x columns).

    The Markov chain runs over pure profiles ``(i, j)``; a mutant of one population appears uniformly
    (``eta = 1 / ((n_rows - 1) + (n_cols - 1))``) and fixes with :func:`fixation` of its own payoff gain.

    Returns:
        ``(pi_rows, pi_cols, pi)``: each population's marginal mass and the joint stationary distribution
        (``pi[i, j]``, rows-major like OpenSpiel's profile ids).
    """
    a, b = _as_matrix(payoff_a), _as_matrix(payoff_b)
    if a.shape != b.shape:
        raise ValueError(f"payoff tables differ in shape: {a.shape} vs {b.shape}")
    n_rows, n_cols = a.shape
    if n_rows * n_cols == 1:
        return np.ones(1), np.ones(1), np.ones((1, 1))
    eta = 1.0 / ((n_rows - 1) + (n_cols - 1))
    size = n_rows * n_cols
    c = np.zeros((size, size))
    ids = np.arange(size).reshape(n_rows, n_cols)
    for i in range(n_rows):
        for j in range(n_cols):
            s = ids[i, j]
            others = np.arange(n_rows) != i                            # row population deviates to i'
            c[s, ids[others, j]] = eta * fixation(alpha * (a[others, j] - a[i, j]), m)
            others = np.arange(n_cols) != j                            # column population deviates to j'
            c[s, ids[i, others]] = eta * fixation(alpha * (b[i, others] - b[i, j]), m)
            c[s, s] = 1.0 - c[s].sum()
    pi = stationary_distribution(c).reshape(n_rows, n_cols)
    return pi.sum(axis=1), pi.sum(axis=0), pi


def alpharank_single(payoffs: np.ndarray, alpha: float = 0.1, m: int = 50) -> np.ndarray:
    """Single-population alpha-Rank of a symmetric game (``payoffs[r, s]``: r's payoff against s), with the
    finite-population (Moran) fitness of OpenSpiel's ``use_local_selection_model=False``: a mutant r among
    ``k`` r-players in a population of ``m`` otherwise playing s earns ``((k-1) A[r,r] + (m-k) A[r,s]) / (m-1)``.
    """
    a = _as_matrix(payoffs)
    n = a.shape[0]
    if a.shape != (n, n):
        raise ValueError(f"a symmetric game needs a square matrix, got {a.shape}")
    if n == 1:
        return np.ones(1)
    k = np.arange(1, m)                                   # mutants r in the population, 1..m-1
    c = np.zeros((n, n))
    for s in range(n):
        for r in range(n):
            if r == s:
                continue
            f_r = ((k - 1) * a[r, r] + (m - k) * a[r, s]) / (m - 1)
            ks = m - k                                    # residents s
            f_s = ((ks - 1) * a[s, s] + (m - ks) * a[s, r]) / (m - 1)
            logs = np.concatenate([[0.0], np.cumsum(-alpha * (f_r - f_s))])
            top = logs.max()
            c[s, r] = np.exp(-(top + np.log(np.exp(logs - top).sum()))) / (n - 1)
        c[s, s] = 1.0 - c[s].sum()
    return stationary_distribution(c)


def scaled(table: np.ndarray) -> np.ndarray:
    """A payoff table divided by its range (so alpha means the same whatever the payoffs' units)."""
    t = np.asarray(table, dtype=float)
    span = float(np.ptp(t))
    return t / span if span > 0 else t


def alpharank_auto(payoff_a: np.ndarray, payoff_b: np.ndarray, alpha: float = 100.0, m: int = 50,
                   tries: int = 40) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`alpharank` on each table scaled to range 1, at ``alpha`` or, where the chain is numerically
    reducible there, the largest ``alpha / 2^k`` at which it is not (OpenSpiel's sweep does the same search
    upwards). Returns the two marginals and the alpha used."""
    a, b = scaled(payoff_a), scaled(payoff_b)
    for _ in range(tries):
        try:
            pa, pb, _ = alpharank(a, b, alpha, m)
            return pa, pb, alpha
        except ValueError:
            alpha /= 2.0
    raise ValueError("alpha-Rank: no selection intensity gave a unique stationary distribution")


# -- confidence and ties -------------------------------------------------------------------------
def percentile_interval(samples: np.ndarray, confidence: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The equal-tailed percentile interval of bootstrap ``samples`` along ``axis`` (NaN samples ignored)."""
    import warnings

    tail = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)    # an all-NaN entry (a failed pair) stays NaN
        lo = np.nanpercentile(samples, tail, axis=axis)
        hi = np.nanpercentile(samples, 100 - tail, axis=axis)
    return lo, hi


def bootstrap_means(values: np.ndarray, n: int, rng: np.random.Generator, confidence: float = 0.95
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over the last axis (replicates) and its percentile bootstrap interval, resampling replicates
    (the same resample for every entry: the replicates are paired by their common seeds)."""
    import warnings

    v = np.asarray(values, dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)        # all-NaN entries (failed pairs) stay NaN
        mean = np.nanmean(v, axis=-1)
        if n <= 0 or v.shape[-1] < 2:
            return mean, mean.copy(), mean.copy()
        idx = rng.integers(0, v.shape[-1], size=(n, v.shape[-1]))
        samples = np.stack([np.nanmean(v[..., i], axis=-1) for i in idx])
    lo, hi = percentile_interval(samples, confidence)
    return mean, lo, hi


def ranks_with_ties(lo: np.ndarray, hi: np.ndarray, tol: float = 0.0) -> np.ndarray:
    """1 + the number of others whose interval lies wholly above (``lo_j > hi_i + tol``); overlapping ones can tie.

    Without intervals (``lo == hi``) this is the usual competition ranking (equal scores share a rank; ``tol``
    absorbs rounding, e.g. 0.5000001 vs 0.4999999).
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return 1 + (lo[None, :] > hi[:, None] + tol).sum(axis=1)
