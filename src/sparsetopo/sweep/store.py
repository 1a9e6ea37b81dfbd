"""The results store of one sweep: a single SQLite file in WAL mode.

Only the coordinator process writes (workers return plain dicts), and each finished run is
one transaction that inserts its row under its ``run_id`` primary key. A coordinator killed at
any moment therefore leaves every committed run intact and none half-written, and running
the sweep again skips what is stored: each run ends up stored exactly once.

Tables
------
runs : one row per finished run (:data:`RUN_COLUMNS`): flattened config, final metrics, the
    per-epoch history and weight statistics (JSON), first/last-layer weight statistics as flat
    columns, graph measures (``metrics`` JSON plus flat :data:`MEASURE_COLUMNS`).
planned : the expanded run list (run_id, position, config JSON), written before any run
    starts, so that ``sweep status`` knows what remains.
failed : runs whose last attempt raised (run_id, error, attempts); a run leaves it when it
    succeeds.
graph_measures : graph measures per topology, keyed by ``Topology.fingerprint`` (and by a
    fingerprint of the layer list for whole networks), so each graph is measured once.
meta : key/value text (the spec, its departures from the paper's protocol, worker count).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Callable, Iterable

from sparsetopo.atomic import make_parent
from sparsetopo.errors import SparsetopoError, pip_install

__all__ = ["RUN_COLUMNS", "MEASURE_COLUMNS", "SweepStore", "check_store", "connect_readonly", "is_new_store",
           "export_results", "load_results"]


def _layer0(name):
    return lambda m: (m.get("layers") or [{}])[0].get(name)


def _network(name):
    return lambda m: (m.get("network") or {}).get(name)


#: Flat graph-measure columns: column name -> function of the run's ``metrics`` JSON
#: (``{"layers": [per-layer dict, ...], "network": dict}``). Add an entry to get a new column;
#: it is added to existing stores when they are opened and filled by ``backfill_measures``.
MEASURE_COLUMNS: dict[str, Callable[[dict], float | None]] = {
    "alg_conn_in": _layer0("algebraic_connectivity"),
    "spectral_gap_in": _layer0("spectral_gap"),
    "alg_conn_net": _network("algebraic_connectivity"),
    "spectral_gap_net": _network("spectral_gap"),
}

#: Columns of the ``runs`` table, in order, with their SQLite types.
RUN_COLUMNS: dict[str, str] = {
    "run_id": "TEXT PRIMARY KEY",
    "position": "INTEGER",          # index in the planned run list
    # the config, flattened
    "dataset": "TEXT",
    "hidden": "TEXT",               # "500,300"
    "hidden1": "INTEGER",           # first hidden size
    "n_hidden_layers": "INTEGER",
    "construction": "TEXT",
    "construction_version": "INTEGER",
    "degrees": "TEXT",              # per-layer degree as built, "30,10"
    "k_in": "INTEGER",              # first layer's degree (output blocks per input block with block > 1)
    "k_out": "INTEGER",             # last layer's degree
    "density_in": "REAL",           # k_in / first layer's outputs (its connections / n_in * n_out with block > 1)
    "density": "REAL",              # connections / connections of the dense network
    "connections": "INTEGER",
    "dropout_in": "REAL",
    "dropout_hidden": "REAL",
    "epochs": "INTEGER",
    "batch_size": "INTEGER",
    "lr": "REAL",
    "momentum": "REAL",
    "activation": "TEXT",
    "init": "TEXT",
    "backend": "TEXT",              # what computed the run: engine/kernel, e.g. "fused-population/sparse"
    "requested_backend": "TEXT",    # the config's backend: masked, sparse or auto
    "device": "TEXT",               # where it computed: cpu, cuda, ...
    "seed": "INTEGER",
    "limit_train": "INTEGER",
    "loss": "TEXT",                 # mse | cross_entropy (train.recipe)
    "optimizer": "TEXT",            # sgd_nesterov | adam
    "lr_schedule": "TEXT",          # constant | cosine
    "validation_fraction": "REAL",  # training examples held out for validation
    "early_stop": "INTEGER",        # patience in epochs (0: none)
    "recipe": "TEXT",               # the spec's recipe name ([recipes.NAME]); NULL without one
    "permute_inputs": "INTEGER",    # seed of the input features' permutation; NULL: their own order
    "block": "INTEGER",             # neurons per block (1: the paper's layers; NULL: stored before blocks)
    # outcome
    "status": "TEXT",               # ok | diverged
    "reason": "TEXT",               # why a run diverged (train.divergence); empty when ok
    "test_accuracy": "REAL",
    "train_loss": "REAL",           # last epoch's mean training loss
    "epochs_done": "INTEGER",
    "parameters": "INTEGER",
    "seconds": "REAL",
    "seconds_per_epoch": "REAL",
    "history": "TEXT",              # JSON list of per-epoch records
    "weight_stats": "TEXT",         # JSON list of per-layer {max, min, mean, std, nnz}
    "w0_max": "REAL", "w0_min": "REAL", "w0_mean": "REAL", "w0_std": "REAL",
    "wlast_max": "REAL", "wlast_min": "REAL", "wlast_mean": "REAL", "wlast_std": "REAL",
    "layers": "TEXT",               # JSON list of per-layer topology provenance (incl. fingerprint)
    "config": "TEXT",               # JSON of the TrainConfig
    "metrics": "TEXT",              # JSON graph measures, NULL until sparsetopo.spectral is available
    **{name: "REAL" for name in MEASURE_COLUMNS},
    "trained_with": "TEXT",         # "train" or "population"
    "attempts": "INTEGER",
    "worker": "TEXT",               # host:pid that trained it
    "finished_at": "REAL",          # unix time the coordinator stored it
}

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS runs ({})".format(", ".join(f"{k} {v}" for k, v in RUN_COLUMNS.items())),
    "CREATE TABLE IF NOT EXISTS planned (run_id TEXT PRIMARY KEY, position INTEGER, config TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS failed (run_id TEXT PRIMARY KEY, error TEXT, attempts INTEGER NOT NULL, "
    "last_at REAL)",
    "CREATE TABLE IF NOT EXISTS graph_measures (fingerprint TEXT PRIMARY KEY, measures TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
]


#: Tables every sparsetopo sweep store has; a file without them is someone else's.
STORE_TABLES = ("runs", "planned", "meta")


def connect_readonly(path) -> sqlite3.Connection:
    """A connection that can neither change ``path`` nor create files beside it.

    ``immutable=1`` when no write-ahead log exists (no writer is active: nothing beside the file
    is created); ``mode=ro`` when one does (a running or killed writer left committed pages in
    it, which must be read, and its ``-shm`` file exists already).
    """
    path = Path(path).resolve()
    flag = "mode=ro" if Path(f"{path}-wal").exists() else "immutable=1"
    return sqlite3.connect(f"{path.as_uri()}?{flag}", uri=True, timeout=30)


def check_store(path, flag: str = "--db") -> Path:
    """Return ``path`` if it is an existing sparsetopo sweep store; raise SparsetopoError naming
    it otherwise (missing, not SQLite, or SQLite without a store's tables). Never writes."""
    path = Path(path)
    if not path.is_file():
        raise SparsetopoError(f"{flag} {path}: no such sweep store; run 'sparsetopo sweep run SPEC "
                              f"{flag} {path}' first")
    try:
        tables = {name for kind, name in _schema(path) if kind == "table"}
    except sqlite3.DatabaseError as exc:
        raise SparsetopoError(f"{flag} {path} is not a sparsetopo sweep store ({exc}); give the .sqlite "
                              f"file a sweep wrote") from None
    if not set(STORE_TABLES) <= tables:
        found = f"its tables are {', '.join(sorted(tables))}" if tables else "it is empty"
        raise SparsetopoError(f"{flag} {path} is not a sparsetopo sweep store ({found}); give the .sqlite "
                              f"file a sweep wrote, or a new file name")
    return path


def is_new_store(path) -> bool:
    """Whether ``sweep run`` makes ``path`` a new store: it is missing, empty, or an SQLite file
    holding no table, index or view at all. The last is what a store's creation leaves when
    Ctrl-C or a kill lands between writing the file's header and committing its tables; it holds
    nothing to protect. Any other file must already be a store."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return True
    try:
        return not _schema(path)
    except sqlite3.DatabaseError:
        return False


def _schema(path) -> list[tuple[str, str]]:
    """(type, name) of every table, index, view and trigger of the SQLite file ``path``, read
    without changing it; sqlite3.DatabaseError when it is not SQLite."""
    con = connect_readonly(path)
    try:
        return con.execute("SELECT type, name FROM sqlite_master").fetchall()
    finally:
        con.close()


class SweepStore:
    """Access to one sweep's SQLite file. Use one instance in one process.

    ``create=True`` (``sweep run``): a missing or empty file, or an SQLite file without a single
    table (a creation that was interrupted), becomes a store (:func:`is_new_store`); any other
    file must already be one (a user's other database is never touched). ``create=False``: the store must
    exist (``sweep measures``). ``readonly=True``: the store must exist and is opened so that
    neither it nor its folder changes (``status``, ``export``, ``report``).
    """

    def __init__(self, path, create: bool = True, readonly: bool = False):
        self.path = Path(path)
        if readonly or not create or not is_new_store(self.path):
            check_store(self.path)
        if readonly:
            self.db = connect_readonly(self.path)
            return
        make_parent(self.path)
        fresh = not self.path.exists()
        try:
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: commits survive a killed process
            with self.transaction():
                for statement in _SCHEMA:
                    self.db.execute(statement)
                have = {row[1] for row in self.db.execute("PRAGMA table_info(runs)")}
                for name, kind in RUN_COLUMNS.items():
                    if name not in have:  # a store written by an older version: add the new columns
                        self.db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError):  # the file could not be written: a full disk, ...
                if fresh:  # leave nothing half-made behind
                    if hasattr(self, "db"):
                        self.db.close()
                    for suffix in ("", "-wal", "-shm", "-journal"):
                        Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                raise SparsetopoError(f"--db {self.path}: the store could not be written ({exc}): check the free "
                                      "space and permissions of its folder, or choose another --db") from None
            raise SparsetopoError(f"--db {self.path}: not a sweep store ({exc}); choose another file") from None

    # -- plumbing ------------------------------------------------------------------------------
    def transaction(self):
        return _Transaction(self.db)

    def close(self) -> None:
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plan and meta -------------------------------------------------------------------------
    def plan(self, entries: Iterable[tuple[str, dict]], meta: dict | None = None) -> None:
        """Record the run list ``[(run_id, config_dict), ...]`` (runs already planned are kept)."""
        with self.transaction():
            start = self.db.execute("SELECT COALESCE(MAX(position) + 1, 0) FROM planned").fetchone()[0]
            for offset, (rid, config) in enumerate(entries):
                self.db.execute("INSERT OR IGNORE INTO planned VALUES (?, ?, ?)",
                                (rid, start + offset, json.dumps(config, sort_keys=True)))
            for key, value in (meta or {}).items():
                self.set_meta(key, value)

    def set_meta(self, key: str, value) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def meta(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM meta")}

    def planned(self) -> list[tuple[str, dict]]:
        rows = self.db.execute("SELECT run_id, config FROM planned ORDER BY position")
        return [(rid, json.loads(config)) for rid, config in rows]

    def done_ids(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT run_id FROM runs")}

    def failed_attempts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT run_id, attempts FROM failed"))

    # -- results -------------------------------------------------------------------------------
    def add_result(self, row: dict, measure_cache: dict | None = None) -> bool:
        """Store one finished run (one transaction); False when it was already stored."""
        row = dict(row)
        if row.get("metrics") is not None:
            row.update(_flat_measures(row["metrics"]))
            row["metrics"] = json.dumps(row["metrics"])
        with self.transaction():
            previous = self.db.execute("SELECT attempts FROM failed WHERE run_id = ?", (row["run_id"],)).fetchone()
            row["attempts"] = (previous[0] if previous else 0) + 1
            row["finished_at"] = time.time()
            planned = self.db.execute("SELECT position FROM planned WHERE run_id = ?", (row["run_id"],)).fetchone()
            row["position"] = planned[0] if planned else None
            names = [name for name in RUN_COLUMNS if name in row]
            cursor = self.db.execute(
                f"INSERT OR IGNORE INTO runs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [row[name] for name in names])
            self.db.execute("DELETE FROM failed WHERE run_id = ?", (row["run_id"],))
            self._cache_measures(measure_cache)
        return cursor.rowcount == 1

    def add_failure(self, run_id: str, error: str) -> int:
        """Count one failed attempt of ``run_id``; return its attempts so far."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO failed VALUES (?, ?, 1, ?) ON CONFLICT(run_id) DO UPDATE SET "
                "attempts = attempts + 1, error = excluded.error, last_at = excluded.last_at",
                (run_id, error, time.time()))
            return self.db.execute("SELECT attempts FROM failed WHERE run_id = ?", (run_id,)).fetchone()[0]

    def cached_measures(self, fingerprint: str) -> dict | None:
        row = self.db.execute("SELECT measures FROM graph_measures WHERE fingerprint = ?", (fingerprint,)).fetchone()
        return None if row is None else json.loads(row[0])

    def set_metrics(self, run_id: str, metrics: dict, measure_cache: dict | None = None) -> None:
        """Fill a stored run's graph measures (``metrics`` and the flat columns)."""
        flat = _flat_measures(metrics)
        with self.transaction():
            self.db.execute(
                f"UPDATE runs SET metrics = ?, {', '.join(f'{n} = ?' for n in flat)} WHERE run_id = ?",
                [json.dumps(metrics), *flat.values(), run_id])
            self._cache_measures(measure_cache)

    def _cache_measures(self, measure_cache: dict | None) -> None:
        """Keep each graph's measures (fingerprint -> measures) unless it is already cached."""
        for fingerprint, measures in (measure_cache or {}).items():
            self.db.execute("INSERT OR IGNORE INTO graph_measures VALUES (?, ?)", (fingerprint, json.dumps(measures)))

    # -- progress ------------------------------------------------------------------------------
    def status(self) -> dict:
        """Counts of the planned runs: done, failed (not done, last attempt raised), remaining.

        ``eta_seconds`` = remaining runs x mean stored seconds per run / ``workers``, the CPUs
        the last ``sweep run`` used (on a Ray cluster: as last read; None before the first result).
        """
        q = lambda sql: self.db.execute(sql).fetchone()[0]  # noqa: E731
        planned = q("SELECT COUNT(*) FROM planned")
        done = q("SELECT COUNT(*) FROM runs WHERE run_id IN (SELECT run_id FROM planned)")
        failed = q("SELECT COUNT(*) FROM failed WHERE run_id NOT IN (SELECT run_id FROM runs) "
                   "AND run_id IN (SELECT run_id FROM planned)")
        remaining = planned - done - failed
        mean = self.db.execute("SELECT AVG(seconds) FROM runs").fetchone()[0]
        workers = max(1, int(self.meta().get("workers", 1) or 1))
        eta = None if mean is None else remaining * mean / workers
        return {"planned": planned, "done": done, "failed": failed, "remaining": remaining,
                "eta_seconds": None if eta is None else round(eta, 1), "workers": workers}

    def integrity_check(self) -> str:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0]


def _flat_measures(metrics: dict) -> dict:
    """The :data:`MEASURE_COLUMNS` values of a run's ``metrics``."""
    return {name: fn(metrics) for name, fn in MEASURE_COLUMNS.items()}


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rollback on error); nests as a no-op."""

    def __init__(self, db):
        self.db = db
        self.outer = False

    def __enter__(self):
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self.db

    def __exit__(self, kind, value, tb):
        if self.outer:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def load_results(db) -> "pandas.DataFrame":  # noqa: F821
    """All stored runs of a sweep store as a DataFrame (one row per run, ``run_id`` included).

    JSON columns (``history``, ``weight_stats``, ``layers``, ``config``, ``metrics``) stay text;
    ``json.loads`` them when needed. Rows are in planned order.
    """
    import pandas as pd

    con = connect_readonly(check_store(db))
    try:
        return pd.read_sql_query("SELECT * FROM runs ORDER BY position, run_id", con)
    finally:
        con.close()


def export_results(db, csv=None, parquet=None) -> int:
    """Write the runs table to CSV and/or Parquet; return the number of rows written."""
    if csv is None and parquet is None:
        raise SparsetopoError("nothing to export: give --csv FILE and/or --parquet FILE")
    if parquet is not None:  # before anything is written
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise SparsetopoError(f"--parquet needs pyarrow: {pip_install('parquet')}; or use --csv") from None
    frame = load_results(db)
    from sparsetopo.atomic import atomic_path, check_writable

    for target in (csv, parquet):  # both locations before either file is written
        if target is not None:
            check_writable(target)
    if csv is not None:
        with atomic_path(csv) as tmp:
            frame.to_csv(tmp, index=False)
    if parquet is not None:
        with atomic_path(parquet) as tmp:
            frame.to_parquet(tmp, index=False)
    return len(frame)
