"""Other ways to call the sparse kernels from autograd, timed by bench_layers.py beside the library's.

* :class:`NumpyLayoutFunction`: the autograd Function as it was before the batch-major entry
  points (the layout copies, allocations and the bias sum in numpy, one numba call per
  kernel): the "before" of ``ratios_autograd``, measured in the same run.
* :func:`custom_op_step`: the library's two numba calls registered as ``torch.library`` custom
  ops with a registered autograd formula (what ``torch.compile`` could keep in a graph),
  called eagerly. ``None`` when this torch has no ``torch.library.custom_op``.
* :func:`floor_step`: a custom autograd Function that computes nothing (it hands back
  preallocated tensors of the right shapes), in the same step: what torch itself charges a
  layer written as a Python autograd Function (``apply``, the backward engine, gradient
  accumulation, ``zero_grad``), whatever its kernels. ``ratios_autograd`` cannot go below it.
"""

from __future__ import annotations

import numpy as np
import torch

from _common import training_step
from sparsetopo.kernels import batch_major
from sparsetopo.kernels import layer as kernels
from sparsetopo.kernels.threads import n_chunks, use_threads


def _chunks(index, batch: int) -> int:
    """Ranges for the thread pool by the library's rule, or 0 for the calling thread."""
    return n_chunks() if use_threads(index.nnz, batch) else 0


class NumpyLayoutFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, bias, index):
        xt = np.ascontiguousarray(x.detach().contiguous().numpy().T)
        yt = np.empty((index.n_out, x.shape[0]), dtype=np.float32)
        args = (xt, values.detach().numpy(), bias.detach().numpy(), index.col_ptr, index.col_rows, index.col_perm, yt,
                False)
        if use_threads(index.nnz, x.shape[0]):
            kernels.forward(*args, n_chunks())
        else:
            kernels.forward_serial(*args)
        ctx.index, ctx.xt = index, xt
        ctx.save_for_backward(values)
        return torch.from_numpy(np.ascontiguousarray(yt.T))

    @staticmethod
    def backward(ctx, grad_y):
        index = ctx.index
        (values,) = ctx.saved_tensors
        gyt = np.ascontiguousarray(grad_y.detach().contiguous().numpy().T)
        gxt = np.empty((index.n_in, gyt.shape[1]), dtype=np.float32)
        gv = np.empty(index.nnz, dtype=np.float32)
        args = (ctx.xt, gyt, values.detach().numpy(), index.indptr, index.indices, gxt, gxt, False, gv)
        if use_threads(index.nnz, gyt.shape[1]):
            kernels.backward(*args, n_chunks())
        else:
            kernels.backward_serial(*args)
        return (torch.from_numpy(np.ascontiguousarray(gxt.T)), torch.from_numpy(gv),
                torch.from_numpy(gyt.sum(axis=1, dtype=np.float32)), None)


def numpy_layout_step(layer, x, g):
    return training_step(layer, x, g, lambda: NumpyLayoutFunction.apply(x, layer.values, layer.bias, layer.index))


_INDEXES = {}  # custom ops take tensors and plain numbers: the layer's index is looked up by key


def _register():
    if not hasattr(torch.library, "custom_op"):
        return None

    @torch.library.custom_op("sparsetopo_bench::forward", mutates_args=())
    def forward(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, key: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = _INDEXES[key]
        y, xt = batch_major.forward(x.detach().contiguous().numpy(), values.detach().numpy(), bias.detach().numpy(),
                                    index.col_ptr, index.col_rows, index.col_perm, _chunks(index, x.shape[0]), True)
        return torch.from_numpy(y), torch.from_numpy(xt)

    @forward.register_fake
    def _(x, values, bias, key):
        return x.new_empty(x.shape[0], _INDEXES[key].n_out), x.new_empty(x.shape[1], x.shape[0])

    @torch.library.custom_op("sparsetopo_bench::backward", mutates_args=())
    def backward(xt: torch.Tensor, gy: torch.Tensor, values: torch.Tensor, key: int) -> tuple[
            torch.Tensor, torch.Tensor, torch.Tensor]:
        index = _INDEXES[key]
        gx, gv, gb = batch_major.backward(xt.numpy(), gy.detach().contiguous().numpy(), values.detach().numpy(),
                                          index.indptr, index.indices, True, True, True, _chunks(index, gy.shape[0]))
        return torch.from_numpy(gx), torch.from_numpy(gv), torch.from_numpy(gb)

    @backward.register_fake
    def _(xt, gy, values, key):
        return gy.new_empty(gy.shape[0], xt.shape[0]), values.new_empty(values.shape), gy.new_empty(gy.shape[1])

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output[1], inputs[1])
        ctx.key = inputs[3]

    def grad(ctx, grad_y, _grad_xt):
        xt, values = ctx.saved_tensors
        gx, gv, gb = backward(xt, grad_y, values, ctx.key)
        return gx, gv, gb, None

    forward.register_autograd(grad, setup_context=setup_context)
    return forward


_CUSTOM_FORWARD = None


def custom_op_step(layer, x, g):
    """A step through the custom ops, or None when torch.library.custom_op does not exist."""
    global _CUSTOM_FORWARD
    if _CUSTOM_FORWARD is None:
        _CUSTOM_FORWARD = _register()
        if _CUSTOM_FORWARD is None:
            return None
    key = len(_INDEXES)
    _INDEXES[key] = layer.index
    return training_step(layer, x, g, lambda: _CUSTOM_FORWARD(x, layer.values, layer.bias, key)[0])


class _NothingFunction(torch.autograd.Function):
    """The shapes of a sparse layer's forward and backward, none of its work."""

    @staticmethod
    def forward(ctx, x, values, bias, out):
        ctx.grads = out[1:]
        return out[0]

    @staticmethod
    def backward(ctx, grad_y):
        gx, gv, gb = ctx.grads
        return gx, gv, gb, None


def floor_step(layer, x, g):
    batch, index = x.shape[0], layer.index
    out = (torch.empty(batch, index.n_out), torch.empty(batch, index.n_in), torch.empty(index.nnz),
           torch.empty(index.n_out))
    return training_step(layer, x, g, lambda: _NothingFunction.apply(x, layer.values, layer.bias, out))
