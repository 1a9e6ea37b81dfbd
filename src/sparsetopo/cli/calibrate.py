"""``sparsetopo calibrate``: this machine's batch-1 inference costs, for backend="auto"."""

from __future__ import annotations

import json
from pathlib import Path

import click

from sparsetopo.cli.app import app
from sparsetopo.errors import SparsetopoError

MAX_SECONDS = 60.0


@app.command(
    "calibrate",
    epilog="""\b
Examples:
  sparsetopo calibrate --out ~/.config/sparsetopo/inference-costs.json
  export SPARSETOPO_INFERENCE_COSTS=~/.config/sparsetopo/inference-costs.json
""",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="JSON file to write (replaced whole, or left as it was if the run stops).")
@click.option("--seconds", type=float, default=0.2, show_default=True,
              help=f"Timed seconds per side at each of the 9 layers (at most {MAX_SECONDS:g}).")
def calibrate_command(out, seconds):
    """Time one example through the dense and the sparse path of 9 layers on this machine, fit
    the two batch-1 cost lines, and write them to --out.

    A layer built with backend="auto" runs batch-1 inference on whichever path the lines predict
    faster; the shipped lines come from one machine, and this crossover moves most between CPUs.
    Set SPARSETOPO_INFERENCE_COSTS to the file in the environment of the processes that should
    use it (the choice is then fixed by the file). Training is unaffected: these lines choose
    between paths of the same weights. Timed on this process's threads (torch's default; set
    OMP_NUM_THREADS as your workload will).
    """
    if not 0 < seconds <= MAX_SECONDS:
        raise SparsetopoError(f"--seconds {seconds:g} is outside (0, {MAX_SECONDS:g}]: give the timed seconds "
                              "per side and layer, e.g. 0.2")
    from sparsetopo.atomic import atomic_path
    from sparsetopo.nn.calibration import calibrate
    from dataclasses import replace

    from sparsetopo.nn.plan import CPU_COST_MODEL, INFERENCE_COSTS_ENV

    result = calibrate(seconds)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=1) + "\n")
    measured = replace(CPU_COST_MODEL, **result["costs"])   # as plan.inference_cost_model builds it
    click.echo(f"{'layer':>10}  {'density':>7}  {'dense us':>8}  {'sparse us':>9}")
    for p in result["points"]:
        click.echo(f"{p['n_in']:>4}x{p['n_out']:<5}  {p['nnz'] / (p['n_in'] * p['n_out']):>7.3f}  "
                   f"{p['dense_s'] * 1e6:>8.1f}  {p['sparse_s'] * 1e6:>9.1f}")
    shapes = sorted({(p["n_in"], p["n_out"]) for p in result["points"]})
    click.echo("batch-1 crossover density (sparse below it): "
               + ", ".join(f"{a}x{b} {measured.inference_crossover_density(a, b):.3f} "
                           f"(shipped {CPU_COST_MODEL.inference_crossover_density(a, b):.3f})" for a, b in shapes))
    click.echo(f"wrote {out}; use it with: export {INFERENCE_COSTS_ENV}={out.resolve()}")
