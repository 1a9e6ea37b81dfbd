"""``sparsetopo sweep``: run a grid of networks from a TOML spec, follow it, export its results."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sparsetopo.cli.app import app
from sparsetopo.cli.cluster import ADDRESS, check_address_flag, cluster_faults
from sparsetopo.cli.progress import Progress, duration
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep.runner import HUGE_RUNS

STRICT = click.option(
    "--strict", is_flag=True,
    help="Refuse a spec that trains a sparse construction with every layer fully connected (no degrees "
         "given); without it, a warning.")
DB = click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True,
                  help="The sweep's SQLite store (one file per sweep).")


@app.group(
    "sweep",
    epilog="""\b
Examples:
  sparsetopo sweep presets
  sparsetopo sweep run quick --db quick.sqlite            # all cores, resumable
  sparsetopo sweep status --db quick.sqlite
  sparsetopo sweep export --db quick.sqlite --csv quick.csv --parquet quick.parquet
""",
)
def sweep_group():
    """Run grids of networks (a TOML spec or a preset), resumably, into one SQLite store.

    Each run's id is a hash of its config and its constructions' versions; a run already in
    the store is never trained again, so a killed sweep resumes with the same command.
    """


@sweep_group.command(
    "run",
    epilog="""\b
Examples:
  # the bundled-digits preset on every core (kill it any time; the same command resumes)
  sparsetopo sweep run quick --db quick.sqlite
  # your own spec on 8 local processes, 4 runs per task
  sparsetopo sweep run my_grid.toml --db my_grid.sqlite --workers 8 --chunk-size 4
  # the paper's grid on a Ray cluster, every CPU of it (from a node, or ray://head:10001)
  sparsetopo sweep run paper --db paper.sqlite --executor ray --address head:6379
  # in-process, for debugging
  sparsetopo sweep run my_grid.toml --db debug.sqlite --executor inline
""",
)
@click.argument("spec", metavar="SPEC")
@DB
@click.option("--executor", type=click.Choice(["process", "inline", "ray"]), default="process", show_default=True,
              help="Local processes, this process (debugging) or Ray.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Parallel workers (default: all cores); Ray's num_cpus for a local Ray; on a Ray cluster the "
                   "most tasks at once (default: every CPU of the cluster, nodes that join included).")
@ADDRESS
@click.option("--chunk-size", type=click.IntRange(min=1), default=None,
              help="Runs per task (default: sized so a task lasts a few seconds).")
@click.option("--no-population", "no_population", is_flag=True,
              help="Train every network on its own instead of stacking networks of the same shape.")
@click.option("--no-measures", "no_measures", is_flag=True, help="Skip graph measures (spectral gap, ...).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Tries per run before it is left in the failed table.")
@click.option("--retry-failed", is_flag=True, help="Try runs that used up their attempts in an earlier call again.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder holding the IDX files of mnist / fashion-mnist.")
@click.option("--dry-run", is_flag=True, help="Validate the spec and print how many runs it has; train nothing.")
@click.option("--add", is_flag=True,
              help="Put this spec's runs into a store made from another spec (the store keeps both specs).")
@click.option("--yes", is_flag=True, help=f"Start a grid above {HUGE_RUNS:,} runs or a projected week without asking.")
@STRICT
def run_command(spec, db, executor, workers, address, chunk_size, no_population, no_measures, max_attempts,
                retry_failed, data_dir, dry_run, add, yes, strict):
    """Train every run of SPEC that is not in --db yet.

    SPEC is a TOML file or a preset name (see 'sparsetopo sweep presets'). The whole spec is
    checked before anything runs. Progress: a bar with ETA on a terminal, else one line per run.
    """
    from sparsetopo.sweep import expand, load_spec, run_sweep
    from sparsetopo.sweep.dense import check_dense

    parsed = load_spec(spec, data_dir=data_dir)
    if dry_run:
        check_dense(parsed, strict, data_dir)   # a real run warns from run_sweep
        configs = expand(parsed, data_dir=data_dir)
        click.echo(f"{parsed.name}: {len(configs)} runs in {len(parsed.blocks)} blocks "
                   f"({', '.join(name for name, _ in parsed.blocks)}); nothing trained")
        return
    check_address_flag(executor, address)
    with Progress("run") as progress, cluster_faults():
        summary = run_sweep(parsed, db, executor=executor, workers=workers, address=address,
                            chunk_size=chunk_size, population=not no_population, measures=not no_measures,
                            max_attempts=max_attempts, retry_failed=retry_failed, data_dir=data_dir,
                            on_result=progress.on_run, add=add, allow_huge=yes, strict=strict)
    click.echo(f"{parsed.name}: {summary.stored} runs stored, {summary.skipped} already done, "
               f"{summary.failed} failed ({summary.seconds:.0f} s) -> {db}")
    if summary.failed:
        click.echo(f"see 'sparsetopo sweep status --db {db}' for the errors; --retry-failed tries them again",
                   err=True)


@sweep_group.command(
    "status",
    epilog="""\b
Examples:
  sparsetopo sweep status --db quick.sqlite
  sparsetopo sweep status --db quick.sqlite --json
""",
)
@DB
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: planned, done, failed, remaining, eta_seconds and workers (the CPUs "
                   "the last 'sweep run' used, which the ETA divides by).")
def status_command(db, as_json):
    """Show how many runs are done, failed and remaining, with an estimated time left."""
    from sparsetopo.sweep import SweepStore

    with SweepStore(db, readonly=True) as store:
        info = store.status()
        errors = store.db.execute("SELECT run_id, attempts, error FROM failed WHERE run_id NOT IN "
                                  "(SELECT run_id FROM runs) ORDER BY last_at DESC LIMIT 5").fetchall()
        name = store.meta().get("spec", {}).get("name", db.stem)
    if as_json:
        click.echo(json.dumps(info))
        return
    eta = "unknown" if info["eta_seconds"] is None else duration(info["eta_seconds"])
    cpus = f" on {info['workers']} CPUs" if info.get("workers") else ""
    click.echo(f"{name}: {info['done']} done, {info['failed']} failed, {info['remaining']} remaining "
               f"of {info['planned']} planned; ETA {eta}{cpus}")
    for rid, attempts, error in errors:
        last = (error or "").strip().splitlines()[-1:] or [""]
        click.echo(f"  failed {rid} after {attempts} attempt(s): {last[0]}")


@sweep_group.command(
    "export",
    epilog="""\b
Examples:
  sparsetopo sweep export --db quick.sqlite --csv quick.csv
  sparsetopo sweep export --db quick.sqlite --parquet quick.parquet
""",
)
@DB
@click.option("--csv", "csv", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write a CSV file.")
@click.option("--parquet", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a Parquet file (needs pyarrow).")
def export_command(db, csv, parquet):
    """Write the stored runs (one row each, keyed by run_id) to CSV and/or Parquet."""
    from sparsetopo.sweep import export_results

    if not Path(db).is_file():
        raise SparsetopoError(f"--db {db}: no such sweep store; check the path")
    for option, path in (("--csv", csv), ("--parquet", parquet)):
        if path is not None and not path.parent.is_dir():  # a typo should not create folders
            raise SparsetopoError(f"{option} {path}: the folder {path.parent} does not exist; create it first")
    n = export_results(db, csv=csv, parquet=parquet)
    click.echo(f"{n} runs -> {', '.join(str(p) for p in (csv, parquet) if p is not None)}")


@sweep_group.command(
    "measures",
    epilog="""\b
Examples:
  sparsetopo sweep measures --db quick.sqlite
""",
)
@DB
def measures_command(db):
    """Compute graph measures (spectral gap, algebraic connectivity) for stored runs lacking them."""
    from sparsetopo.sweep import backfill_measures

    click.echo(f"graph measures filled for {backfill_measures(db)} runs in {db}")


@sweep_group.command("presets", epilog="\b\nExamples:\n  sparsetopo sweep presets\n")
def presets_command():
    """List the sweep specs shipped with sparsetopo and their sizes."""
    from sparsetopo.sweep import expand, load_spec, preset_names

    names = preset_names()
    width = max(map(len, names))
    for name in names:
        spec = load_spec(name)
        click.echo(f"{name:{width}s} {len(expand(spec)):5d} runs  {spec.description}")
