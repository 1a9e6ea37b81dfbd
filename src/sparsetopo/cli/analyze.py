"""``sparsetopo analyze``: correlation of graph measures with accuracy over a sweep's runs."""

from __future__ import annotations

from pathlib import Path

import click

from sparsetopo.atomic import atomic_path
from sparsetopo.cli.app import app
from sparsetopo.errors import SparsetopoError


@app.command(
    "analyze",
    epilog="""\b
Examples:
  sparsetopo analyze --db quick-report/sweep.sqlite
  sparsetopo analyze --db runs.sqlite --out analysis --seed 1
""",
)
@click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The sweep's SQLite store.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
              help="Folder for correlations.csv and correlations.png/.pdf.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resampling.")
def analyze_command(db, out, seed):
    """Pearson and Spearman correlation of each graph measure with test accuracy.

    Over all runs, per construction and per hidden size, each with a 95% bootstrap
    interval; density is listed beside the spectral measures for comparison (the paper's
    Section 4.5 claims accuracy follows connectivity rather than density).
    """
    if not db.is_file():
        raise SparsetopoError(f"--db {db}: no such store; run 'sparsetopo sweep run' or 'sparsetopo reproduce' first")
    from sparsetopo.report.correlations import correlations, plot_correlations
    from sparsetopo.report.formats import interval, number
    from sparsetopo.sweep import load_results

    runs = load_results(db)
    if runs.empty or not (runs["status"] == "ok").any():
        raise SparsetopoError(f"--db {db} holds no finished runs to analyse")
    table = correlations(runs, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "correlations.csv") as tmp:
        table.to_csv(tmp, index=False)
    plot_correlations(table, out / "correlations")
    everything = table[table["scope"] == "all"]
    click.echo(f"{len(runs)} runs in {db}; correlation with test accuracy over all runs (95% CI):")
    for row in everything.itertuples():
        click.echo(f"  {row.measure:36s} n={row.n:4d}  pearson {number(row.pearson):>6s} "
                   f"{interval(row.pearson_low, row.pearson_high):17s}  spearman {number(row.spearman):>6s} "
                   f"{interval(row.spearman_low, row.spearman_high)}")
    click.echo(f"-> {out / 'correlations.csv'}, {out / 'correlations.png'}")
