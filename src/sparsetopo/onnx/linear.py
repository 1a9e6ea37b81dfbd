"""Linear layers in ONNX: the ``ell``, ``expanded`` and ``dense`` forms (:mod:`sparsetopo.onnx`)."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.nn.sparsify import MADE_LAYERS
from sparsetopo.onnx.graph import Builder, dense_weight_from, index_dtype, padded_by_output
from sparsetopo.onnx.result import LayerExport

#: ``ell`` is used for a batch of B rows while ``B * kmax / n_in <= ELL_BATCH_WORK``: a gathered
#: connection costs about 1 ns in onnxruntime (one thread), a dense multiply-add about 0.2 ns
#: when the dense weight streams from memory, so at batch 1 the sparse form wins below about a
#: tenth of the dense work (bench_onnx.py: 784-4096-4096-10 MLP) ...
ELL_BATCH_WORK = 0.12
#: ... and below about a twentieth when the dense model's weights fit in the cache (under
#: ``DENSE_IN_CACHE_BYTES``), where a dense multiply-add costs about 0.1 ns (784-1024-1024-10).
ELL_BATCH_WORK_CACHED = 0.05
DENSE_IN_CACHE_BYTES = 16 * 2**20

def ell_max_batch(n_in: int, kmax: int, cached: bool) -> int:
    """The largest batch for which the ``ell`` form is expected to beat the dense MatMul
    (0: none); ``kmax`` is the largest in-degree, ``cached`` whether the dense model's weights
    fit in the cache (:data:`DENSE_IN_CACHE_BYTES`)."""
    work = ELL_BATCH_WORK_CACHED if cached else ELL_BATCH_WORK
    return int(math.floor(work * n_in / kmax + 1e-9))


def dense_model_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s float32 weights with every sparse layer counted dense: what one
    inference of the dense export streams through the cache."""
    total, sparse_params = 0, set()
    for module in model.modules():
        if isinstance(module, MADE_LAYERS):
            t = module.topology
            kernel = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, SparseConv2d) else 1
            total += 4 * (t.n_in * t.n_out * kernel + (t.n_out if module.bias is not None else 0))
            sparse_params |= {id(p) for p in module.parameters()}
    return total + sum(4 * p.numel() for p in model.parameters() if id(p) not in sparse_params)


def linear(b: Builder, layer: SparseLinear, x: str, y: str, rank: int, forced: str | None, cached: bool):
    """Write ``layer`` from input ``x`` (of rank ``rank``) to output ``y`` in its form (``forced``,
    or the one chosen by the rule of :mod:`sparsetopo.onnx`); ``cached``: whether the dense
    model's weights fit in the cache (:func:`ell_max_batch`)."""
    from onnx import TensorProto, helper

    t = layer.topology
    n_in, m = t.n_in, t.n_out
    values = layer.connected_weights().cpu().numpy().astype(np.float32)
    index, weights = padded_by_output(t, values)
    kmax = index.shape[1]
    stored_index = b.const("index", index.astype(index_dtype(n_in)))
    stored_weights = b.const("weights", weights)
    bias = b.const("bias", layer.bias.detach().cpu().numpy().astype(np.float32)) if layer.bias is not None else None
    sparse_bytes = b.stored_bytes()
    dense_bytes = 4 * (n_in * m + (m if bias else 0))
    limit = ell_max_batch(n_in, kmax, cached) if rank == 2 else 0
    note = "" if rank == 2 else f"input of rank {rank}"
    if forced == "ell" and rank != 2:
        raise SparsetopoError(f"the ell form takes a 2-D input (batch, features), not one of rank {rank}")
    form = forced or ("ell" if limit >= 1 else "expanded" if sparse_bytes < dense_bytes else "dense")

    def add_bias(nodes, value, out=None):
        return b.op("Add", [value, bias], nodes, out=out) if bias else b.op("Identity", [value], nodes, out=out)

    def dense_product(nodes, weight, out=None):
        """What torch exports for nn.Linear (weight ``[n_out, n_in]``): one Gemm on a 2-D input,
        else MatMul and Add; the dense paths thus run the same kernels as the dense export."""
        if rank == 2:
            return b.op("Gemm", [x, weight, *([bias] if bias else [])], nodes, out=out, transB=1)
        return add_bias(nodes, b.op("MatMul", [x, b.op("Transpose", [weight], nodes, perm=[1, 0])], nodes), out)

    if form == "dense":
        b.drop_constants()
        weight = b.const("weight", layer.dense_weight().cpu().numpy().astype(np.float32))
        bias = b.const("bias", layer.bias.detach().cpu().numpy().astype(np.float32)) if layer.bias is not None else None
        dense_product(None, weight, out=y)
        return LayerExport("", "linear", "dense", t.density, b.stored_bytes(), dense_bytes, note=note)

    # weight[j, i] sits at j * n_in + i of the flattened [n_out, n_in] weight (i = index[j, slot])
    position = b.op("Add", [b.op("Cast", [stored_index], to=TensorProto.INT64),
                            b.const("output_base", np.arange(m, dtype=np.int64)[:, None] * n_in)])
    dense_weight = dense_weight_from(b, position, stored_weights, m * n_in, (), (m, n_in))
    if form == "expanded":
        dense_product(None, dense_weight, out=y)
        return LayerExport("", "linear", "expanded", t.density, b.stored_bytes(), dense_bytes, note=note)

    # ell: If(batch == 1) one gather; elif batch <= limit, a gather with per-row offsets; else expanded
    index32 = b.op("Reshape", [b.op("Cast", [stored_index], to=TensorProto.INT32),
                               b.const("to_row", np.array([1, -1], np.int64))])
    by_output = b.const("by_output", np.array([-1, m, kmax], np.int64))
    axis2 = b.const("slot_axis", np.array([2], np.int64))

    def ell_sum(nodes, gathered, out):
        products = b.op("Mul", [b.op("Reshape", [gathered, by_output], nodes), stored_weights], nodes)
        return add_bias(nodes, b.op("ReduceSum", [products, axis2], nodes, keepdims=0), out)

    def branch(label, build):
        nodes = []
        out = build(nodes, f"{b.prefix}/{label}_out")
        return helper.make_graph(nodes, f"{b.prefix}/{label}", [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", m])])

    def one_row(nodes, out):
        return ell_sum(nodes, b.op("GatherElements", [x, index32], nodes, axis=1), out)

    def few_rows(nodes, out):
        scalar_n_in = b.const("n_in", np.array(n_in, np.int64))
        stop = b.op("Mul", [batch, scalar_n_in], nodes)
        starts = b.op("Range", [b.const("zero", np.array(0, np.int64)), stop, scalar_n_in], nodes)
        offsets = b.op("Reshape", [b.op("Cast", [starts], nodes, to=TensorProto.INT32),
                                   b.const("to_column", np.array([-1, 1], np.int64))], nodes)
        flat_index = b.op("Reshape", [b.op("Add", [offsets, index32], nodes), b.const("to_row", np.array([1, -1],
                                                                                                        np.int64))],
                          nodes)
        flat_x = b.op("Reshape", [x, b.const("to_row", np.array([1, -1], np.int64))], nodes)
        return ell_sum(nodes, b.op("GatherElements", [flat_x, flat_index], nodes, axis=1), out)

    def expanded(nodes, out):
        return dense_product(nodes, dense_weight, out)

    batch = b.op("Gather", [b.op("Shape", [x]), b.const("batch_axis", np.array(0, np.int64))], axis=0)
    if limit > 1:
        def rest(nodes, out):
            small = b.op("Less", [batch, b.const("limit", np.array(limit + 1, np.int64))], nodes)
            return b.op("If", [small], nodes, out=out, then_branch=branch("few_rows", few_rows),
                        else_branch=branch("expanded", expanded))
    else:
        rest = expanded
    single = b.op("Equal", [batch, b.const("one", np.array(1, np.int64))])
    b.op("If", [single], out=y, then_branch=branch("one_row", one_row), else_branch=branch("rest", rest))
    return LayerExport("", "linear", "ell", t.density, b.stored_bytes(), dense_bytes, ell_max_batch=limit)
