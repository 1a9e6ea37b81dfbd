"""The front end of the ONNX export: :func:`export_onnx`, its argument checks, the dense
export, and :func:`onnx_difference`, a model against onnxruntime's run of its file.

onnx and onnxruntime are optional: ``pip install 'sparsetopo[io]'``.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.file_format import batch_shape, require
from sparsetopo.nn.sparsify import MADE_LAYERS
from sparsetopo.onnx.result import dense_summary
from sparsetopo.onnx.sparse import export_sparse
from sparsetopo.onnx.trace import trace_to_onnx


def dense_equivalent(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every sparse layer is the dense torch layer computing the
    same function (pruned weights as zeros): what ONNX and other exporters can trace."""
    dense = copy.deepcopy(model)
    replaced: dict[int, nn.Module] = {}
    for path, module in list(dense.named_modules(remove_duplicate=False)):
        if isinstance(module, MADE_LAYERS):
            new = replaced.setdefault(id(module), module.to_dense())
            if path == "":
                return new
            parent, _, attr = path.rpartition(".")
            setattr(dense.get_submodule(parent) if parent else dense, attr, new)
    return dense


def export_onnx(model: nn.Module, path, *, input_shape=None, example_input: torch.Tensor | None = None,
                opset: int = 17, dense: bool = False):
    """Write ``model`` as an ONNX graph that onnxruntime runs with the same outputs.

    Give the shape of one input batch (``input_shape``) or an example input; the batch
    dimension is exported as dynamic. The model runs in eval mode (no dropout). Each sparse
    layer is written in a form whose bytes and work follow its connections
    (:mod:`sparsetopo.onnx`); ``dense=True`` writes the dense equivalent instead (pruned
    weights as zeros), which any runtime and opset runs.

    Returns a :class:`~sparsetopo.onnx.OnnxExport`: ``.path`` (also its ``os.fspath``)
    and ``.layers``, per sparse layer the form chosen, its bytes and the dense layer's bytes.

    Examples
    --------
    A sparsified MLP written to ONNX, then run by onnxruntime with the same outputs as torch:

    >>> import numpy as np, onnxruntime, torch
    >>> from torch import nn
    >>> import sparsetopo
    >>> model = sparsetopo.sparsify(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
    ...                             "regular_rotating", density=0.25, backend="masked")
    >>> exported = sparsetopo.export_onnx(model, "model.onnx", input_shape=(1, 64))
    >>> [layer.name for layer in exported.layers], exported.layers[0].bytes < exported.layers[0].dense_bytes
    (['0', '2'], True)
    >>> x = torch.linspace(-1, 1, 3 * 64).reshape(3, 64)   # any batch size: the batch is dynamic
    >>> session = onnxruntime.InferenceSession(exported.path)
    >>> (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    >>> with torch.no_grad():
    ...     bool(np.allclose(y, model(x).numpy(), atol=1e-5))
    True
    """
    onnx = require("onnx", "sparsetopo.export_onnx")
    if example_input is None:
        if input_shape is None:
            raise SparsetopoError("export_onnx needs input_shape (e.g. (1, 1, 28, 28)) or example_input")
        shape = batch_shape(input_shape)
        param = next(model.parameters(), None)
        example_input = torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32)
    check_export_arguments(model, example_input, opset, "input_shape" if input_shape is not None else "example_input")
    if not dense:
        return export_sparse(model, path, example_input, opset)
    proto = trace_to_onnx(dense_equivalent(model).cpu().eval(), example_input, opset)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return dense_summary(model, path)


def onnx_opsets() -> tuple[int, int]:
    """The lowest and highest ONNX opset the exporter used by :func:`export_onnx` writes."""
    try:
        from torch.onnx import _constants
        return _constants.ONNX_MIN_OPSET, getattr(_constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET",
                                                  _constants.ONNX_MAX_OPSET)
    except (ImportError, AttributeError):  # torch moved its constants: the range of torch 2.x
        return 7, 20


def check_export_arguments(model: nn.Module, example_input: torch.Tensor, opset, what: str) -> None:
    """Refuse an opset the exporter lacks and an input the model cannot run, before anything
    is traced or written (the exporter's own failures are tracebacks with its IR on stdout)."""
    if not isinstance(example_input, torch.Tensor):
        raise SparsetopoError(f"example_input must be a torch.Tensor, got {type(example_input).__name__}")
    low, high = onnx_opsets()
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise SparsetopoError(f"opset={opset!r} is not an ONNX opset this exporter writes: choose {low} <= opset "
                              f"<= {high}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input)
    except (RuntimeError, SparsetopoError, ValueError, IndexError) as exc:
        shape = ",".join(str(n) for n in example_input.shape)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SparsetopoError(f"{what} {shape} does not fit the model: {reason}") from None
    finally:
        model.train(was_training)


def onnx_difference(model: nn.Module, path, example_input: torch.Tensor) -> float:
    """Largest absolute difference between ``model`` (eval mode, no gradient) and the ONNX file
    ``path`` run by onnxruntime's CPU provider on ``example_input``."""
    ort = require("onnxruntime", "checking an ONNX export")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(example_input).detach().cpu().numpy()
    finally:
        model.train(was_training)
    got = session.run(None, {session.get_inputs()[0].name: example_input.detach().cpu().numpy()})[0]
    if got.shape != expected.shape:
        raise SparsetopoError(f"{path}: onnxruntime returned shape {got.shape}, the model {expected.shape}")
    return float(abs(got - expected).max()) if got.size else 0.0
