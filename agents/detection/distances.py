"""Exact distance kernels and BLAS thread pinning, shared by the detectors and the attacker's query filter.

Range counts (:func:`count_within`) and nearest distances (:func:`min_dists`) use one BLAS product and recheck the
pairs within rounding error of a decision by direct differences, so their answers equal brute force bit for bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from extractgym.victims.training import SMALL_MODEL_THREADS

_BLAS: list[Any] | None = None


@contextmanager
def blas_threads(n: int = SMALL_MODEL_THREADS) -> Iterator[None]:
    """Run a block with numpy's BLAS on ``n`` threads (``EXTRACTGYM_TORCH_THREADS``, default 1), then restore.

    The detectors' distance products are small (a batch against a history): as with the library's torch models
    (:func:`extractgym.victims.training.torch_threads`), a second BLAS thread costs more in synchronisation than
    it gains, dramatically so when other processes keep the cores busy (measured on 2 busy cores: a 64 x 1198
    product took 32 ms with OpenBLAS' 2 threads vs 0.2 ms with 1, which made ``ood`` at batch 64 60x slower
    than at batch 1 per query). torch's setting does not reach numpy's BLAS, hence this (~4 µs a call).
    """
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = list(ThreadpoolController().select(user_api="blas").lib_controllers)
    if n <= 0:
        yield
        return
    old = [lib.get_num_threads() for lib in _BLAS]
    for lib, k in zip(_BLAS, old, strict=True):
        if k != n:
            lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, k in zip(_BLAS, old, strict=True):
            if k != n:
                lib.set_num_threads(k)


# -- exact distances ------------------------------------------------------------------------------
# The expansion |a|^2 + |b|^2 - 2 a.b computes squared distances with one BLAS call, but rounds them by up
# to a few ``dim * eps * (|a|^2 + |b|^2)``. ``_ERR`` bounds that error with a margin of seven orders of
# magnitude (any dim below 10^6), per row of ``a`` against the largest row norm of ``b``: every pair whose
# expanded value lies within the bound of a decision (the radius, the row minimum) is recomputed by direct
# differences, exactly as :func:`pair_dists` computes it, so the answers equal brute force bit for bit.
_ERR_REL, _ERR_ABS = 1e-9, 1e-12


def pair_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact L2 distances between rows of ``a`` and ``b`` by direct differences (the brute-force definition)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    out = np.empty((len(a), len(b)))
    step = max(1, 2_000_000 // max(1, len(b) * a.shape[1]))
    for s in range(0, len(a), step):
        out[s:s + step] = np.sqrt(((a[s:s + step, None, :] - b[None, :, :]) ** 2).sum(-1))
    return out


def _exact(a: np.ndarray, b: np.ndarray, ii: np.ndarray, jj: np.ndarray) -> np.ndarray:
    """Exact distances of the pairs ``(a[ii], b[jj])``, computed as :func:`pair_dists` does."""
    return np.sqrt(((a[ii] - b[jj]) ** 2).sum(-1))


def _approx_sq(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The BLAS expansion of squared distances, less the query norms: ``(m, na, err)`` with
    ``|a_i - b_j|^2 ~ m[i, j] + na[i]`` up to ``err[i]`` (``b_sq``: cached norms of ``b``).

    Decisions compare ``m`` with per-row thresholds shifted by ``na``, so the ``len(a) x len(b)`` matrix is
    written by the product and one in-place pass, and read once or twice: this is the whole per-query cost of the
    range and nearest-distance searches, and its memory traffic is what limits them.
    """
    na = (a * a).sum(1)
    nb = (b * b).sum(1) if b_sq is None else b_sq
    m = (-2.0 * a) @ b.T
    m += nb
    err = _ERR_REL * (na + (nb.max() if len(nb) else 0.0)) + _ERR_ABS
    return m, na, err


def fast_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """L2 distances by one matrix product (rounding error ~1e-9 relative): for scores that need no exactness."""
    m, na, _ = _approx_sq(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    m += na[:, None]
    return np.sqrt(np.clip(m, 0.0, None, out=m), out=m)


def count_within(a: np.ndarray, b: np.ndarray, radius: float, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``a``: how many rows of ``b`` lie at L2 distance ``< radius``.

    One matrix product for all pairs; only pairs within rounding error of the radius are recomputed by
    direct differences, so the counts equal brute force (:func:`pair_dists` ``< radius``) exactly.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(a), dtype=np.int64)
    m, na, err = _approx_sq(a, b, b_sq)
    r2 = radius * radius
    lo, hi = (r2 - err - na)[:, None], (r2 + err - na)[:, None]
    counts = np.count_nonzero(m < lo, axis=1).astype(np.int64)  # surely within
    unsure_rows = np.flatnonzero(np.count_nonzero(m <= hi, axis=1) > counts)  # rows with pairs near the radius
    for i in unsure_rows:
        jj = np.flatnonzero((m[i] >= lo[i]) & (m[i] <= hi[i]))
        counts[i] += int(np.count_nonzero(_exact(a, b, np.full(len(jj), i), jj) < radius))
    return counts


def count_within_prefix(a: np.ndarray, b: np.ndarray, radius: float, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row ``i`` of ``a``: how many rows of ``b``, and of ``a`` before ``i``, lie at L2 distance ``< radius``
    (a batch of queries against an account's history and against the batch's earlier queries). One matrix
    product for all of it, exact as :func:`count_within`: it equals ``count_within(a, b, radius)`` plus the count
    of ``pair_dists(a, a) < radius`` below the diagonal."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    n, nb = len(a), len(b)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    both = np.concatenate([b, a])
    sq = (a * a).sum(1)
    m, na, err = _approx_sq(a, both, np.concatenate([(b * b).sum(1) if b_sq is None else b_sq, sq]))
    m[:, nb:][np.triu_indices(n)] = np.inf  # a row of the batch only meets the earlier ones (and not itself)
    r2 = radius * radius
    lo, hi = (r2 - err - na)[:, None], (r2 + err - na)[:, None]
    counts = np.count_nonzero(m < lo, axis=1).astype(np.int64)
    unsure_rows = np.flatnonzero(np.count_nonzero(m <= hi, axis=1) > counts)
    for i in unsure_rows:
        jj = np.flatnonzero((m[i] >= lo[i]) & (m[i] <= hi[i]))
        counts[i] += int(np.count_nonzero(_exact(a, both, np.full(len(jj), i), jj) < radius))
    return counts


def min_dists(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray | None = None) -> np.ndarray:
    """Per row of ``a``: the exact minimum L2 distance to the rows of ``b`` (``inf`` if ``b`` is empty).

    The BLAS expansion picks the candidates; every candidate within rounding error of the row's minimum is
    recomputed by direct differences, so the result equals ``pair_dists(a, b).min(1)``.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(b) == 0:
        return np.full(len(a), np.inf)
    if len(a) == 0:
        return np.empty(0)
    m, _, err = _approx_sq(a, b, b_sq)
    # the true minimum's square is at most min(d2) + err; a pair can reach it only if d2 - err <= that
    cut = (m.min(1) + 2.0 * err)[:, None]
    ii, jj = np.nonzero(m <= cut)
    out = np.full(len(a), np.inf)
    np.minimum.at(out, ii, _exact(a, b, ii, jj))
    return out


def flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(len(x), -1)
