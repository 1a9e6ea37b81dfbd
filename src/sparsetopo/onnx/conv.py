"""Convolutions in ONNX: the ``gathered``, ``expanded`` and ``dense`` forms (:mod:`sparsetopo.onnx`)."""

from __future__ import annotations

import numpy as np

from sparsetopo.nn import SparseConv2d
from sparsetopo.onnx.graph import Builder, dense_weight_from, index_dtype, padded_by_output
from sparsetopo.onnx.result import LayerExport

#: A convolution is ``gathered`` only while each output channel reads at most this many input
#: channels (a depthwise convolution): onnxruntime's grouped ``Conv`` with 2 or more channels per
#: group ran 2 to 3 times slower than the dense convolution (bench_onnx.py, tutorial CNN).
CONV_GATHER_MAX_CHANNELS = 1


def conv(b: Builder, layer: SparseConv2d, x: str, y: str, forced: str | None, pads: list[int]):
    """Write ``layer`` from input ``x`` to output ``y`` in its form (``forced``, or the one chosen
    by the rule of :mod:`sparsetopo.onnx`); ``pads`` from :func:`conv_pads`."""
    t = layer.topology
    kh, kw = layer.kernel_size
    kernels = layer.connected_weights().cpu().numpy().astype(np.float32)
    index, weights = padded_by_output(t, kernels)
    kmax = index.shape[1]
    bias = layer.bias.detach().cpu().numpy().astype(np.float32) if layer.bias is not None else None
    dense_bytes = 4 * (t.n_out * t.n_in * kh * kw + (t.n_out if bias is not None else 0))
    attrs = dict(strides=list(layer.stride), dilations=list(layer.dilation), pads=pads, kernel_shape=[kh, kw])
    stored_index = b.const("index", index.astype(index_dtype(t.n_in)))
    stored_weights = b.const("weights", weights)
    bias_name = [b.const("bias", bias)] if bias is not None else []
    sparse_bytes = b.stored_bytes()
    form = forced or ("gathered" if kmax <= CONV_GATHER_MAX_CHANNELS else
                      "expanded" if sparse_bytes < dense_bytes else "dense")
    if form == "dense":
        b.drop_constants()
        weight = b.const("weight", layer.dense_weight().cpu().numpy().astype(np.float32))
        bias_name = [b.const("bias", bias)] if bias is not None else []
        b.op("Conv", [x, weight, *bias_name], out=y, **attrs)
    elif form == "expanded":
        from onnx import TensorProto

        # kernel (j, i) sits at j * n_in + i of the [n_out * n_in, kH, kW] stack (i = index[j, slot])
        position = b.op("Add", [b.op("Cast", [stored_index], to=TensorProto.INT64),
                                b.const("output_base", np.arange(t.n_out, dtype=np.int64)[:, None] * t.n_in)])
        weight = dense_weight_from(b, position, stored_weights, t.n_out * t.n_in, (kh, kw),
                                    (t.n_out, t.n_in, kh, kw))
        b.op("Conv", [x, weight, *bias_name], out=y, **attrs)
    else:
        from onnx import TensorProto

        flat_index = b.op("Reshape", [b.op("Cast", [stored_index], to=TensorProto.INT64),
                                      b.const("flat", np.array([-1], np.int64))])
        channels = b.op("Gather", [x, flat_index], axis=1)
        b.op("Conv", [channels, stored_weights, *bias_name], out=y, group=t.n_out, **attrs)
    stored = b.stored_bytes()
    return LayerExport("", "conv2d", form, t.density, stored, dense_bytes)


def conv_pads(layer: SparseConv2d) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) for zero padding; other modes pad beforehand."""
    if layer.padding_mode != "zeros" or layer.padding == "valid":
        return [0, 0, 0, 0]
    if layer.padding == "same":
        begin, end = [], []
        for d, k in zip(layer.dilation, layer.kernel_size):
            total = d * (k - 1)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end
    ph, pw = layer.padding
    return [ph, pw, ph, pw]
