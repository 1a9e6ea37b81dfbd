"""``sparsetopo reproduce`` (grid -> store -> report) and ``sparsetopo report`` (store -> report)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from sparsetopo.cli.app import app
from sparsetopo.cli.cluster import ADDRESS, check_address_flag, cluster_faults
from sparsetopo.cli.progress import Progress, stage, step
from sparsetopo.cli.sweep import STRICT
from sparsetopo.sweep.spec import preset_names

EXECUTOR_NAMES = {"inline": "inline", "local": "process", "process": "process", "ray": "ray"}


def _print_summary(summary) -> None:
    for c in summary.claims:
        click.echo(f"  {c.id} {c.verdict:13s} {c.statement[:90]}")
    if summary.recipes is not None:   # several training recipes: each claim's verdict under each
        click.echo("claims per recipe (" + ", ".join(summary.recipes.recipes) + "):")
        for i, c in enumerate(summary.claims):
            verdicts = [summary.recipes.claims[r][i].verdict for r in summary.recipes.recipes]
            click.echo(f"  {c.id} " + " | ".join(verdicts))
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
    summary = make_report(db, out, seed=seed, dataset=dataset, on_step=step)
    _print_summary(summary)
    click.echo(f"report written in {time.perf_counter() - started:.0f} s")


@app.command(
    "reproduce",
    epilog="""\b
Examples:
  # the bundled digits, offline, a few minutes on 2 cores
  sparsetopo reproduce --preset quick --out quick-report
  # the paper's grid on MNIST (about 3000 networks: use many workers or Ray)
  sparsetopo reproduce --preset paper --out paper-report --executor ray --address head:6379
  # interrupted? the same command resumes: stored runs are never trained again
""",
)
@click.option("--preset", default="quick", show_default=True,
              help=f"Sweep preset: {', '.join(preset_names())} (see 'sparsetopo sweep presets').")
@click.option("--dataset", default=None, help="Train on this data set instead of the preset's.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the IDX files of mnist / fashion-mnist.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for sweep.sqlite and the report (default: PRESET-report).")
@click.option("--executor", type=click.Choice(["inline", "process", "ray", "local"]), default="process",
              show_default=True, help="This process, local processes (as in 'sweep run'; 'local' is the same), or Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel workers (default: all cores; on a Ray cluster, every CPU of it).")
@ADDRESS
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap intervals.")
@STRICT
def reproduce_command(preset, dataset, data_dir, out, executor, workers, address, seed, strict):
    """Run (or resume) a preset sweep into OUT/sweep.sqlite, then write the report into OUT.

    The report checks the paper's claims C1..C8 against the runs, remakes Figures 2-6, and
    lists every departure from the paper's protocol.
    """
    from sparsetopo.report import reproduce

    check_address_flag(EXECUTOR_NAMES[executor], address)
    with Progress("run", desc="training") as progress, cluster_faults():
        done = reproduce(preset, out, dataset=dataset, data_dir=data_dir, executor=EXECUTOR_NAMES[executor],
                         workers=workers, address=address, seed=seed, on_result=progress.on_run, on_step=stage,
                         strict=strict)
    sweep = done.sweep
    click.echo(f"{done.name}: {sweep.stored} runs trained, {sweep.skipped} already stored, "
               f"{sweep.failed} failed ({done.train_seconds:.0f} s) -> {done.db}")
    if len(done.timings):
        click.echo(f"timed {len(done.timings)} single epochs on backends {', '.join(sorted(set(done.timings['backend'])))}")
    _print_summary(done.report)
    click.echo(f"done in {done.seconds:.0f} s")
