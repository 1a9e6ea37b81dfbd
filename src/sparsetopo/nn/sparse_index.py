"""A sparse layer's connections as the index arrays its kernels read, and the check of a call's inputs.

:class:`SparseIndex` turns a Topology into the arrays the kernels of :mod:`sparsetopo.kernels`
read, once per layer; :func:`check_sparse_inputs` refuses, before any kernel reads memory,
what they cannot compute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsetopo.errors import SparsetopoError
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


def check_sparse_inputs(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index: SparseIndex) -> None:
    """Refuse, before any kernel reads memory, what the kernels cannot compute: they index
    ``x`` by ``index`` without bounds checks, on CPU, in float32. Raises SparsetopoError naming
    the bad value and the fix. The common case is one expression (a layer at batch 1 costs
    microseconds); the messages are worked out only when it fails."""
    f32 = torch.float32
    if (x.dtype is f32 and x.is_cpu and x.dim() == 2 and x.shape[1] == index.n_in and x.layout is torch.strided
            and values.dtype is f32 and values.is_cpu and bias.dtype is f32 and values.shape == (index.nnz,)
            and bias.shape == (index.n_out,)):
        return
    for name, t in (("input", x), ("values", values), ("bias", bias)):
        if t.device.type != "cpu" or t.dtype is not f32:
            raise SparsetopoError(
                f"the sparse backend computes on CPU in float32, got a {t.dtype} {name} on {t.device}: "
                "use backend='masked' (or 'auto', which picks it on CUDA) for other devices or dtypes")
        if t.layout is not torch.strided:
            raise SparsetopoError(f"the sparse backend reads dense (strided) tensors, got a {t.layout} {name}: "
                                  "convert it with .to_dense()")
    if x.dim() != 2 or x.shape[1] != index.n_in:
        raise SparsetopoError(f"input of shape {tuple(x.shape)} does not fit a sparse layer with {index.n_in} "
                              f"inputs: expected (batch, {index.n_in})")
    raise SparsetopoError(f"values of shape {tuple(values.shape)} and bias of shape {tuple(bias.shape)} do not "
                          f"fit a sparse layer with {index.nnz} connections and {index.n_out} outputs")
