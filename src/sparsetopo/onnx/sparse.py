"""The sparse export: torch's trace with opaque layer nodes, each replaced by its sparse form."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import BlockSparseLinear, SparseLinear
from sparsetopo.onnx.block import block
from sparsetopo.onnx.conv import conv, conv_pads
from sparsetopo.onnx.graph import Builder
from sparsetopo.onnx.linear import DENSE_IN_CACHE_BYTES, dense_model_bytes, linear
from sparsetopo.onnx.result import LayerExport, OnnxExport
from sparsetopo.onnx.trace import DOMAIN, holds_placeholders, trace_to_onnx, with_placeholders

#: The lowest opset the sparse forms are written for (ReduceSum with axes as an input).
MIN_OPSET = 13


def export_sparse(model: nn.Module, path, example_input: torch.Tensor, opset: int = 17,
                  forms: dict[str, str] | None = None) -> OnnxExport:
    """Write ``model`` to ``path`` as ONNX with each sparse layer in its sparse form
    (:mod:`sparsetopo.onnx`); atomic. ``forms`` maps layer names to a form to use instead of the chosen one
    (for measuring them). Returns the path and the per-layer summary."""
    import onnx

    if opset < MIN_OPSET:
        raise SparsetopoError(f"opset={opset}: the sparse ONNX forms need opset {MIN_OPSET} or later "
                              f"(or export dense, which takes any opset torch supports)")
    forms = dict(forms or {})
    traced_model, calls, names = with_placeholders(model)
    unknown = set(forms) - set(names)
    if unknown:
        raise SparsetopoError(f"forms names {sorted(unknown)}, not sparse layers of the model "
                              f"({', '.join(names) or 'none'})")
    with torch.no_grad():
        # the domain only when used: torch's C++ side warns (on stderr) about an unused one
        extra = {"custom_opsets": {DOMAIN: 1}} if holds_placeholders(traced_model) else {}
        proto = trace_to_onnx(traced_model, example_input, opset, **extra)
    cached = dense_model_bytes(model) <= DENSE_IN_CACHE_BYTES
    graph = proto.graph
    nodes, summary = [], []
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        key = next(a.i for a in node.attribute if a.name == "key")
        call = calls[key]
        name = call.name
        builder = Builder(f"sparse/{call.place or 'model'}")
        if isinstance(call.layer, BlockSparseLinear):
            row = block(builder, call.layer, node.input[0], node.output[0], call.rank, forms.get(name))
        elif isinstance(call.layer, SparseLinear):
            row = linear(builder, call.layer, node.input[0], node.output[0], call.rank, forms.get(name), cached)
        else:
            row = conv(builder, call.layer, node.input[0], node.output[0], forms.get(name), conv_pads(call.layer))
        if all(r.name != name for r in summary):  # a layer called twice is listed once
            summary.append(replace(row, name=name))
        nodes.extend(builder.nodes)
        graph.initializer.extend(builder.initializers)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in proto.opset_import if o.domain != DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    written = {row.name for row in summary}
    summary += [_dense_row(name, module) for name, module in model.named_modules()
                if name in names and name not in written]
    order = {name: i for i, name in enumerate(names)}
    return OnnxExport(Path(path), tuple(sorted(summary, key=lambda r: order[r.name])), dense=False)


def _dense_row(name: str, layer: nn.Module) -> LayerExport:
    """The summary row of a sparse layer written by torch's exporter as its dense equivalent
    (:func:`~sparsetopo.onnx.trace.has_sparse_form`)."""
    parameters = [layer.dense_weight(), *([layer.bias] if layer.bias is not None else [])]
    size = 4 * sum(p.numel() for p in parameters)
    return LayerExport(name, layer.kind, "dense", layer.topology.density, size, size,
                       note="no sparse form for this convolution: written dense")
