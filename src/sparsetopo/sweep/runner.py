"""The sweep coordinator: plan, skip what is stored, send chunks to an executor, store results.

The coordinator is the only process that writes the store. Each result is committed on its
own as soon as it arrives, so a coordinator killed at any moment loses at most the runs in
flight, and the same call again resumes: stored runs are skipped (their ``run_id`` is in the
store), the rest are trained. A worker that dies fails the Futures of the chunks in flight;
those runs are counted as an attempt in the ``failed`` table and sent again, one run per
task, on a fresh executor. A run that raises is retried up to ``max_attempts`` times in all,
then left in ``failed`` (``retry_failed=True`` tries it again on a later call). A process pool
whose workers die before any of them started (a script without ``if __name__ ==
"__main__":``, which every worker imports again) ends the call at once with
:class:`sparsetopo.sweep.executors.WorkersDidNotStart`: no run is to blame, none is counted.

Library code never prints: progress goes to the ``on_result`` callback, one
:class:`RunEvent` per stored or failed run.
"""

from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import FIRST_COMPLETED, BrokenExecutor, Executor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from sparsetopo.data import dataset_shape, prepare_dataset
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep.cluster import ClusterLost
from sparsetopo.sweep.dense import check_dense
from sparsetopo.sweep.executors import ProcessExecutor, check_executor, leave_if_bootstrapping, make_executor
from sparsetopo.sweep.spec import SweepSpec, expand_recipes, load_spec, run_id
from sparsetopo.sweep.store import SweepStore, is_new_store
from sparsetopo.sweep.worker import code_version, run_chunk
from sparsetopo.train import TrainConfig, population_key
from sparsetopo.train.loop import training_device

__all__ = ["HUGE_RUNS", "HUGE_SECONDS", "RunEvent", "SweepSummary", "run_sweep", "estimate_seconds", "make_chunks"]

HUGE_RUNS = 100_000           # a grid above this many runs, or
HUGE_SECONDS = 7 * 24 * 3600  # one projected beyond a week, starts only with allow_huge (--yes)

# A task (chunk) is one population: networks that share population_key, trained together.
TASK_MEMBERS = 8           # networks per task at most: a task's runs are stored when it ends
TASK_BYTES = 512 << 20     # and its networks' arrays (weights, buffers, index) at most this
WAIT_SECONDS = 2.0         # the coordinator looks at its executor (a cluster's CPUs, its head) this often


@dataclass(frozen=True)
class RunEvent:
    """One run finished (``status`` ok/diverged), failed for good (``failed``) or will be
    retried (``retry``). ``done``/``total`` count this call's runs."""

    run_id: str
    config: TrainConfig
    status: str
    test_accuracy: float | None
    seconds: float | None
    done: int
    total: int
    error: str | None = None
    worker: str | None = None  # host:pid that trained it
    cpus: int | None = None    # CPUs the sweep uses now (tasks in flight at most)


@dataclass(frozen=True)
class SweepSummary:
    planned: int       # runs in this call's run list
    skipped: int       # already stored (or failed for good) before this call
    stored: int        # stored by this call
    failed: int        # left in the failed table by this call
    restarts: int      # executors replaced after a worker died
    seconds: float


# A training step's cost for the projection of a grid, fitted once on this project's CPUs: a
# fixed overhead per step, and the masked-dense arithmetic (forward and backward, 6 flops per
# weight and example) at a sustained rate. Rough on purpose: it only tells a huge grid apart.
STEP_OVERHEAD_SECONDS = 2e-4
DENSE_FLOPS_PER_SECOND = 1.5e10


def estimate_seconds(config: TrainConfig, n_features: int, n_classes: int, n_train: int) -> float:
    """Rough CPU seconds of one run on one core (masked-dense arithmetic plus step overhead).

    Only used to project a grid (the huge-grid check).
    """
    sizes = [n_features, *config.hidden, n_classes]
    weights = sum(a * b for a, b in zip(sizes, sizes[1:]))
    n = min(n_train, config.limit_train or n_train)
    steps = config.epochs * math.ceil(n / config.batch_size)
    return steps * (STEP_OVERHEAD_SECONDS + 6 * config.batch_size * weights / DENSE_FLOPS_PER_SECOND)


def projected_seconds(configs: Sequence[TrainConfig], workers: int, data_dir=None) -> float:
    """Rough wall time of a whole grid on ``workers`` workers (:func:`estimate_seconds` summed)."""
    shapes = {name: dataset_shape(name, data_dir) for name in {c.dataset for c in configs}}
    total = sum(estimate_seconds(c, *shapes[c.dataset]) for c in configs)
    return total / max(1, workers)


def member_bytes(config: TrainConfig, n_features: int, n_classes: int) -> int:
    """Upper bound of the memory one network takes in a population task: per possible
    connection its weight, momentum buffer, mask and index entries (a layer held dense or CSR)."""
    sizes = config.sizes(n_features, n_classes)
    return 40 * sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def make_chunks(configs: Sequence[TrainConfig], workers: int, chunk_size: int | None = None,
                data_dir=None) -> list[list[TrainConfig]]:
    """Cut runs into tasks, each one population (runs sharing
    :func:`sparsetopo.train.population_key`, trained together by the population engine).

    A task holds at most :data:`TASK_MEMBERS` networks and :data:`TASK_BYTES` of their arrays,
    and there are at least two tasks per worker when the runs allow it (so that no worker idles
    while another finishes a long task). The size does not depend on how long a run takes: an
    MNIST-sized network forms populations as a digits-sized one does. ``chunk_size`` overrides
    the size (still never mixing populations).
    """
    groups: dict = {}
    for config in configs:
        groups.setdefault(population_key(config), []).append(config)
    if not groups:
        return []
    shapes = {name: dataset_shape(name, data_dir) for name in {c.dataset for c in configs}}
    spread = max(1, math.ceil(len(configs) / (2 * max(1, workers))))
    chunks = []
    for group in groups.values():  # a chunk never mixes groups: each is one population
        size = chunk_size
        if size is None:
            n_features, n_classes, _ = shapes[group[0].dataset]
            by_memory = TASK_BYTES // member_bytes(group[0], n_features, n_classes)
            size = max(1, min(TASK_MEMBERS, by_memory, spread))
        chunks.extend(group[i:i + size] for i in range(0, len(group), size))
    return chunks


def run_sweep(
    spec_or_configs: str | Path | SweepSpec | Sequence[TrainConfig],
    db_path,
    executor: str | Executor = "process",
    workers: int | None = None,
    address: str | None = None,
    chunk_size: int | None = None,
    population: bool = True,
    measures: bool = True,
    max_attempts: int = 3,
    retry_failed: bool = False,
    data_dir=None,
    on_result: Callable[[RunEvent], None] | None = None,
    add: bool = False,
    allow_huge: bool = False,
    strict: bool = False,
) -> SweepSummary:
    """Run every run of a sweep that is not stored yet in ``db_path``; return a summary.

    spec_or_configs : a TOML path, a preset name, a parsed :class:`SweepSpec`, or a list of
        TrainConfigs.
    executor : ``"inline"``, ``"process"``, ``"ray"`` or an Executor instance (not shut down
        here; a broken one is not replaced).
    workers : parallel workers (default: all cores); sizes the process pool or a local Ray.
        On a Ray cluster, the most tasks in flight; by default every CPU of the cluster, read
        again while the sweep runs (nodes that join are used).
    address : Ray cluster address (``executor="ray"``); default ``RAY_ADDRESS``, else a local
        Ray. The cluster is reached and checked before the store is created: an unusable
        address raises :class:`sparsetopo.sweep.cluster.ClusterError` and leaves no file.
    chunk_size : runs per task; default sized by memory and workers (:func:`make_chunks`).
    population : train runs sharing :func:`sparsetopo.train.population_key` together (unless the
        spec's ``[sweep] population = false`` asks for one network at a time).
    measures : compute graph measures (when :mod:`sparsetopo.spectral` is available).
    add : allow a spec whose grid differs from the one(s) already in ``db_path`` (the store
        then keeps every spec it was given); without it such a call is refused, so that two
        sweeps never mix silently.
    allow_huge : start a grid above :data:`HUGE_RUNS` runs or projected beyond
        :data:`HUGE_SECONDS` (:func:`projected_seconds`); without it such a call is refused, as
        it is more often a slip in the spec than a plan.
    strict : refuse (:class:`sparsetopo.sweep.dense.DenseGridError`) a spec that trains a
        sparse construction with every layer fully connected; without it such a spec gets one
        :class:`sparsetopo.sweep.dense.DenseGridWarning` (:func:`sparsetopo.sweep.dense.check_dense`).

    Nothing is created before the executor's package, the spec and the data sets are known
    to be usable. A run failing with a SparsetopoError (missing or corrupt data, bad input) is
    not retried; if no run has succeeded yet the sweep stops with that error. On an
    interrupt (KeyboardInterrupt) the workers are killed at once (a cluster's tasks are
    cancelled); stored runs stay stored and the next call resumes. A cluster whose head stops
    answering ends the call with :class:`sparsetopo.sweep.cluster.ClusterLost`.
    """
    leave_if_bootstrapping()   # a worker importing a script that lacks the main guard: no sweep of its own
    started = time.perf_counter()
    if max_attempts < 1:
        raise SparsetopoError(f"max_attempts={max_attempts} must be >= 1")
    if isinstance(executor, str):
        check_executor(executor)
    meta, spec, recipes = {}, None, {}
    if isinstance(spec_or_configs, (str, Path)):
        spec_or_configs = load_spec(spec_or_configs, data_dir=data_dir)
    if isinstance(spec_or_configs, SweepSpec):
        check_dense(spec_or_configs, strict, data_dir, stacklevel=2)   # before anything is created
        population = population and spec_or_configs.population   # a spec timing runs one at a time says so
        meta = {"spec": spec_or_configs.summary(), "spec_text": spec_or_configs.text}
        labelled = expand_recipes(spec_or_configs, data_dir=data_dir)
        configs = [config for config, _ in labelled]
        recipes = {run_id(config): recipe for config, recipe in labelled}   # stored with each run
        spec = {"name": spec_or_configs.name, "grid": _grid_id(configs), "text": spec_or_configs.text}
    else:
        configs = list(spec_or_configs)
        for i, config in enumerate(configs):
            if not isinstance(config, TrainConfig):
                raise SparsetopoError(f"configs[{i}] is a {type(config).__name__}, not a TrainConfig")
    owned = isinstance(executor, str)
    ids = [run_id(c) for c in configs]
    by_id = dict(zip(ids, configs))
    if executor in ("process", "inline"):  # local runs compute here: a device this machine lacks fails them all
        for config in {c.device: c for c in configs}.values():
            training_device(config)
    # Reach the workers (a cluster: connected and checked) before the store exists.
    pools = [make_executor(executor, workers, address) if owned else executor]
    replace = lambda cap=workers: make_executor(executor, cap, address)  # noqa: E731 - after a pool broke
    if workers is None:
        workers = getattr(pools[0], "workers", None) or 1
    try:
        if not allow_huge:
            projected = projected_seconds(configs, workers, data_dir)
            if len(configs) > HUGE_RUNS or projected > HUGE_SECONDS:
                raise HugeGridError(
                    f"{spec['name'] if spec else 'the grid'} has {len(configs):,} runs, projected at "
                    f"{projected / 3600:,.0f} h on {workers} workers: check the spec (sweep run --dry-run), "
                    f"or add --yes (allow_huge=True) to start it")
        for name in sorted({c.dataset for c in configs}):
            prepare_dataset(name, data_dir)   # find (or download) its files once, here, or stop now
        if not is_new_store(db_path):  # refuse before changing anything
            with SweepStore(db_path, readonly=True) as existing:
                specs = _specs_after(existing.meta(), spec, add, existing.path)
        else:
            specs = None if spec is None else [spec]
        with SweepStore(db_path) as store:
            if specs is not None:
                store.set_meta("specs", specs)
            known = store.meta()
            first = {k: v for k, v in meta.items() if k not in known}  # the store's first spec stays its name
            store.plan([(rid, c.to_dict()) for rid, c in by_id.items()], {**first, "workers": workers})
            done = store.done_ids()
            attempts = store.failed_attempts()
            todo = [c for rid, c in by_id.items()
                    if rid not in done and (retry_failed or attempts.get(rid, 0) < max_attempts)]
            state = _State(store, by_id, max_attempts, on_result, total=len(todo), recipes=recipes)
            if todo:
                options = dict(data_dir=None if data_dir is None else str(data_dir), population=population,
                               measures=measures, version=code_version())
                share = getattr(pools[0], "share", None)
                if share is not None:   # a cluster: the data travel with the sweep, loaded here once
                    from sparsetopo.data import load_dataset

                    options["datasets"] = share({name: load_dataset(name, data_dir=data_dir)
                                                 for name in sorted({c.dataset for c in todo})})
                    options["data_dir"] = None
                state.run(pools, owned, replace, workers,
                          make_chunks(todo, workers, chunk_size, data_dir), options)
            elif owned:
                pools[0].shutdown(wait=True)
        return SweepSummary(planned=len(by_id), skipped=len(by_id) - len(todo), stored=state.stored,
                            failed=state.failed, restarts=state.restarts,
                            seconds=time.perf_counter() - started)
    except BaseException:  # an interrupt, a refusal, a lost head: do not wait for runs in flight
        if owned:
            _stop(pools[-1])
        raise


def _stop(pool) -> None:
    terminate = getattr(pool, "terminate", None)
    if terminate is not None:
        terminate()
    else:
        pool.shutdown(wait=False, cancel_futures=True)


class HugeGridError(SparsetopoError):
    """A grid above HUGE_RUNS runs or HUGE_SECONDS projected, started without allow_huge."""


class OtherSweepError(SparsetopoError):
    """The store holds another spec's runs and ``add`` was not given."""


def _grid_id(configs: Sequence[TrainConfig]) -> str:
    """A spec's identity: the hash of its run ids (so also of data set and versions)."""
    return hashlib.sha256("\n".join(sorted(run_id(c) for c in configs)).encode()).hexdigest()[:16]


def _specs_after(meta: dict, spec: dict | None, add: bool, path) -> list[dict] | None:
    """The store's specs once ``spec`` is run into it (None: nothing to record); refuses a spec
    whose grid is not one the store was made from, unless ``add``.

    Stores written before specs were recorded are compared by their spec's name."""
    known = meta.get("specs")
    if known is None:
        known = [{"name": meta["spec"]["name"], "grid": None}] if "spec" in meta else []
    if spec is None:  # a list of configs (library use): nothing to compare
        return None
    if any(k["grid"] == spec["grid"] or (k["grid"] is None and k["name"] == spec["name"]) for k in known):
        return known
    if known and not add:
        names = ", ".join(sorted({k["name"] for k in known}))
        raise OtherSweepError(
            f"{path} holds the runs of another sweep ({names}), not of {spec['name']!r}: choose another "
            f"--db, or add --add to keep {spec['name']!r}'s runs in the same store (it then keeps both specs)")
    return [*known, spec]


class _State:
    """Bookkeeping of one ``run_sweep`` call: what is in flight, retries, counts."""

    def __init__(self, store: SweepStore, by_id, max_attempts, on_result, total, recipes=None):
        self.store, self.by_id, self.max_attempts, self.on_result = store, by_id, max_attempts, on_result
        self.total = total
        self.recipes = recipes or {}   # run id -> the spec's recipe name (the runs table's "recipe")
        self.finished = self.stored = self.failed = self.restarts = 0
        self.cpus: int | None = None   # tasks in flight at most, as last read

    def run(self, pools, owned, replace, workers, chunks, options):
        """Send ``chunks`` to ``pools[-1]`` and store what comes back; ``replace()`` makes a new
        pool after one broke (owned pools only), appended to ``pools``. The caller stops the
        last pool on an exception."""
        pending = list(chunks)   # chunks waiting to be submitted
        in_flight = {}           # Future -> chunk
        try:
            self._loop(pools, owned, replace, workers, pending, in_flight, options)
        except ClusterLost as exc:
            done = self.store.status()["done"]
            runs = "the 1 run" if done == 1 else f"the {done} runs"
            raise ClusterLost(f"{exc}; {runs} stored so far in {self.store.path} {'is' if done == 1 else 'are'} "
                              f"safe: run the same command again once the cluster is back, and it resumes") from None

    def _slots(self, pool, workers: int) -> int:
        """Tasks in flight at most: the pool's own count where it has one (a cluster's CPUs,
        the inline executor's one), else one per worker of a process pool and two for any other
        executor (a dead worker then fails only tasks that ran). A change is recorded for
        'sweep status'."""
        slots = getattr(pool, "slots", None)
        if slots is not None:
            limit = slots()
        else:
            limit = workers if isinstance(pool, ProcessExecutor) else max(2 * workers, 1)
        if limit != self.cpus:
            if self.cpus is not None and hasattr(pool, "slots"):
                self.store.set_meta("workers", limit)
            self.cpus = limit
        return limit

    def _loop(self, pools, owned, replace, workers, pending, in_flight, options):
        while pending or in_flight:
            pool = pools[-1]
            limit = self._slots(pool, workers)
            while pending and len(in_flight) < limit:
                chunk = pending.pop(0)
                in_flight[pool.submit(run_chunk, [c.to_dict() for c in chunk], **options)] = chunk
            finished, _ = wait(list(in_flight), timeout=WAIT_SECONDS, return_when=FIRST_COMPLETED)
            check = getattr(pool, "check", None)
            if check is not None:   # a cluster: is its head still there?
                check()
            broken = False
            for future in finished:
                chunk = in_flight.pop(future)
                try:
                    rows = future.result()
                except BrokenExecutor as exc:
                    check_started = getattr(pool, "check_started", None)
                    if check_started is not None:   # no worker started: no run is to blame, none retried
                        check_started()
                    broken = True
                    pending[:0] = self._retry(chunk, f"worker process died: {exc!r}")
                    continue
                except Exception as exc:  # noqa: BLE001 - e.g. a Ray worker crash, a node lost
                    pending[:0] = self._retry(chunk, f"task failed: {exc!r}")
                    continue
                for config, row in zip(chunk, rows):
                    if row.get("refused"):   # a worker running other code: never mix results
                        raise SparsetopoError(f"{row['error']} ({self.stored} runs stored by this call, "
                                              f"all with the coordinator's code)")
                    if row.get("permanent"):
                        self._give_up(config, row["error"])
                    elif "error" in row:
                        pending[:0] = self._retry([config], row["error"])
                    else:
                        self._store(config, row)
            if broken and owned:
                # every unfinished task of a broken pool fails too: collect them, start afresh
                for future, chunk in list(in_flight.items()):
                    pending[:0] = self._retry(chunk, "worker process died (pool broken)")
                in_flight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pools.append(replace())
                self.restarts += 1
            elif broken:
                raise SparsetopoError("the executor given to run_sweep broke (a worker died); run the "
                                      "sweep again to resume, or pass an executor name so it is replaced")
        if owned:
            pools[-1].shutdown(wait=True, cancel_futures=True)

    def _store(self, config, row):
        cache = row.pop("measure_cache", None)
        row.pop("worker_pid", None)
        row["recipe"] = self.recipes.get(row["run_id"])
        self.store.add_result(row, cache)
        self.stored += 1
        self.finished += 1
        self._emit(config, row["status"], row["test_accuracy"], row["seconds"], worker=row.get("worker"))

    def _give_up(self, config, error: str) -> None:
        """A run failed in a way no retry fixes: record it; stop the sweep if nothing has worked yet."""
        self.store.add_failure(run_id(config), error)
        self.failed += 1
        self.finished += 1
        self._emit(config, "failed", None, None, error)
        if self.stored == 0:
            raise SparsetopoError(f"sweep stopped: {error}")

    def _retry(self, chunk, error) -> list[list[TrainConfig]]:
        """Count an attempt for each run of a failed chunk; return the runs to send again, one per task."""
        again = []
        for config in chunk:
            rid = run_id(config)
            attempts = self.store.add_failure(rid, error)
            if attempts < self.max_attempts:
                again.append([config])
                self._emit(config, "retry", None, None, error)
            else:
                self.failed += 1
                self.finished += 1
                self._emit(config, "failed", None, None, error)
        return again

    def _emit(self, config, status, accuracy, seconds, error=None, worker=None):
        if self.on_result is not None:
            self.on_result(RunEvent(run_id(config), config, status, accuracy, seconds, self.finished,
                                    self.total, error, worker, self.cpus))
