"""How the parallel kernels share out their work: chunks per thread, and when to stay serial."""

from __future__ import annotations

from contextlib import contextmanager

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
    import scipy.linalg.cython_blas  # noqa: F401 - load it first, so that the limit reaches it
    from threadpoolctl import threadpool_limits

    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with threadpool_limits(1, user_api="blas"):
            yield
    finally:
        numba.set_num_threads(previous)
