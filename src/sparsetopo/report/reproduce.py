"""The whole reproduction as one library call: a preset grid -> its store -> timings -> the report.

``reproduce("quick", "quick-report")`` runs (or resumes) the preset's sweep into
``OUT/sweep.sqlite``, times one epoch per backend and density one network at a time (the
timing figure and claim C8; a sweep's own clocks are shared by population members), and
writes the report (claims C1..C8, figures, protocol) into ``OUT``. The CLI's ``reproduce``
command only parses its options, calls this and prints the summary.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from sparsetopo.errors import SparsetopoError
from sparsetopo.report.build import ReportSummary, make_report

__all__ = ["ReproduceSummary", "reproduce"]


@dataclass
class ReproduceSummary:
    """What :func:`reproduce` did: the sweep's counts, the timings measured, the report written."""

    name: str                 # the preset's sweep name
    db: Path                  # the results store
    sweep: object             # sparsetopo.sweep.SweepSummary
    timings: pd.DataFrame     # one row per timed epoch (backend, density, seconds_per_epoch, ...)
    report: ReportSummary
    train_seconds: float      # wall time of the sweep
    seconds: float            # wall time of the whole call


def reproduce(preset: str = "quick", out=None, *, dataset: str | None = None, data_dir=None,
              executor: str = "process", workers: int | None = None, address: str | None = None, seed: int = 0,
              on_result: Callable | None = None, on_step: Callable[[str], None] | None = None,
              strict: bool = False) -> ReproduceSummary:
    """Run (or resume) preset ``preset`` into ``out/sweep.sqlite`` and write its report into ``out``.

    Parameters
    ----------
    preset : a name from :func:`sparsetopo.sweep.preset_names` (``quick``, ``paper``, ...).
    out : the output folder (default ``PRESET-report``); created if missing.
    dataset : train on this data set instead of the preset's (recorded as a departure).
    data_dir : folder holding IDX files of mnist / fashion-mnist.
    executor, workers, address : as :func:`sparsetopo.sweep.run_sweep` (default: local processes,
        all cores; ``address`` a Ray cluster, default ``RAY_ADDRESS``).
    seed : seeds the report's bootstrap intervals.
    on_result : per finished run, :class:`sparsetopo.sweep.RunEvent` (progress display).
    on_step : called with a short label before each later stage.
    strict : refuse a grid that trains a sparse construction fully connected (as
        :func:`sparsetopo.sweep.run_sweep`'s ``strict``); without it, a warning.

    Runs already stored are never trained again, so calling it again after an interruption
    resumes. Raises SparsetopoError for an unknown preset or data set, before anything is written.
    """
    from sparsetopo.data import dataset_names
    from sparsetopo.sweep import load_spec, preset_names, run_sweep
    from sparsetopo.sweep.runner import HugeGridError, OtherSweepError
    from sparsetopo.sweep.timing import measure_epoch_times

    step = on_step or (lambda label: None)
    if preset not in preset_names():
        raise SparsetopoError(f"preset {preset!r} is not a preset: choose one of {', '.join(preset_names())}")
    spec = load_spec(preset, data_dir=data_dir)
    if dataset is not None:
        if dataset not in dataset_names():
            raise SparsetopoError(f"dataset {dataset!r} is unknown: choose one of {', '.join(dataset_names())}")
        spec = dataclasses.replace(spec, protocol={**spec.protocol, "dataset": dataset},
                                   departures=(*spec.departures, f"Data set {dataset!r} chosen with --dataset."))
    out = Path(out) if out is not None else Path(f"{preset}-report")
    db = out / "sweep.sqlite"  # the store creates OUT: a refused grid leaves no empty folder behind
    started = time.perf_counter()
    try:
        sweep = run_sweep(spec, db, executor=executor, workers=workers, address=address, data_dir=data_dir,
                          on_result=on_result, strict=strict)
    except OtherSweepError:  # the runner's advice names sweep run's --add, which reproduce has not
        raise SparsetopoError(f"{db} holds the runs of another sweep, not of preset {preset!r}"
                              f"{' on ' + dataset if dataset else ''}: choose another --out for this "
                              "reproduction") from None
    except HugeGridError as exc:  # ... and --yes: start so big a grid as a sweep, then report on it
        raise SparsetopoError(f"{str(exc).split(':')[0]}: run it as a sweep, 'sparsetopo sweep run {preset} --db "
                              f"{db} --yes' (more --workers or --executor ray shorten it), then "
                              f"'sparsetopo report --db {db} --out {out}'") from None
    trained = time.perf_counter() - started
    timings = pd.DataFrame(columns=["backend"])
    if spec.protocol.get("architecture", "mlp") == "mlp":   # the backends' timings (C8) are the MLP's
        step("timing one epoch per backend and density, one network at a time")
        timings = measure_epoch_times(db, data_dir=data_dir)
    report = make_report(db, out, seed=seed, dataset=dataset, on_step=on_step)
    return ReproduceSummary(spec.name, db, sweep, timings, report, trained, time.perf_counter() - started)
