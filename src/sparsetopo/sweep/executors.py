"""Executors shaped like :class:`concurrent.futures.Executor`: submit -> Future, map, shutdown,
``with``. The sweep runner only ever calls ``submit``; anything with that shape can run a sweep.

* :class:`InlineExecutor` runs the call in the coordinator, at submit time (for debugging:
  breakpoints and tracebacks work as usual).
* :class:`ProcessExecutor` is a local process pool (``forkserver`` start method: no inherited
  torch thread state) whose workers use one torch thread each and exit if the coordinator dies.
* :class:`RayExecutor` sends each call as a Ray task to a cluster (``address``, checked first
  by :mod:`sparsetopo.sweep.cluster`) or to a local instance it starts; tasks return plain
  dicts. Its :meth:`~RayExecutor.slots` follows the cluster's CPUs, :meth:`~RayExecutor.share`
  puts the data in the object store once, :meth:`~RayExecutor.check` watches the head.

``make_executor(kind, workers, address)`` picks one by name.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from sparsetopo.errors import SparsetopoError, pip_install
from sparsetopo.sweep.worker import init_worker

__all__ = ["EXECUTORS", "InlineExecutor", "ProcessExecutor", "RayExecutor", "Shared", "WorkersDidNotStart",
           "check_executor", "default_workers", "leave_if_bootstrapping", "make_executor"]

GUARD = 'if __name__ == "__main__":'   # the idiom a script that starts worker processes needs


class WorkersDidNotStart(SparsetopoError):
    """Every worker of a process pool died while starting, before its first task: most often a
    script without the ``if __name__ == "__main__":`` guard, which each worker imports again."""


def leave_if_bootstrapping() -> None:
    """End this process, silently, if it is a worker still importing its parent's main module.

    forkserver and spawn workers import the coordinator's script before they take any task; a
    script that calls :func:`sparsetopo.sweep.run_sweep` outside ``if __name__ == "__main__":``
    would start a sweep of its own in every worker (a store opened, a pool that
    multiprocessing refuses with a long traceback). The worker exits instead, before doing
    anything; the coordinator sees its pool broken before any worker started and says why in
    one line (:class:`WorkersDidNotStart`). ``_inheriting`` is the flag multiprocessing itself
    reads to refuse a new process while the main module is being imported.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise SystemExit(1)   # a forkserver child exits without a traceback; spawn's likewise


def default_workers() -> int:
    """All the cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class InlineExecutor(Executor):
    """Runs each submitted call immediately in this process; its Future is already done."""

    workers = 1

    def slots(self) -> int:
        """One task at a time, on this process's one CPU (what the progress reports as in use)."""
        return 1

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
    executor and retries those runs, unless no worker had started at all
    (:meth:`check_started`).
    """

    def __init__(self, workers: int | None = None):
        leave_if_bootstrapping()
        self.workers = workers or default_workers()
        context = _context()
        self.started = context.Event()   # set by the first worker that finished starting
        self.pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                        initializer=init_worker, initargs=(os.getpid(), self.started))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return self.pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def check_started(self) -> None:
        """Once the pool broke: raise :class:`WorkersDidNotStart` if no worker ever finished
        starting (a worker that died later, killed or out of memory, is the runner's to retry)."""
        if not self.started.is_set():
            raise WorkersDidNotStart(
                f"the sweep's worker processes died while starting, before their first task: a script that "
                f"calls run_sweep must call it under {GUARD} (each worker imports the script again), "
                f"or use the inline executor") from None   # the broken pool adds nothing

    def pids(self) -> list[int]:
        """Process ids of the live workers (for tests and diagnostics)."""
        return [p.pid for p in (self.pool._processes or {}).values()]

    def terminate(self) -> None:
        """Stop now: kill every worker and drop queued work (after an interrupt). A plain
        ``shutdown(wait=True)`` would wait for runs in flight, and the pool's exit hook for
        workers that never learn the coordinator is leaving."""
        processes = list((self.pool._processes or {}).values())
        for process in processes:
            process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            process.join(timeout=5)
        # An interrupt inside submit can leave a worker the forkserver forked but the pool never
        # recorded; it would start for a coordinator that is gone and fail noisily. Twice: the
        # server may fork the last request a moment after the first look.
        for _ in range(2):
            for pid in _forkserver_children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)


# Nothing heavy is preloaded into the forkserver: while it imported torch (seconds) a Ctrl-C
# could land inside the coordinator's request for a worker, and the worker forked for that
# request would then start for a coordinator that is gone. Each worker imports torch once.
PRELOAD: list[str] = []


def _context():
    """``forkserver`` where available (workers fork from a server that imported torch once,
    so a replaced pool starts at once), else ``spawn``; never plain ``fork`` of a process
    whose torch may already run threads."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        _start_forkserver()
        return context
    return multiprocessing.get_context("spawn")


def _forkserver_children() -> list[int]:
    """Process ids whose parent is this process's forkserver (Linux /proc; [] elsewhere)."""
    from multiprocessing import forkserver

    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    if server is None:
        return []
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == server:
            children.append(int(stat.parent.name))
    return children


@contextmanager
def _sigint_held():
    """Hold Ctrl-C back for a moment: blocked on the main thread, not ignored. A Ctrl-C in the
    meantime stays pending and interrupts the coordinator as soon as the block ends (ignoring
    it would lose it, and the sweep would go on after the user pressed Ctrl-C). A process
    started meanwhile inherits the block, so the interrupt never reaches it. Main thread only:
    elsewhere signals are not ours to set."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _start_forkserver() -> None:
    """Start the forkserver with SIGINT blocked. A Ctrl-C to the process group would otherwise
    hit it (and workers forking from it) while it imports torch, each printing a traceback; the
    block survives its exec and its forks, and the server then ignores SIGINT itself. The
    coordinator alone handles Ctrl-C, and the server exits with it."""
    from multiprocessing import forkserver, resource_tracker

    # the forkserver starts the resource tracker first, which blocks SIGINT for its own start
    # and then unblocks it: started inside our block, it would end the block before the server
    resource_tracker.ensure_running()
    with _sigint_held():
        forkserver.ensure_running()


_SHARED: dict = {}   # object id -> value, per Ray worker process (see RayExecutor.share)


class Shared:
    """A value the coordinator put in Ray's object store once; a task gets it by :func:`_resolve`."""

    def __init__(self, ref):
        self.ref = ref


def _resolve(value):
    if not isinstance(value, Shared):
        return value
    key = value.ref.hex()
    if key not in _SHARED:
        import ray

        _SHARED[key] = ray.get(value.ref)
    return _SHARED[key]


def _ray_call(fn, args, kwargs):
    init_worker()
    return fn(*args, **{name: _resolve(value) for name, value in kwargs.items()})


class RayExecutor(Executor):
    """Ray tasks behind the Executor interface.

    address : a running cluster's address (``host:port``, ``ray://host:port`` or ``auto``);
        default ``RAY_ADDRESS``; None starts a local instance with ``num_cpus=workers``. The
        address is checked before anything else (:func:`sparsetopo.sweep.cluster.connect`). An
        already initialised Ray is used as it is and left running at shutdown.
    workers : on a cluster, the most tasks in flight (default: every CPU of the cluster, read
        again while the sweep runs, so nodes that join are used; see :meth:`slots`).

    Each task asks for one CPU; Ray's own retries are off (``max_retries=0``) so that the
    runner counts every attempt itself. :meth:`share` puts a value (the data sets) in Ray's
    object store once; each worker process fetches it once.
    """

    REFRESH_SECONDS = 5.0   # how often the cluster's CPUs are read again

    def __init__(self, workers: int | None = None, address: str | None = None):
        from sparsetopo.sweep.cluster import HeadWatch, connect, resolve_address

        try:
            import ray
        except ImportError:
            raise SparsetopoError(f"--executor ray needs Ray: {pip_install('ray')}") from None
        self.ray = ray
        self.owned = False
        self.cap = workers
        self.address = resolve_address(address)
        if not ray.is_initialized():
            connect(self.address, num_cpus=workers or default_workers())
            self.owned = True
        self.watch = None
        if self.address is not None and self.owned:
            gcs = None if self.address.startswith("ray://") else ray.get_runtime_context().gcs_address
            self.watch = HeadWatch(self.address if self.address != "auto" else gcs, probe=gcs)
        self.in_flight: dict = {}   # Future -> ObjectRef, to cancel on an interrupt
        self.cpus, self.read_at = 0, -self.REFRESH_SECONDS
        self.workers = self.slots()
        self.remote = ray.remote(num_cpus=1, max_retries=0)(_ray_call)

    def slots(self) -> int:
        """How many tasks may run now: the cluster's CPUs (read again every few seconds), at
        most ``workers`` when it was given."""
        now = time.monotonic()
        if now - self.read_at >= self.REFRESH_SECONDS and (self.watch is None or self.watch.up):
            self.read_at = now
            self.cpus = int(self.ray.cluster_resources().get("CPU", 0)) or self.cpus or 1
        return max(1, min(self.cpus, self.cap or self.cpus))

    def check(self) -> None:
        """Raise ClusterLost once the head has not answered for a while."""
        if self.watch is not None:
            self.watch.check()

    def share(self, value) -> Shared:
        return Shared(self.ray.put(value))

    def submit(self, fn, /, *args, **kwargs) -> Future:
        ref = self.remote.remote(fn, args, kwargs)
        future = ref.future()
        self.in_flight[future] = ref
        future.add_done_callback(lambda done: self.in_flight.pop(done, None))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()
            self.owned = False

    def terminate(self) -> None:
        """Stop now (an interrupt, a lost head): cancel the tasks in flight so that the
        cluster's CPUs are free again, and leave (a local Ray stops with its driver)."""
        if self.watch is None or self.watch.up:
            for ref in list(self.in_flight.values()):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - finished meanwhile, or the cluster is gone
                    pass
            self.shutdown()
        # with the head gone, ray.shutdown would wait for it: the process's exit ends the driver


EXECUTORS = {"inline": InlineExecutor, "process": ProcessExecutor, "ray": RayExecutor}


def check_executor(kind: str) -> None:
    """Raise SparsetopoError if executor ``kind`` is unknown or its package is missing: called
    before a sweep creates anything, so a missing dependency leaves no store behind."""
    if kind not in EXECUTORS:
        raise SparsetopoError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
    if kind == "process":
        _check_main_importable()
    if kind == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SparsetopoError(f"--executor ray needs Ray: {pip_install('ray')}; "
                                  f"or use --executor process") from None


def _check_main_importable() -> None:
    """Refuse a coordinator whose ``__main__`` its workers cannot import.

    forkserver workers re-import the coordinator's main module from its path before they take
    any task; a script piped on stdin (``python - < script.py``) has the path ``<stdin>``, so
    every worker would die at start and each run end in ``failed`` after its retries.
    """
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is None and path is not None and not os.path.isfile(path):
        raise SparsetopoError(f"the process executor's workers cannot import this program's main module "
                              f"({path!r} is not a file): run it from a script file, or use the inline executor")


def make_executor(kind: str = "process", workers: int | None = None, address: str | None = None) -> Executor:
    """An executor by name: ``inline``, ``process`` (local processes) or ``ray``."""
    if kind == "inline":
        return InlineExecutor()
    if kind == "process":
        _check_main_importable()
        return ProcessExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise SparsetopoError(f"unknown executor {kind!r}: choose one of {', '.join(EXECUTORS)}")
