"""``sparsetopo reproduce`` (grid -> store -> report) and ``sparsetopo report`` (store -> report)."""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import click

from sparsetopo.cli.app import app
from sparsetopo.errors import SparsetopoError

EXECUTOR_NAMES = {"inline": "inline", "local": "process", "process": "process", "ray": "ray"}


class _RunBar:
    """on_result for run_sweep: a tqdm bar with ETA on a terminal (stderr); silent otherwise."""

    def __init__(self):
        self.bar = None

    def __enter__(self):
        return self.update

    def update(self, event):
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, unit="run", file=sys.stderr, dynamic_ncols=True, desc="training")
        self.bar.n = event.done
        acc = "" if event.test_accuracy is None else f"{event.test_accuracy:.3f}"
        self.bar.set_postfix_str(f"{event.config.construction} {event.status} {acc}", refresh=True)

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def _step(label: str) -> None:
    if sys.stderr.isatty():
        click.echo(f"report: {label}...", err=True)


def _print_summary(summary) -> None:
    for c in summary.claims:
        click.echo(f"  {c.id} {c.verdict:13s} {c.statement[:90]}")
    skipped = [f.name for f in summary.figures if f.skipped]
    made = len(summary.figures) - len(skipped)
    click.echo(f"{made} figures" + (f" ({len(skipped)} skipped: {', '.join(skipped)})" if skipped else "")
               + f" -> {summary.paths['report.html']}")


@app.command(
    "report",
    epilog="""\b
Examples:
  sparsetopo report --db quick-report/sweep.sqlite --out quick-report
  sparsetopo report --db paper.sqlite --out paper-report --dataset mnist
""",
)
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The results store a sweep wrote (SQLite).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for report.html, report.md, claims.json and the figures.")
@click.option("--dataset", default=None, help="Analyse this data set only (default: the one with most runs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
def report_command(db, out, dataset, seed):
    """Remake the report (claims C1..C8, figures, protocol) from an existing results store."""
    from sparsetopo.report import make_report

    started = time.perf_counter()
    summary = make_report(db, out, seed=seed, dataset=dataset, on_step=_step)
    _print_summary(summary)
    click.echo(f"report written in {time.perf_counter() - started:.0f} s")


@app.command(
    "reproduce",
    epilog="""\b
Examples:
  # the bundled digits, offline, a few minutes on 2 cores
  sparsetopo reproduce --preset quick --out quick-report
  # the paper's grid on MNIST (about 3000 networks: use many workers or Ray)
  sparsetopo reproduce --preset paper --out paper-report --executor ray
  # interrupted? the same command resumes: stored runs are never trained again
""",
)
@click.option("--preset", default="quick", show_default=True, help="Sweep preset: quick or paper.")
@click.option("--dataset", default=None, help="Train on this data set instead of the preset's.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the IDX files of mnist / fashion-mnist.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for sweep.sqlite and the report (default: PRESET-report).")
@click.option("--executor", type=click.Choice(["inline", "local", "ray"]), default="local", show_default=True,
              help="This process, local processes, or Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Parallel workers (default: all cores).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
def reproduce_command(preset, dataset, data_dir, out, executor, workers, seed):
    """Run (or resume) a preset sweep into OUT/sweep.sqlite, then write the report into OUT.

    The report checks the paper's claims C1..C8 against the runs, remakes Figures 2-6, and
    lists every departure from the paper's protocol.
    """
    from sparsetopo.report import make_report
    from sparsetopo.sweep import load_spec, preset_names, run_sweep

    if preset not in preset_names():
        raise SparsetopoError(f"--preset {preset!r} is not a preset: choose one of {', '.join(preset_names())}")
    out = out if out is not None else Path(f"{preset}-report")
    spec = load_spec(preset, data_dir=data_dir)
    if dataset is not None:
        from sparsetopo.data import dataset_names

        if dataset not in dataset_names():
            raise SparsetopoError(f"--dataset {dataset!r} is unknown: choose one of {', '.join(dataset_names())}")
        spec = dataclasses.replace(spec, protocol={**spec.protocol, "dataset": dataset},
                                   departures=(*spec.departures, f"Data set {dataset!r} chosen with --dataset."))
    out.mkdir(parents=True, exist_ok=True)
    db = out / "sweep.sqlite"
    started = time.perf_counter()
    with _RunBar() as on_result:
        summary = run_sweep(spec, db, executor=EXECUTOR_NAMES[executor], workers=workers, data_dir=data_dir,
                            on_result=on_result)
    trained = time.perf_counter() - started
    click.echo(f"{spec.name}: {summary.stored} runs trained, {summary.skipped} already stored, "
               f"{summary.failed} failed ({trained:.0f} s) -> {db}")
    from sparsetopo.sweep.timing import measure_epoch_times

    _step("timing one epoch per backend and density, one network at a time")
    timings = measure_epoch_times(db, data_dir=data_dir)
    click.echo(f"timed {len(timings)} single epochs on backends {', '.join(sorted(set(timings['backend'])))}")
    report = make_report(db, out, seed=seed, dataset=dataset, on_step=_step)
    _print_summary(report)
    click.echo(f"done in {time.perf_counter() - started:.0f} s")
