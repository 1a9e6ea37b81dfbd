"""The sparse kernels on torch tensors: the autograd Function (training) and the forward-only call.

:func:`sparse_linear` runs one call of a sparse-backend layer on the path
:func:`sparsetopo.nn.plan.call_path` chose (its keys: ``untiled``, ``tiled``, ``vector``; the
``dense`` path is the layer's own matmul). Each direction is one numba call that does the
layout copies, the kernel and the bias gradient inside:

* ``untiled`` (a small layer at a small batch): :mod:`sparsetopo.kernels.batch_major`;
* ``tiled``: the batch cut into tiles (:mod:`sparsetopo.kernels.tiled`, width from
  :func:`~sparsetopo.nn.plan.tile_width`);
* ``vector`` (inference on one example): one pass over the connections in CSR order.

The gradient to the weights is computed at the connections only (an SDDMM), so a layer's cost
and memory follow its number of connections. Each call asks :func:`~sparsetopo.nn.plan.call_threads`
for its threads, and reports how long it took, so that the faster of serial and parallel keeps
being chosen when another process holds a core.

The tiled forward walks the weights output by output, in CSC order: each call copies
``values`` into that order first (one pass over the connections). It is not cached across
calls: the fused training engines update the weights in place through numpy, which torch's
version counter does not see.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from sparsetopo.errors import SparsetopoError, interrupt_in
from sparsetopo.kernels import batch_major, tiled
from sparsetopo.nn.plan import ThreadClock, tile_width
from sparsetopo.nn.sparse_index import SparseIndex, check_sparse_inputs


def _rows(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy view of a CPU tensor, batch-major (copied only when not contiguous)."""
    a = t.detach()
    return (a if a.is_contiguous() else a.contiguous()).numpy()


def interrupts_stay_interrupts(method):
    """Ctrl-C (or SIGTERM made KeyboardInterrupt) that lands while a numba kernel returns its
    arrays surfaces as ``SystemError: CPUDispatcher(...) returned a result with an exception
    set``; give callers the KeyboardInterrupt it is, so that they stop cleanly."""
    @functools.wraps(method)
    def wrapper(*args):
        try:
            return method(*args)
        except SystemError as exc:
            interrupt = interrupt_in(exc)
            if interrupt is None:
                raise
            raise KeyboardInterrupt(*interrupt.args) from None
    return wrapper


def refuse_double_backward() -> None:
    """The kernels' gradients carry no graph: with ``create_graph=True`` (a gradient penalty,
    Hessian-vector products) a second derivative through them would be silently wrong, so it
    is refused. Autograd runs a backward with grad mode on exactly when the graph is wanted."""
    if torch.is_grad_enabled():
        raise SparsetopoError("the sparse backend has no second-order gradients (backward or autograd.grad "
                              "with create_graph=True): use backend='masked' for gradient penalties and "
                              "higher derivatives")


def _optional(flag: bool, a: np.ndarray):
    return torch.from_numpy(a) if flag else None


class SparseLinearFunction(torch.autograd.Function):
    """``y = x @ W + b`` with ``W`` given by its connected weights ``values`` (CSR order), on the
    ``untiled`` or ``tiled`` path (see the module docstring)."""

    @staticmethod
    @interrupts_stay_interrupts
    def forward(ctx, x, values, bias, index: SparseIndex, path: str):
        ctx.index, ctx.untiled = index, path == "untiled"
        batch = x.shape[0]
        v, b = values.detach().numpy(), bias.detach().numpy()
        keep = ctx.needs_input_grad[1]  # the input copy is kept only when the weight gradient reads it
        with ThreadClock((id(index), "forward", batch), index.nnz * batch) as chunks:
            if ctx.untiled:
                y, ctx.xs = batch_major.forward(_rows(x), v, b, index.col_ptr, index.col_rows, index.col_perm,
                                                chunks, keep)
            else:
                y, ctx.xs = tiled.forward_call(_rows(x), v, index.col_perm, index.col_ptr, index.col_rows, b,
                                               chunks, keep, tile_width(batch))
        ctx.save_for_backward(values)
        return torch.from_numpy(y)

    @staticmethod
    @interrupts_stay_interrupts
    def backward(ctx, grad_y):
        refuse_double_backward()
        index: SparseIndex = ctx.index
        want_x, want_values, want_bias = ctx.needs_input_grad[:3]
        batch = grad_y.shape[0]
        v = ctx.saved_tensors[0].detach().numpy()
        with ThreadClock((id(index), "backward", batch), index.nnz * batch) as chunks:
            if ctx.untiled:
                gx, gv, gb = batch_major.backward(ctx.xs, _rows(grad_y), v, index.indptr, index.indices, want_x,
                                                  want_values, want_bias, chunks)
            else:
                xs = ctx.xs if want_values else np.empty((0, 0, 0), np.float32)
                gx, gv, gb = tiled.backward_call(xs, _rows(grad_y), v, index.indptr, index.indices, want_x,
                                                 want_values, want_bias, chunks, tile_width(batch))
        return _optional(want_x, gx), _optional(want_values, gv), _optional(want_bias, gb), None, None


@interrupts_stay_interrupts
def _inference(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index: SparseIndex, path: str,
               csc: np.ndarray | None = None):
    """``x @ W + b`` with no autograd bookkeeping (nothing saved for a backward); ``csc``: the
    weights in CSC order for the "vector" path, where the caller keeps them (else made here)."""
    batch = x.shape[0]
    v, b = values.detach().numpy(), bias.detach().numpy()
    if path == "vector":
        return vector_forward(_rows(x), csc if csc is not None else vector_weights(values, index), b, index)
    with ThreadClock((id(index), "forward", batch), index.nnz * batch) as chunks:
        y, _ = tiled.forward_call(_rows(x), v, index.col_perm, index.col_ptr, index.col_rows, b, chunks, False,
                                  tile_width(batch))
    return torch.from_numpy(y)


def vector_forward(x: np.ndarray, csc: np.ndarray, bias: np.ndarray, index: SparseIndex) -> torch.Tensor:
    """The "vector" path on numpy arrays the caller has checked: ``x`` one float32 row of
    ``index.n_in``, ``csc`` from :func:`vector_weights`, ``bias`` float32 of ``index.n_out``.
    Nothing else runs around the kernel, since at batch 1 every microsecond of Python is a
    visible part of the call (:meth:`sparsetopo.nn.SparseLinear.forward` calls it directly)."""
    y = np.empty((1, index.n_out), np.float32)
    tiled.forward_vector(x, csc, index.col_ptr, index.col_rows, bias, y)
    return torch.from_numpy(y)


def vector_weights(values: torch.Tensor, index: SparseIndex) -> np.ndarray:
    """The connected weights in the order the one-example kernel reads them (CSC, output by
    output: :func:`sparsetopo.kernels.tiled.forward_vector`), as a new numpy array."""
    return tiled.csc_values(values.detach().numpy(), index.col_perm)


def sparse_linear(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index: SparseIndex, path: str,
                  grad: bool, csc: np.ndarray | None = None) -> torch.Tensor:
    """``x @ W + b`` (any leading batch shape flattened to 2-D) on ``path``; differentiable when
    ``grad`` (the caller's reading of grad mode and ``requires_grad``), else forward only.
    ``csc``: :func:`vector_weights` of ``values`` where the caller keeps them (the "vector" path
    reads them; made per call otherwise)."""
    if x.dim() != 2:
        lead = x.shape[:-1]
        return sparse_linear(x.reshape(-1, x.shape[-1]), values, bias, index, path, grad, csc).reshape(*lead, index.n_out)
    check_sparse_inputs(x, values, bias, index)  # the kernels index x without bounds checks
    if grad:
        return SparseLinearFunction.apply(x, values, bias, index, path)
    return _inference(x, values, bias, index, path, csc)
