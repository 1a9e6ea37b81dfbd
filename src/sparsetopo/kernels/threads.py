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


def use_threads(nnz: int, batch: int = 1) -> bool:
    """Whether a step of a layer with ``nnz`` connections on ``batch`` examples is worth the thread
    pool: the one thread rule (:mod:`sparsetopo.nn.plan` asks it for every layer and epoch)."""
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


class AdaptiveThreads:
    """Serial or the thread pool for each call site, whichever has been faster lately.

    A parallel region waits for its slowest thread. When another process holds a core, the
    thread numba runs there gets a slice of it only every few milliseconds, and a layer call
    of a fraction of a millisecond takes several: on two cores with the other one busy, the
    parallel kernels ran at a quarter of the serial speed. No static rule sees that load, so
    each call site (a layer's direction at one batch size) keeps a moving average of its
    seconds on each path, runs the faster one, and now and then tries the other again (every
    8 calls, the gap doubling each time the other loses, up to every 512).

    The kernels give the same numbers on either path (every sum lies in one thread's range),
    so the choice moves only time, never results.
    """

    ALPHA = 0.3          # weight of the newest call in the moving averages
    FIRST_GAP, MAX_GAP = 8, 512

    def __init__(self):
        self._sites: dict = {}

    def chunks(self, site, work: int) -> int:
        """Ranges to split a call into (numba's thread count), or 0 for the calling thread."""
        if not use_threads(work):
            return 0
        threads = numba.get_num_threads()
        state = self._sites.get(site)
        if state is None:
            if len(self._sites) > 4096:  # layers come and go; forget them all rather than grow
                self._sites.clear()
            state = self._sites[site] = [None, None, 0, self.FIRST_GAP, self.FIRST_GAP]
        serial, parallel, calls, next_probe, gap = state
        if parallel is None:
            return threads
        if serial is None:
            return 0
        state[2] = calls = calls + 1
        faster_parallel = parallel <= serial
        if calls >= next_probe:  # try the other path once
            state[3] = calls + gap
            faster_parallel = not faster_parallel
        return threads if faster_parallel else 0

    @staticmethod
    def timed(work: int) -> bool:
        """Whether a call of this much work has a choice to make (and so is worth timing)."""
        return use_threads(work)

    def record(self, site, chunks: int, seconds: float) -> None:
        """The time one call took on the path :meth:`chunks` chose."""
        state = self._sites.get(site)
        if state is None:
            return
        slot = 1 if chunks else 0
        other = state[1 - slot]
        if state[slot] is None or other is None or state[slot] > other:
            # a first measurement or a probe: the freshest news of this path replaces the old
            probe = state[slot] is not None and other is not None
            state[slot] = seconds
            if probe:
                state[4] = self.FIRST_GAP if seconds <= other else min(2 * state[4], self.MAX_GAP)
            return
        state[slot] = (1 - self.ALPHA) * state[slot] + self.ALPHA * seconds
