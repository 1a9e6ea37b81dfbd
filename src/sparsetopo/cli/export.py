"""``sparsetopo export``: turn a model file written by ``sparsetopo.save`` into ONNX."""

from __future__ import annotations

from pathlib import Path

import click

from sparsetopo.cli.app import app
from sparsetopo.cli.parsing import INTS
from sparsetopo.errors import SparsetopoError


@app.command(
    "export",
    epilog="""\b
Examples:
  # a model saved with sparsetopo.save(model, "cnn.safetensors", input_shape=(1, 1, 28, 28))
  sparsetopo export cnn.safetensors --onnx cnn.onnx
  # the input shape was not recorded: give it (batch first; the batch size stays dynamic)
  sparsetopo export mlp.safetensors --onnx mlp.onnx --input-shape 1,784
  # the dense equivalent (pruned weights as zeros), for runtimes without the sparse forms
  sparsetopo export cnn.safetensors --onnx cnn.onnx --dense
""",
)
@click.argument("model_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the ONNX model.")
@click.option("--input-shape", type=INTS, default=None,
              help="Shape of one input batch, e.g. 1,1,28,28 (default: the shape recorded when it was saved).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset version.")
@click.option("--dense", is_flag=True, default=False,
              help="Write each sparse layer as the dense operator (pruned weights as zeros) instead of "
                   "the sparse forms.")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Run the ONNX model in onnxruntime on a seeded random input and report the largest "
                   "difference from the PyTorch model.")
def export_command(model_file, onnx_path, input_shape, opset, dense, check):
    """Write a saved sparse model as ONNX for inference, each sparse layer in a form whose
    bytes and work follow its connections (or dense with --dense).

    Prints, per sparse layer, the form chosen, its bytes in the file and the dense layer's
    bytes: "ell" gathers each output's inputs (used up to the batch size shown; larger batches
    run the dense MatMul on a weight onnxruntime rebuilds at load), "gathered" convolves only
    connected channel pairs, "expanded" stores the connections and rebuilds the dense weight
    at load (where the dense operator is faster), "dense" stores it dense.

    MODEL_FILE is a safetensors file written by sparsetopo.save whose model sparsetopo can
    rebuild on its own (sparse layers in nn.Sequential, a SparseMLP); for a custom model class
    call sparsetopo.export_onnx(model, path, input_shape=...) from Python.
    """
    import torch

    from sparsetopo.file_format import read_metadata
    from sparsetopo.io import load
    from sparsetopo.onnx import export_onnx, onnx_difference

    info = read_metadata(model_file)
    shape = list(input_shape) if input_shape else info.get("input_shape")
    if not shape:
        raise SparsetopoError(f"{model_file} records no input shape: give --input-shape, e.g. 1,1,28,28")
    model = load(model_file)
    result = export_onnx(model, onnx_path, input_shape=shape, opset=opset, dense=dense)
    for layer in result.layers:
        click.echo(f"  {layer.name or '<model>'} ({layer.kind}, density {layer.density:.3g}): {layer.describe()}, "
                   f"{layer.bytes} bytes (dense {layer.dense_bytes})")
    line = f"wrote {onnx_path} ({onnx_path.stat().st_size} bytes) from {model_file} ({len(info['layers'])} sparse layers)"
    if check:
        example = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        line += f"; onnxruntime vs PyTorch: max |difference| {onnx_difference(model, onnx_path, example):.2e}"
    click.echo(line)
