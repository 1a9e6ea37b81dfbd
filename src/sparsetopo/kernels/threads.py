"""How the parallel kernels share out their work: chunks per thread, and when to stay serial."""

from __future__ import annotations

from contextlib import contextmanager
from functools import cache

import numba

# Layers doing less work than this per step (connections x batch) run on the calling thread:
# waking the thread pool costs more than it saves for them.
PARALLEL_MIN_WORK = 64 * 1024


def n_chunks() -> int:
    """How many ranges each parallel kernel splits its rows into: one per numba thread."""
    return numba.get_num_threads()


def use_threads(nnz: int, batch: int) -> bool:
    """Whether a step of a layer with ``nnz`` connections on ``batch`` examples is worth the thread pool."""
    return nnz * batch >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1


@contextmanager
def member_threads(threads: int):
    """Run the population kernels on ``threads`` numba threads, each member on one of them,
    with the BLAS that numba's ``np.dot`` calls (SciPy's) kept on the calling thread.

    The dense kernels (:mod:`sparsetopo.kernels.dense`) call that BLAS from inside a ``prange``
    whose threads are already the parallelism; a BLAS thread pool under each would run more
    busy threads than there are cores. The previous numba thread count is restored after.
    """
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with _blas_libraries().limit(limits=1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)


@cache
def _blas_libraries():
    """The process's BLAS libraries, SciPy's among them, found once: the search walks every
    loaded library (milliseconds), setting their thread counts afterwards costs microseconds,
    and :func:`member_threads` runs around every epoch and evaluation."""
    import scipy.linalg.cython_blas  # noqa: F401 - load it first, so that the search finds it
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()
