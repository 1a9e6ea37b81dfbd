"""Executors shaped like :class:`concurrent.futures.Executor`: submit -> Future, map, shutdown,
``with``. The sweep runner only ever calls ``submit``; anything with that shape can run a sweep.

* :class:`InlineExecutor` runs the call in the coordinator, at submit time (for debugging:
  breakpoints and tracebacks work as usual).
* :class:`ProcessExecutor` is a local process pool (``forkserver`` start method: no inherited
  torch thread state) whose workers use one torch thread each and exit if the coordinator dies.
* :class:`RayExecutor` sends each call as a Ray task to a cluster (``address``) or to a local
  instance it starts; tasks return plain dicts.

``make_executor(kind, workers, address)`` picks one by name.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor

from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep.worker import init_worker

__all__ = ["EXECUTORS", "InlineExecutor", "ProcessExecutor", "RayExecutor", "make_executor", "default_workers"]


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class InlineExecutor(Executor):
    """Runs each submitted call immediately in this process; its Future is already done."""

    workers = 1

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - delivered through the Future, as a pool would
            if isinstance(exc, KeyboardInterrupt):
                raise
            future.set_exception(exc)
        return future


class ProcessExecutor(Executor):
    """A pool of ``workers`` local processes (forkserver), each with ``torch.set_num_threads(1)``.

    When a worker dies (killed, out of memory) the pool is broken: every unfinished Future
    fails with ``concurrent.futures.process.BrokenProcessPool``; the runner then makes a new
    executor and retries those runs.
    """

    def __init__(self, workers: int | None = None):
        self.workers = workers or default_workers()
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_context(),
                                        initializer=init_worker, initargs=(os.getpid(),))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [p.pid for p in (self.pool._processes or {}).values()]


# Imported once by the forkserver, so that each forked worker starts warm: torch.optim's first
# use imports torch._dynamo (seconds), the digits loader imports scikit-learn.
PRELOAD = ["sparsetopo.sweep.worker", "torch._dynamo", "sklearn.datasets"]


def _context():
    """``forkserver`` where available (workers fork from a server that imported torch once,
    so a replaced pool starts at once), else ``spawn``; never plain ``fork`` of a process
    whose torch may already run threads."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        return context
    return multiprocessing.get_context("spawn")


def _ray_call(fn, args, kwargs):
    init_worker()
    return fn(*args, **kwargs)


class RayExecutor(Executor):
    """Ray tasks behind the Executor interface.

    address : a running cluster's address (``ray.init(address=...)``); None starts a local
        instance with ``num_cpus=workers``. An already initialised Ray is used as it is and
        left running at shutdown.
    Each task asks for one CPU; Ray's own retries are off (``max_retries=0``) so that the
    runner counts every attempt itself.
    """

    def __init__(self, workers: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise SparsetopoError("--executor ray needs Ray: pip install 'sparsetopo[ray]'") from None
        self.ray = ray
        self.owned = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "log_to_driver": False}
            if address is None:
                options["num_cpus"] = workers or default_workers()
            ray.init(address=address, **options)
            self.owned = True
        self.workers = workers or int(ray.cluster_resources().get("CPU", 1))
        self.remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.remote.remote(fn, args, kwargs).future()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
            self.owned = False


EXECUTORS = {"inline": InlineExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def make_executor(kind: str = "process", workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name: ``inline``, ``process`` (local processes) or ``ray``."""
    if kind == "inline":
        return InlineExecutor()
    if kind == "process":
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise SparsetopoError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
