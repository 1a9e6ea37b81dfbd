"""Sweeps: a grid of training runs from a TOML spec, run on any executor, stored in SQLite.

``run_sweep(spec_or_configs, db_path, executor="process", workers=None, on_result=None, ...)``
trains every run not yet stored; ``load_results(db)`` reads them back as a DataFrame.

Modules, one job each: :mod:`.spec` (TOML spec -> TrainConfigs and run ids), :mod:`.store`
(the SQLite file), :mod:`.worker` (what a worker does with a chunk), :mod:`.executors`
(in-process, local processes, Ray), :mod:`.runner` (the coordinator), :mod:`.dense` (blocks
that would train a sparse construction fully connected: a warning or, strict, a refusal),
:mod:`.measures` (graph measures for runs stored before :mod:`sparsetopo.spectral` was
available), :mod:`.timing` (one-network-at-a-time epoch timings for the report's timing figure and C8).
"""

from sparsetopo.sweep.dense import DenseGridError, DenseGridWarning, dense_cells
from sparsetopo.sweep.executors import EXECUTORS, InlineExecutor, ProcessExecutor, RayExecutor, make_executor
from sparsetopo.sweep.measures import backfill_measures
from sparsetopo.sweep.runner import RunEvent, SweepSummary, make_chunks, run_sweep
from sparsetopo.sweep.spec import SweepSpec, expand, load_spec, parse_spec, preset_names, run_id
from sparsetopo.sweep.store import MEASURE_COLUMNS, RUN_COLUMNS, SweepStore, export_results, load_results

__all__ = [
    "DenseGridError",
    "DenseGridWarning",
    "EXECUTORS",
    "InlineExecutor",
    "MEASURE_COLUMNS",
    "ProcessExecutor",
    "RUN_COLUMNS",
    "RayExecutor",
    "RunEvent",
    "backfill_measures",
    "SweepSpec",
    "SweepStore",
    "SweepSummary",
    "dense_cells",
    "expand",
    "export_results",
    "load_results",
    "load_spec",
    "make_chunks",
    "make_executor",
    "parse_spec",
    "preset_names",
    "run_id",
    "run_sweep",
]
