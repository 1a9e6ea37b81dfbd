"""Block layers in ONNX: the ``block`` form, the tiles as one batched ``MatMul`` (:mod:`sparsetopo.onnx`).

The graph does what :mod:`sparsetopo.nn.block_ops` does in torch. The input ``(B, n_in)`` is
padded to whole blocks (plus one zero block where some output block has fewer input blocks
than the most connected one) and viewed as ``(B, blocks, b_in)``; one ``Gather`` on the block
axis places the ``D`` input blocks of every output block side by side, ``(B, q, D*b_in)``,
each a contiguous run of ``b_in`` numbers; one ``MatMul`` over the ``q`` output blocks
multiplies them by each output block's stacked tiles, ``(q, D*b_in, b_out)``. The file holds
the tiles and the ``q x D`` block index: 4 bytes per connection (plus the zeros outside a
ragged last block), and the work is the tiles' multiply-adds.

Where output blocks have different in-degrees, the file stores the tiles once and the graph
stacks them with a zero tile at the padded slots (``Concat``, ``Gather``), a constant subgraph
that onnxruntime folds when the session is created.
"""

from __future__ import annotations

import numpy as np

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import BlockSparseLinear
from sparsetopo.onnx.graph import Builder
from sparsetopo.onnx.result import LayerExport

FORMS = ("block", "dense")


def block(b: Builder, layer: BlockSparseLinear, x: str, y: str, rank: int, forced: str | None) -> LayerExport:
    """Write ``layer`` from input ``x`` (of rank ``rank``, features last) to output ``y`` in the
    ``block`` form, or ``dense`` where ``forced``."""
    t, plan = layer.topology, layer.plan.to("cpu")
    b_in, b_out = t.block_in, t.block_out
    bias = layer.bias.detach().cpu().numpy().astype(np.float32) if layer.bias is not None else None
    dense_bytes = 4 * (t.n_in * t.n_out + (t.n_out if bias is not None else 0))
    form = forced or "block"
    if form not in FORMS:
        raise SparsetopoError(f"form {form!r} does not write a block layer: choose one of {', '.join(FORMS)}")
    note = f"tiles of {b_in}x{b_out}"
    flat = x
    if rank != 2:   # (..., n_in) as (rows, n_in), and the result back to (..., n_out)
        flat = b.op("Reshape", [x, b.const("to_rows", np.array([-1, t.n_in], np.int64))])
    bias_name = b.const("bias", bias) if bias is not None else None
    if form == "dense":
        weight = b.const("weight", layer.dense_weight().detach().cpu().numpy().astype(np.float32))
        out = b.op("Gemm", [flat, weight, *([bias_name] if bias_name else [])], transB=1)
    else:
        out = _tiles_product(b, layer, plan, flat)
        if bias_name:
            out = b.op("Add", [out, bias_name])
    if rank != 2:
        lead = b.op("Slice", [b.op("Shape", [x]), b.const("zero", np.array([0], np.int64)),
                              b.const("minus_one", np.array([-1], np.int64))])
        shape = b.op("Concat", [lead, b.const("n_out", np.array([t.n_out], np.int64))], axis=0)
        out = b.op("Reshape", [out, shape])
    b.op("Identity", [out], out=y)
    return LayerExport("", "linear", form, t.density, b.stored_bytes(), dense_bytes, note=note)


def _tiles_product(b: Builder, layer: BlockSparseLinear, plan, flat: str) -> str:
    """Nodes computing ``flat (rows, n_in) @ lift(tiles)`` without bias, as ``(rows, n_out)``."""
    t = layer.topology
    b_in, b_out = t.block_in, t.block_out
    q, width = plan.fwd_blocks.shape
    blocks = plan.in_blocks + (1 if plan.fwd_padded else 0)   # the zero block, read by padded slots
    pad = blocks * b_in - t.n_in
    x = flat
    if pad:
        x = b.op("Pad", [x, b.const("pads", np.array([0, 0, 0, pad], np.int64))], mode="constant")
    x = b.op("Reshape", [x, b.const("as_blocks", np.array([0, blocks, b_in], np.int64))])
    index = plan.fwd_blocks.numpy().astype(np.int32 if blocks <= np.iinfo(np.int32).max else np.int64)
    gathered = b.op("Gather", [x, b.const("input_blocks", index)], axis=1)           # (B, q, D, b_in)
    side_by_side = b.op("Reshape", [gathered, b.const("by_output_block", np.array([0, q, width * b_in], np.int64))])
    per_block = b.op("Transpose", [side_by_side], perm=[1, 0, 2])                    # (q, B, D*b_in)
    product = b.op("MatMul", [per_block, _stacked_tiles(b, layer, plan)])            # (q, B, b_out)
    rows = b.op("Reshape", [b.op("Transpose", [product], perm=[1, 0, 2]),
                            b.const("as_rows", np.array([0, q * b_out], np.int64))])
    if q * b_out == t.n_out:
        return rows
    return b.op("Slice", [rows, b.const("zero", np.array([0], np.int64)), b.const("n_out", np.array([t.n_out], np.int64)),
                          b.const("feature_axis", np.array([1], np.int64))])


def _stacked_tiles(b: Builder, layer: BlockSparseLinear, plan) -> str:
    """``(q, D*b_in, b_out)``: each output block's tiles stacked in the order of its input
    blocks; stored as is, or, where padded, built from the tiles and a zero tile."""
    t = layer.topology
    q, width = plan.fwd_blocks.shape
    tiles = layer.tiles.detach().cpu().numpy().astype(np.float32)
    if not plan.fwd_padded:
        return b.const("tiles", tiles.reshape(q, width * t.block_in, t.block_out))
    slot = np.full(q * width, plan.n_tiles, dtype=np.int32)     # the zero tile
    slot[plan.fwd_slot.numpy()] = np.arange(plan.n_tiles, dtype=np.int32)
    with_zero = b.op("Concat", [b.const("tiles", tiles), b.const("zero_tile", np.zeros((1, t.block_in, t.block_out),
                                                                                        np.float32))], axis=0)
    shape = b.const("stacked_shape", np.array([q, width * t.block_in, t.block_out], np.int64))
    return b.op("Reshape", [b.op("Gather", [with_zero, b.const("slots", slot)], axis=0), shape])
