"""``sparsetopo explain``: which kernel each sparse layer of a saved model runs, and why."""

from __future__ import annotations

from pathlib import Path

import click

from sparsetopo.cli.app import app
from sparsetopo.errors import SparsetopoError


@app.command(
    "explain",
    epilog="""\b
Examples:
  sparsetopo explain mlp.safetensors --batch 1
  sparsetopo explain cnn.safetensors --batch 512
""",
)
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--batch", type=int, default=32, show_default=True, help="Examples per call to plan for.")
def explain_command(model_file, batch):
    """Print, per sparse layer of a model saved by sparsetopo.save, the path a training and an
    inference call on --batch examples take, the threads, and the cost model's numbers.

    MODEL_FILE is a safetensors file whose model sparsetopo can rebuild on its own (sparse
    layers in nn.Sequential, a SparseMLP); for a custom model class call
    sparsetopo.explain(model, batch_size=...) from Python.
    """
    if batch < 1:
        raise SparsetopoError(f"--batch {batch} must be a positive number of examples")
    if not model_file.is_file():
        raise SparsetopoError(f"{model_file}: no such file")
    from sparsetopo.io import load
    from sparsetopo.nn.explain import explain

    click.echo(str(explain(load(model_file), batch_size=batch)))
