"""numba's on-disk cache: entries older than a kernel source dropped, and kernels made ready early.

:func:`load_or_compile` has the specialisation a call will run loaded from the cache or compiled
before the call, so that the training engines start their clocks after it: no epoch's time
holds compilation or cache loading (seconds on a first run, tenths of one later).

numba checks a cached function against its own source file only: a caller in one module
(``tiled.gather`` calling ``layer._bounds``, the engines' epoch in ``engines/step.py`` calling
``layer``) keeps the machine code it compiled with the old callee inlined after the callee's
file changes, and runs it. A cache index (``*.nbi``) older than the newest file in ``kernels/``
or ``engines/`` (:data:`COMPILED`) may therefore hold stale code; dropping the index makes
numba compile afresh (the ``*.nbc`` data it pointed to is then unused and is dropped too). The
test session (``tests/conftest.py``) and the benchmark scripts (``benchmarks/_common.py``) call :func:`drop_stale_cache` before any kernel runs.
"""

from __future__ import annotations

import os
from pathlib import Path

KERNELS = Path(__file__).resolve().parent
PACKAGE = KERNELS.parent
#: The packages whose functions numba compiles and caches: the layer maths and the engines.
COMPILED = (KERNELS, PACKAGE / "engines")


def newest_kernel_source() -> float:
    """Modification time of the newest ``*.py`` file in ``kernels/`` and ``engines/``."""
    return max(p.stat().st_mtime for d in COMPILED for p in d.glob("*.py"))


def _cache_dirs() -> list[Path]:
    dirs = [p for p in PACKAGE.rglob("__pycache__") if p.is_dir()]
    custom = os.environ.get("NUMBA_CACHE_DIR")
    if custom and Path(custom).is_dir():
        dirs.append(Path(custom))
    return dirs


def stale_cache_files() -> list[Path]:
    """numba cache files (``*.nbi``, ``*.nbc``) written before the newest kernel source."""
    newest = newest_kernel_source()
    stale = []
    for d in _cache_dirs():
        for p in d.rglob("*.nb[ic]"):
            try:
                if p.stat().st_mtime < newest:
                    stale.append(p)
            except FileNotFoundError:  # another process dropped it meanwhile
                pass
    return stale


def drop_stale_cache() -> list[Path]:
    """Delete the stale cache files (see :func:`stale_cache_files`); returns those deleted."""
    dropped = []
    for p in stale_cache_files():
        try:
            p.unlink()
            dropped.append(p)
        except FileNotFoundError:
            pass
    return dropped


def load_or_compile(kernel, *args) -> None:
    """Have ``kernel``'s (a numba dispatcher's) specialisation for ``args`` ready, loaded from the
    on-disk cache or compiled, without calling it. The arguments are typed as a call types
    them, so the call that follows finds that specialisation and runs at once."""
    kernel.compile(tuple(kernel.typeof_pyval(a) for a in args))
