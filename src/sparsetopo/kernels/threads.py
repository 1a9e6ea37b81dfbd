"""How the parallel kernels share out their work: chunks per thread, and when to stay serial."""

from __future__ import annotations

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
