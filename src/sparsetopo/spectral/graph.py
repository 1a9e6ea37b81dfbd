"""The bipartite graph of one layer or of a whole network, as one biadjacency ``C``.

Builds :class:`_Bipartite` (biadjacency, degrees, Laplacian products) from a Topology or a
chaining list of Topologies, and checks their sizes; the spectra are computed elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Sequence, Union

import numpy as np
import scipy.sparse as sp

from sparsetopo.errors import SparsetopoError
from sparsetopo.spectral.blocks import BlockQuotient
from sparsetopo.topology.value import Topology

Graph = Union[Topology, Sequence[Topology]]


# -- the bipartite graph of a layer or a network -----------------------------------------------
@dataclass(frozen=True)
class _Bipartite:
    """A bipartite graph as its biadjacency ``C`` (left x right, float64 CSR) and ``C^T``."""

    C: sp.csr_matrix
    CT: sp.csr_matrix
    isolated_inputs: int
    isolated_outputs: int
    quotient: BlockQuotient | None = None  # a block layer's graph of blocks, which gives its spectra

    @property
    def n_left(self) -> int:
        return self.C.shape[0]

    @property
    def n_right(self) -> int:
        return self.C.shape[1]

    @property
    def n_nodes(self) -> int:
        return self.n_left + self.n_right

    @property
    def n_edges(self) -> int:
        return int(self.C.nnz)

    @cached_property
    def left_degrees(self) -> np.ndarray:
        return np.diff(self.C.indptr).astype(np.float64)

    @cached_property
    def right_degrees(self) -> np.ndarray:
        return np.diff(self.CT.indptr).astype(np.float64)

    @cached_property
    def degrees(self) -> np.ndarray:
        """Degree of every node, left nodes first (the Laplacian's node order)."""
        return np.concatenate([self.left_degrees, self.right_degrees])

    @cached_property
    def biregular(self) -> tuple[float, float] | None:
        """``(c, d)`` when every left node has degree c >= 1 and every right node d >= 1."""
        left, right = self.left_degrees, self.right_degrees
        if left.min() < 1 or right.min() < 1 or left.min() != left.max() or right.min() != right.max():
            return None
        return float(left[0]), float(right[0])

    def laplacian_matvec(self, x: np.ndarray) -> np.ndarray:
        """``L x = D x - A x`` without forming ``L``."""
        nl = self.n_left
        out = self.degrees * x
        out[:nl] -= self.C @ x[nl:]
        out[nl:] -= self.CT @ x[:nl]
        return out

    def dense_laplacian(self) -> np.ndarray:
        nl = self.n_left
        L = np.diag(self.degrees)
        dense = self.C.toarray()
        L[:nl, nl:] -= dense
        L[nl:, :nl] -= dense.T
        return L


def _check_size(topology: Topology, where: str) -> None:
    if not isinstance(topology, Topology):
        raise SparsetopoError(
            f"{where} is a {type(topology).__name__}, not a Topology: build one with sparsetopo.topology.build"
        )
    if topology.n_in < 1 or topology.n_out < 1:
        raise SparsetopoError(
            f"{where} has size {topology.n_in}x{topology.n_out}: a layer needs n_in >= 1 and n_out >= 1"
        )


def _layer_graph(topology: Topology) -> _Bipartite:
    _check_size(topology, "the layer")
    C = topology.to_scipy()
    return _Bipartite(
        C=C,
        CT=C.T.tocsr(),
        isolated_inputs=int(np.count_nonzero(topology.out_degrees == 0)),
        isolated_outputs=int(np.count_nonzero(topology.in_degrees == 0)),
        quotient=BlockQuotient.of(topology),
    )


def _network_graph(topologies: Sequence[Topology]) -> _Bipartite:
    """All layers as one bipartite graph: even layers (left) against odd layers (right)."""
    layers = list(topologies)
    if not layers:
        raise SparsetopoError("the network has no layers: pass a list of one or more Topologies")
    for l, t in enumerate(layers):
        _check_size(t, f"layer {l}")
    for l in range(len(layers) - 1):
        if layers[l].n_out != layers[l + 1].n_in:
            raise SparsetopoError(
                f"layer sizes do not chain: layer {l} has n_out={layers[l].n_out} but layer {l + 1} "
                f"has n_in={layers[l + 1].n_in}; make each layer's n_in equal the previous n_out"
            )
    sizes = [layers[0].n_in] + [t.n_out for t in layers]
    # offset of layer i's nodes inside its side (even layers left, odd layers right)
    offset, side_total = [], [0, 0]
    for i, size in enumerate(sizes):
        offset.append(side_total[i % 2])
        side_total[i % 2] += size
    rows, cols = [], []
    for l, t in enumerate(layers):
        src = t.rows.astype(np.int64) + offset[l]
        dst = t.indices.astype(np.int64) + offset[l + 1]
        if l % 2 == 0:  # layer l is on the left, layer l+1 on the right
            rows.append(src), cols.append(dst)
        else:
            rows.append(dst), cols.append(src)
    r, c = np.concatenate(rows), np.concatenate(cols)
    C = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(side_total[0], side_total[1]))
    C.sum_duplicates()
    return _Bipartite(
        C=C,
        CT=C.T.tocsr(),
        isolated_inputs=int(np.count_nonzero(_node_degrees(layers, 0) == 0)),
        isolated_outputs=int(np.count_nonzero(_node_degrees(layers, len(layers)) == 0)),
    )


def _node_degrees(layers: Sequence[Topology], i: int) -> np.ndarray:
    """Degrees (in the whole network) of the nodes of layer ``i`` (0 = network inputs)."""
    degree = np.zeros(layers[0].n_in if i == 0 else layers[i - 1].n_out)
    if i > 0:
        degree += layers[i - 1].in_degrees
    if i < len(layers):
        degree += layers[i].out_degrees
    return degree


def _as_graph(graph: Graph) -> _Bipartite:
    if isinstance(graph, Topology):
        return _layer_graph(graph)
    if isinstance(graph, (list, tuple)):
        return _network_graph(graph)
    raise SparsetopoError(
        f"expected a Topology (one layer) or a list of Topologies (a network), got {type(graph).__name__}"
    )
