"""Iterative eigensolvers for symmetric operators given as matvecs: plain Lanczos, ARPACK
fallback, Hotelling deflation; reproducible start vectors and one residual tolerance.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as sla
from scipy.linalg import eigh_tridiagonal

from sparsetopo.seeding import rng as make_rng

SOLVER_RTOL = 1e-8  # residual bound of every iterative eigenvalue, relative to the value
_LANCZOS_MAXITER = 5000  # plain Lanczos steps before falling back to ARPACK
_TINY_DIMENSION = 8  # operators this small are solved densely even by the sparse path
_SEED = 0  # start vectors come from seeding.rng(_SEED, "spectral", purpose): reproducible


# -- iterative eigensolvers --------------------------------------------------------------------
class _NoConvergence(Exception):
    """Plain Lanczos hit its iteration cap; the caller falls back to ARPACK."""


def _lanczos_top(matvec, start: np.ndarray, norm_bound: float,
                 rtol: float = SOLVER_RTOL, maxiter: int | None = None) -> float:
    """Largest eigenvalue of a symmetric operator by plain Lanczos.

    Three-term recurrence, no reorthogonalisation, no restarts: O(dim) memory, and a Krylov
    space that is never truncated, which matters at the clustered edge of an expander's
    spectrum where restarted ARPACK needs several times more products (2800 against 600 for
    the second singular value of a 500,000 x 500,000 random 8-regular layer). Loss of
    orthogonality only makes copies ("ghosts") of converged Ritz values, which cannot change
    the largest one. Stops when the Ritz residual ``beta_j |s_j|`` (Paige) is at most ``rtol``
    times the Ritz value, which bounds the eigenvalue's error by the same amount.
    ``norm_bound`` (an upper bound of the operator's norm) sets the absolute rounding floor of
    that test, so that an eigenvalue 0 converges too.
    """
    maxiter = _LANCZOS_MAXITER if maxiter is None else maxiter
    q = start / np.linalg.norm(start)
    q_prev = np.zeros_like(q)
    alphas, betas = [], []
    beta, next_check = 0.0, 10
    atol = 1e-13 * norm_bound  # rounding floor of a residual: an eigenvalue 0 still converges
    for j in range(maxiter):
        w = matvec(q)
        alpha = float(q @ w)
        w -= alpha * q
        w -= beta * q_prev
        beta = float(np.linalg.norm(w))
        alphas.append(alpha)
        betas.append(beta)
        invariant = beta <= atol  # the Krylov space is invariant: its Ritz values are exact
        if invariant or j + 1 >= next_check:
            theta, s = eigh_tridiagonal(np.array(alphas), np.array(betas[:-1]),
                                        select="i", select_range=(j, j))
            if invariant or beta * abs(s[-1, 0]) <= rtol * abs(theta[0]) + atol:
                return float(theta[0])
            next_check = j + 1 + max(10, min(50, (j + 1) // 50))  # every ~2% of the steps so far
        q_prev, q = q, w / beta
    raise _NoConvergence(f"Lanczos did not converge in {j + 1} steps")


def _start(dim: int, *purpose) -> np.ndarray:
    return make_rng(_SEED, "spectral", *purpose).standard_normal(dim)


def _operator(matvec, dim: int) -> sla.LinearOperator:
    return sla.LinearOperator((dim, dim), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def _top_pair_arpack(matvec, dim: int, start: np.ndarray):
    """Largest eigenvalue and unit eigenvector (ARPACK, tight tolerance: used for deflation)."""
    values, vectors = sla.eigsh(_operator(matvec, dim), k=1, which="LA", v0=start,
                                tol=1e-13, maxiter=100 * dim)
    return float(values[0]), vectors[:, 0]


def _hotelling(matvec, vectors: np.ndarray, shift: float):
    """``x -> M x - shift V V^T x``: Hotelling deflation of the orthonormal columns of ``V``.

    With ``shift`` at least twice the operator's norm their eigenvalues drop below the rest of
    the spectrum, where neither ARPACK nor plain Lanczos can bring them back as the largest
    (projecting them out instead does not survive rounding in plain Lanczos). An error ``e`` in
    ``V`` moves the other eigenvalues only by O(shift |e|^2).
    """
    def deflated(x):
        return matvec(x) - shift * (vectors @ (vectors.T @ x))

    return deflated


def _top_value(matvec, dim: int, start: np.ndarray, norm_bound: float) -> float:
    """The largest eigenvalue: plain Lanczos, ARPACK if that does not converge."""
    try:
        return _lanczos_top(matvec, start, norm_bound)
    except _NoConvergence:
        values = sla.eigsh(_operator(matvec, dim), k=1, which="LA", v0=start,
                           tol=SOLVER_RTOL, return_eigenvectors=False)
        return float(values[0])


def _largest(matvec, dim: int, count: int, purpose: str, norm_bound: float,
             deflate: np.ndarray | None = None, top_pair=None) -> list[float]:
    """The ``count`` (1 or 2) largest eigenvalues, largest first, of a symmetric operator.

    ``deflate`` (orthonormal columns, exact eigenvectors) is removed by a Hotelling shift.
    ``top_pair`` = (value, unit vector), when the top eigenpair is known exactly, saves a solve
    on large operators. The second largest is the largest once the top eigenvector is deflated,
    so that a repeated top eigenvalue is counted twice (as ``eigvalsh`` does).
    """
    shift = 2.0 * norm_bound  # moves a deflated eigenvalue below the whole spectrum
    if deflate is not None:
        matvec = _hotelling(matvec, deflate, shift)
    start = _start(dim, purpose)
    if dim <= _TINY_DIMENSION:
        dense = np.column_stack([matvec(e) for e in np.eye(dim)])
        return list(np.linalg.eigvalsh((dense + dense.T) / 2)[::-1][:count])
    if count == 1:
        return [_top_value(matvec, dim, start, norm_bound)]
    # the second largest counts multiplicity: single-vector Krylov methods see one copy of a
    # repeated eigenvalue, so the top eigenvector is deflated rather than asking for k=2
    top, vector = top_pair if top_pair is not None else _top_pair_arpack(matvec, dim, start)
    second = _top_value(_hotelling(matvec, vector[:, None], shift), dim, _start(dim, purpose, 2), norm_bound)
    return [top, second]
