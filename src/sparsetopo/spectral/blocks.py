"""The spectra of a block layer's lifted graph, computed exactly from its graph of blocks.

A block layer (``Topology.is_blocked``) is the lift of its block graph ``B`` (``p x q``
blocks): input block ``I`` holds ``s_I`` neurons, output block ``J`` holds ``t_J`` (the block
size, or fewer in a ragged last block), and its biadjacency is ``C = E_in B E_out^T`` with
``E`` the 0/1 block-membership matrices. Since ``E^T E = diag(sizes)``:

* the non-zero singular values of ``C`` are those of ``W = S^(1/2) B T^(1/2)`` (``S``, ``T``
  the diagonal matrices of block sizes). With even widths (every block full) that is
  ``sqrt(b_in * b_out)`` times the singular values of ``B``;
* the Laplacian ``L = D - A`` of the lifted graph leaves two subspaces invariant: vectors
  constant on every block, where it acts as ``Q = [[diag(d), -W], [-W^T, diag(e)]]`` (``d_I``,
  ``e_J`` the degrees of the neurons of input block ``I`` and output block ``J``), and vectors
  summing to zero on every block, where ``A`` gives zero and ``L`` is the degree: ``d_I``
  ``s_I - 1`` times and ``e_J`` ``t_J - 1`` times. The lifted spectrum is the union.

So every measure of a block layer needs an SVD or eigendecomposition of ``p + q`` nodes
instead of ``n_in + n_out`` (32 + 32 for a 1024-wide layer of blocks of 32, against 2048).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from sparsetopo.topology.blocks import block_widths
from sparsetopo.topology.value import Topology

#: Block graphs up to this many nodes (both sides) are solved from the block graph, exactly
#: with LAPACK (an eigendecomposition of 4000 nodes takes seconds); larger ones fall back to
#: the lifted graph's solvers.
QUOTIENT_MAX_NODES = 4000


@dataclass(frozen=True)
class BlockQuotient:
    """The block graph of a block layer with its block sizes (see the module docstring)."""

    B: sp.csr_matrix           # the block graph's 0/1 biadjacency, p x q
    in_widths: np.ndarray      # s_I, neurons per input block
    out_widths: np.ndarray     # t_J, neurons per output block

    @classmethod
    def of(cls, topology: Topology) -> "BlockQuotient | None":
        """The quotient of a block layer small enough to solve densely; None otherwise."""
        if not topology.is_blocked:
            return None
        graph = topology.block_graph
        if graph.n_in + graph.n_out > QUOTIENT_MAX_NODES:
            return None
        return cls(graph.to_scipy(), block_widths(topology.n_in, topology.block_in).astype(np.float64),
                   block_widths(topology.n_out, topology.block_out).astype(np.float64))

    @cached_property
    def weighted(self) -> np.ndarray:
        """``W = S^(1/2) B T^(1/2)``, dense: the lifted biadjacency's non-zero singular values."""
        return np.sqrt(self.in_widths)[:, None] * self.B.toarray() * np.sqrt(self.out_widths)[None, :]

    def singular_values(self) -> np.ndarray:
        """The singular values of the lifted biadjacency, largest first, zeros left out
        except as padding to the block graph's smaller side."""
        return np.linalg.svd(self.weighted, compute_uv=False)

    @cached_property
    def laplacian_spectrum(self) -> np.ndarray:
        """Every eigenvalue of the lifted graph's Laplacian (``n_in + n_out`` of them), ascending."""
        d = self.B @ self.out_widths            # degree of each neuron of input block I
        e = self.B.T @ self.in_widths           # degree of each neuron of output block J
        p = d.size
        Q = np.zeros((p + e.size, p + e.size))
        Q[np.arange(p), np.arange(p)] = d
        Q[np.arange(p, p + e.size), np.arange(p, p + e.size)] = e
        Q[:p, p:] = -self.weighted
        Q[p:, :p] = -self.weighted.T
        within = np.concatenate([np.repeat(d, self.in_widths.astype(np.int64) - 1),
                                 np.repeat(e, self.out_widths.astype(np.int64) - 1)])
        return np.sort(np.concatenate([np.linalg.eigvalsh(Q), within]))
