"""Index structures and the autograd Function of the truly sparse backend.

:class:`SparseIndex` turns a Topology into the arrays the kernels in
:mod:`sparsetopo.kernels.layer` read, once per layer. :class:`SparseLinearFunction` wraps those
kernels for torch autograd: forward, gradient to the inputs, and the gradient to the connected
weights only (an SDDMM), so a layer's cost and memory follow its number of connections.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsetopo.errors import SparsetopoError
from sparsetopo.kernels import layer as kernels
from sparsetopo.kernels.threads import n_chunks, use_threads
from sparsetopo.topology import Topology


@dataclass(frozen=True, eq=False)
class SparseIndex:
    """A layer's connections addressed by input (CSR) and by output (CSC), all int32/int64.

    ``col_perm[e]`` is the CSR position (the position in ``values``) of the ``e``-th edge in
    output-major order, so both orders share one weight array and nothing is copied per step.
    """

    n_in: int
    n_out: int
    indptr: np.ndarray    # int64, n_in + 1
    indices: np.ndarray   # int32, nnz: output of each edge, CSR order
    col_ptr: np.ndarray   # int64, n_out + 1
    col_rows: np.ndarray  # int32, nnz: input of each edge, CSC order
    col_perm: np.ndarray  # int64, nnz: CSR position of each edge, CSC order

    @classmethod
    def from_topology(cls, topology: Topology) -> "SparseIndex":
        indices = np.ascontiguousarray(topology.indices, dtype=np.int32)
        # a stable sort keeps the inputs of each output ascending: a fixed summation order
        perm = np.argsort(indices, kind="stable").astype(np.int64)
        col_ptr = np.zeros(topology.n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(indices, minlength=topology.n_out), out=col_ptr[1:])
        return cls(
            n_in=topology.n_in,
            n_out=topology.n_out,
            indptr=np.ascontiguousarray(topology.indptr, dtype=np.int64),
            indices=indices,
            col_ptr=col_ptr,
            col_rows=np.ascontiguousarray(topology.rows[perm], dtype=np.int32),
            col_perm=perm,
        )

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def nbytes(self) -> int:
        """Bytes of the index arrays: grows with nnz (plus n_in + n_out pointers)."""
        return sum(a.nbytes for a in (self.indptr, self.indices, self.col_ptr, self.col_rows, self.col_perm))


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy view of a CPU tensor (copied only when not already contiguous float32)."""
    return t.detach().contiguous().numpy()


def sparse_forward(x: np.ndarray, values: np.ndarray, bias: np.ndarray, index: SparseIndex) -> tuple[np.ndarray, np.ndarray]:
    """``x @ W + b`` for a batch ``x`` (batch x n_in); returns ``(y, x feature-major)``."""
    xt = np.ascontiguousarray(x.T)
    yt = np.empty((index.n_out, x.shape[0]), dtype=np.float32)
    args = (xt, values, bias, index.col_ptr, index.col_rows, index.col_perm, yt, False)
    if use_threads(index.nnz, x.shape[0]):
        kernels.forward(*args, n_chunks())
    else:
        kernels.forward_serial(*args)
    return yt.T, xt


class SparseLinearFunction(torch.autograd.Function):
    """``y = x @ W + b`` with ``W`` given by its connected weights ``values`` (CSR order)."""

    @staticmethod
    def forward(ctx, x, values, bias, index: SparseIndex):
        if x.device.type != "cpu" or x.dtype != torch.float32:
            raise SparsetopoError(
                f"the sparse backend computes on CPU in float32, got a {x.dtype} tensor on {x.device}: "
                "use backend='masked' (or 'auto', which picks it on CUDA) for other devices or dtypes"
            )
        y, xt = sparse_forward(_numpy(x), _numpy(values), _numpy(bias), index)
        ctx.index = index
        ctx.save_for_backward(values)
        ctx.xt = xt  # feature-major copy of x, reused by the SDDMM
        return torch.from_numpy(np.ascontiguousarray(y))

    @staticmethod
    def backward(ctx, grad_y):
        index: SparseIndex = ctx.index
        (values,) = ctx.saved_tensors
        gyt = np.ascontiguousarray(_numpy(grad_y).T)
        threads = use_threads(index.nnz, gyt.shape[1])
        grad_x = grad_values = grad_bias = None
        want_x, want_values = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gxt = np.empty((index.n_in, gyt.shape[1]), dtype=np.float32) if want_x else None
        gv = np.empty(index.nnz, dtype=np.float32) if want_values else None
        v = _numpy(values)
        if want_x and want_values:  # one pass over the connections computes both
            args = (ctx.xt, gyt, v, index.indptr, index.indices, gxt, gxt, False, gv)
            if threads:
                kernels.backward(*args, n_chunks())
            else:
                kernels.backward_serial(*args)
        elif want_x:
            args = (gyt, v, index.indptr, index.indices, gxt, gxt, False)
            if threads:
                kernels.backward_input(*args, n_chunks())
            else:
                kernels.backward_input_serial(*args)
        elif want_values:
            args = (ctx.xt, gyt, index.indptr, index.indices, gv)
            if threads:
                kernels.backward_values(*args, n_chunks())
            else:
                kernels.backward_values_serial(*args)
        if want_x:
            grad_x = torch.from_numpy(np.ascontiguousarray(gxt.T))
        if want_values:
            grad_values = torch.from_numpy(gv)
        if ctx.needs_input_grad[2]:
            grad_bias = torch.from_numpy(gyt.sum(axis=1, dtype=np.float32))
        return grad_x, grad_values, grad_bias, None


def sparse_linear(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index: SparseIndex) -> torch.Tensor:
    """Differentiable sparse ``x @ W + b`` (any leading batch shape flattened to 2-D)."""
    if x.dim() != 2:
        lead = x.shape[:-1]
        return sparse_linear(x.reshape(-1, x.shape[-1]), values, bias, index).reshape(*lead, index.n_out)
    return SparseLinearFunction.apply(x, values, bias, index)
