"""Graph measures of a layer's (or a whole network's) connectivity: pure numpy/scipy.

The paper (Section 4.5) relates accuracy to "spectral gap and algebraic connectivity, which are
defined as the first and second largest non-zero eigen value of the Laplacian matrix
respectively". That wording is not the standard one, so we offer both readings, each under
its own name (DESIGN.md section 3):

Standard measures
    ``algebraic_connectivity``  second smallest eigenvalue of the Laplacian ``L = D - A``
        (Fiedler 1973); 0 exactly when the graph is disconnected.
    ``spectral_gap``  ``s1 - s2``, the top two singular values of the biadjacency ``B``
        (= the top two eigenvalues of the adjacency ``A``), and ``normalized_spectral_gap``
        ``(s1 - s2) / s1``.
    ``ramanujan_margin``  ``sqrt(dL - 1) + sqrt(dR - 1) - s2``: positive when the graph beats
        the Ramanujan bound of (dL, dR)-biregular bipartite graphs.
The paper's literal wording
    ``paper_laplacian_largest`` and ``paper_laplacian_second_largest``: the largest and the
    second largest non-zero Laplacian eigenvalues.
Counts
    ``components``, ``isolated_inputs``, ``isolated_outputs``, ``isolated_nodes``.

Graphs
    A *layer* (a :class:`~sparsetopo.topology.Topology`, ``n`` inputs, ``m`` outputs) is the
    bipartite graph on ``n + m`` nodes with ``A = [[0, B], [B^T, 0]]``. A *network* (a list of
    Topologies whose sizes chain) is the graph on ``n0 + n1 + ... + nL`` nodes holding every
    layer's edges. It is bipartite too (even layers against odd layers), so both are handled as
    one biadjacency ``C`` (left nodes x right nodes) and every measure above is defined for
    both. Every public measure accepts a Topology (a layer) or a sequence of them (a network).

Solvers (``method``)
    ``"dense"``  exact LAPACK: ``numpy.linalg.eigvalsh`` of the dense Laplacian and
        ``numpy.linalg.svd`` of the dense biadjacency. O(N^3) time, O(N^2) memory.
    ``"sparse"``  iterative, never densifies: the top singular values from Lanczos on the Gram
        matrix ``C^T C`` of the smaller side (applied as two sparse products, never formed);
        Laplacian extremes from Lanczos on ``L`` with the known or computed top eigenvector
        deflated; shift-invert ARPACK as the fallback for the Fiedler value when plain Lanczos
        does not converge. Every iterative eigenvalue is stopped at a residual of
        ``SOLVER_RTOL`` times its value, which bounds its error by the same amount (Weyl /
        Bauer-Fike for symmetric matrices), so both methods agree well within 1e-6 relative.
    ``"auto"``  dense up to :data:`DENSE_MAX_NODES` nodes, sparse above.

    Exactly biregular graphs (every left node of degree c, every right node of degree d) need
    only the singular values: their Laplacian eigenvalues are ``c`` and ``d`` (kernel
    vectors) and ``(c+d)/2 +- sqrt(((c-d)/2)^2 + s^2)`` for each singular value ``s`` of
    ``C``. The sparse path uses this identity when both sides have at least two nodes and the
    Fiedler value is not too small for it to be well-conditioned.

References
    M. Fiedler, "Algebraic connectivity of graphs", Czech. Math. J. 23 (1973) 298-305.
    S. Hoory, N. Linial, A. Wigderson, "Expander graphs and their applications",
        Bull. AMS 43 (2006) 439-561 (section 5.3: Ramanujan graphs; bipartite bounds).
    F. Chung, "Spectral Graph Theory", CBMS 92, AMS (1997).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence, Union

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy.linalg import eigh_tridiagonal
from scipy.sparse.csgraph import connected_components

from sparsetopo.errors import SparsetopoError
from sparsetopo.seeding import rng as make_rng
from sparsetopo.topology.value import Topology

__all__ = [
    "METHODS",
    "DENSE_MAX_NODES",
    "SOLVER_RTOL",
    "MEASURES",
    "algebraic_connectivity",
    "spectral_gap",
    "normalized_spectral_gap",
    "ramanujan_margin",
    "paper_laplacian_largest",
    "paper_laplacian_second_largest",
    "components",
    "isolated_inputs",
    "isolated_outputs",
    "layer_measures",
    "network_measures",
    "measures",
]

METHODS = ("auto", "dense", "sparse")
DENSE_MAX_NODES = 600  # "auto" uses LAPACK up to this many nodes (about 10 ms), Lanczos above
SOLVER_RTOL = 1e-8  # residual bound of every iterative eigenvalue, relative to the value
_LANCZOS_MAXITER = 5000  # plain Lanczos steps before falling back to ARPACK
_TINY_DIMENSION = 8  # operators this small are solved densely even by the sparse path
_SEED = 0  # start vectors come from seeding.rng(_SEED, "spectral", purpose): reproducible

MEASURES = (
    "algebraic_connectivity",
    "spectral_gap",
    "normalized_spectral_gap",
    "ramanujan_margin",
    "paper_laplacian_largest",
    "paper_laplacian_second_largest",
    "components",
    "isolated_inputs",
    "isolated_outputs",
    "isolated_nodes",
)

Graph = Union[Topology, Sequence[Topology]]


# -- the bipartite graph of a layer or a network -----------------------------------------------
@dataclass(frozen=True)
class _Bipartite:
    """A bipartite graph as its biadjacency ``C`` (left x right, float64 CSR) and ``C^T``."""

    C: sp.csr_matrix
    CT: sp.csr_matrix
    isolated_inputs: int
    isolated_outputs: int

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


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise SparsetopoError(f"method={method!r} is not known: choose one of {', '.join(METHODS)}")
    return method


# -- iterative eigensolvers --------------------------------------------------------------------
class _NoConvergence(Exception):
    """Plain Lanczos hit its iteration cap; the caller falls back to ARPACK."""


def _lanczos_top(matvec, start: np.ndarray, norm_bound: float,
                 rtol: float = SOLVER_RTOL, maxiter: int | None = None) -> float:
    """Largest eigenvalue of a symmetric operator by plain Lanczos.

    Three-term recurrence, no reorthogonalisation, no restarts: O(dim) memory, and a Krylov
    space that is never truncated, which matters at the clustered edge of an expander's
    spectrum where restarted ARPACK needs several times more products (2800 against 600 for
    the second singular value of a 500,000 x 500,000 random 8-regular layer). Loss of
    orthogonality only makes copies ("ghosts") of converged Ritz values, which cannot change
    the largest one. Stops when the Ritz residual ``beta_j |s_j|`` (Paige) is at most ``rtol``
    times the Ritz value, which bounds the eigenvalue's error by the same amount.
    ``norm_bound`` (an upper bound of the operator's norm) sets the absolute rounding floor of
    that test, so that an eigenvalue 0 converges too.
    """
    maxiter = _LANCZOS_MAXITER if maxiter is None else maxiter
    q = start / np.linalg.norm(start)
    q_prev = np.zeros_like(q)
    alphas, betas = [], []
    beta, next_check = 0.0, 10
    atol = 1e-13 * norm_bound  # rounding floor of a residual: an eigenvalue 0 still converges
    for j in range(maxiter):
        w = matvec(q)
        alpha = float(q @ w)
        w -= alpha * q
        w -= beta * q_prev
        beta = float(np.linalg.norm(w))
        alphas.append(alpha)
        betas.append(beta)
        invariant = beta <= atol  # the Krylov space is invariant: its Ritz values are exact
        if invariant or j + 1 >= next_check:
            theta, s = eigh_tridiagonal(np.array(alphas), np.array(betas[:-1]),
                                        select="i", select_range=(j, j))
            if invariant or beta * abs(s[-1, 0]) <= rtol * abs(theta[0]) + atol:
                return float(theta[0])
            next_check = j + 1 + max(10, min(50, (j + 1) // 50))  # every ~2% of the steps so far
        q_prev, q = q, w / beta
    raise _NoConvergence(f"Lanczos did not converge in {j + 1} steps")


def _start(dim: int, *purpose) -> np.ndarray:
    return make_rng(_SEED, "spectral", *purpose).standard_normal(dim)


def _operator(matvec, dim: int) -> sla.LinearOperator:
    return sla.LinearOperator((dim, dim), matvec=matvec, rmatvec=matvec, dtype=np.float64)


def _top_pair_arpack(matvec, dim: int, start: np.ndarray):
    """Largest eigenvalue and unit eigenvector (ARPACK, tight tolerance: used for deflation)."""
    values, vectors = sla.eigsh(_operator(matvec, dim), k=1, which="LA", v0=start,
                                tol=1e-13, maxiter=100 * dim)
    return float(values[0]), vectors[:, 0]


def _hotelling(matvec, vectors: np.ndarray, shift: float):
    """``x -> M x - shift V V^T x``: Hotelling deflation of the orthonormal columns of ``V``.

    With ``shift`` at least twice the operator's norm their eigenvalues drop below the rest of
    the spectrum, where neither ARPACK nor plain Lanczos can bring them back as the largest
    (projecting them out instead does not survive rounding in plain Lanczos). An error ``e`` in
    ``V`` moves the other eigenvalues only by O(shift |e|^2).
    """
    def deflated(x):
        return matvec(x) - shift * (vectors @ (vectors.T @ x))

    return deflated


def _top_value(matvec, dim: int, start: np.ndarray, norm_bound: float) -> float:
    """The largest eigenvalue: plain Lanczos, ARPACK if that does not converge."""
    try:
        return _lanczos_top(matvec, start, norm_bound)
    except _NoConvergence:
        values = sla.eigsh(_operator(matvec, dim), k=1, which="LA", v0=start,
                           tol=SOLVER_RTOL, return_eigenvectors=False)
        return float(values[0])


def _largest(matvec, dim: int, count: int, purpose: str, norm_bound: float,
             deflate: np.ndarray | None = None, top_pair=None) -> list[float]:
    """The ``count`` (1 or 2) largest eigenvalues, largest first, of a symmetric operator.

    ``deflate`` (orthonormal columns, exact eigenvectors) is removed by a Hotelling shift.
    ``top_pair`` = (value, unit vector), when the top eigenpair is known exactly, saves a solve
    on large operators. The second largest is the largest once the top eigenvector is deflated,
    so that a repeated top eigenvalue is counted twice (as ``eigvalsh`` does).
    """
    shift = 2.0 * norm_bound  # moves a deflated eigenvalue below the whole spectrum
    if deflate is not None:
        matvec = _hotelling(matvec, deflate, shift)
    start = _start(dim, purpose)
    if dim <= _TINY_DIMENSION:
        dense = np.column_stack([matvec(e) for e in np.eye(dim)])
        return list(np.linalg.eigvalsh((dense + dense.T) / 2)[::-1][:count])
    if count == 1:
        return [_top_value(matvec, dim, start, norm_bound)]
    # the second largest counts multiplicity: single-vector Krylov methods see one copy of a
    # repeated eigenvalue, so the top eigenvector is deflated rather than asking for k=2
    top, vector = top_pair if top_pair is not None else _top_pair_arpack(matvec, dim, start)
    second = _top_value(_hotelling(matvec, vector[:, None], shift), dim, _start(dim, purpose, 2), norm_bound)
    return [top, second]


# -- the solver: each quantity computed once per call ------------------------------------------
class _Solver:
    """Lazily computes and caches the spectra every measure is read from."""

    def __init__(self, g: _Bipartite, method: str):
        _check_method(method)
        if method == "auto":
            method = "dense" if g.n_nodes <= DENSE_MAX_NODES else "sparse"
        self.g, self.method = g, method

    @cached_property
    def components(self) -> int:
        g = self.g
        # left->right edges only, as an N x N directed graph: its weak components are the
        # undirected graph's components, without building the symmetric adjacency
        indptr = np.concatenate([g.C.indptr, np.full(g.n_right, g.C.indptr[-1])])
        square = sp.csr_matrix((g.C.data, g.C.indices + g.n_left, indptr), shape=(g.n_nodes, g.n_nodes))
        count, _ = connected_components(square, directed=True, connection="weak")
        return int(count)

    # singular values s1 >= s2 of the biadjacency (s2 = 0 when one side has a single node)
    @cached_property
    def singular_pair(self) -> tuple[float, float]:
        g = self.g
        if g.n_edges == 0:
            return 0.0, 0.0
        if self.method == "dense" or min(g.n_left, g.n_right) <= _TINY_DIMENSION:
            s = np.linalg.svd(g.C.toarray(), compute_uv=False)
            s = np.concatenate([s, [0.0, 0.0]])
            return float(s[0]), float(s[1])
        return self._sparse_singular_pair()

    def _sparse_singular_pair(self) -> tuple[float, float]:
        """Top two eigenvalues of the Gram matrix of the smaller side, never formed."""
        g = self.g
        if g.n_right <= g.n_left:
            M, MT, dim = g.C, g.CT, g.n_right
        else:
            M, MT, dim = g.CT, g.C, g.n_left

        def gram(x):
            return MT @ (M @ x)

        top_pair = None
        if g.biregular is not None:  # the all-ones vector is the top singular vector, exactly
            c, d = g.biregular
            top_pair = (c * d, np.full(dim, 1.0 / math.sqrt(dim)))
        bound = float(g.left_degrees.max() * g.right_degrees.max())  # >= s1^2
        top, second = _largest(gram, dim, 2, "gram", bound, top_pair=top_pair)
        return math.sqrt(max(top, 0.0)), math.sqrt(max(second, 0.0))

    @cached_property
    def dense_laplacian_spectrum(self) -> np.ndarray:
        return np.linalg.eigvalsh(self.g.dense_laplacian())

    @cached_property
    def _biregular_formulas(self) -> bool:
        """Whether the biregular identity gives the Laplacian extremes here (sparse path)."""
        g = self.g
        return self.method == "sparse" and g.biregular is not None and min(g.n_left, g.n_right) >= 2

    def _branch(self, s: float, sign: int) -> float:
        """Laplacian eigenvalue ``(c+d)/2 +- sqrt(((c-d)/2)^2 + s^2)`` of a biregular graph."""
        c, d = self.g.biregular
        half = (c + d) / 2
        if sign > 0:
            return half + math.sqrt(((c - d) / 2) ** 2 + s * s)
        t = c * d - s * s  # = half^2 - root^2, written so that no cancellation occurs
        return t / (half + math.sqrt(max(half * half - t, 0.0)))

    @cached_property
    def fiedler(self) -> float:
        g = self.g
        if self.components > 1 or g.n_nodes < 2:
            return 0.0
        if self.method == "dense" or g.n_nodes <= _TINY_DIMENSION:
            return float(self.dense_laplacian_spectrum[1])
        if self._biregular_formulas:
            c, d = g.biregular
            s2 = self.singular_pair[1]
            if c * d - s2 * s2 >= 0.1 * c * d:  # s2's relative error is amplified at most 10 times
                return self._branch(s2, -1)
        return self._sparse_fiedler()

    def _sparse_fiedler(self) -> float:
        """Smallest eigenvalue of L on the complement of the all-ones vector (its kernel)."""
        g, dim = self.g, self.g.n_nodes
        ones = np.full((dim, 1), 1.0 / math.sqrt(dim))
        bound = 2.0 * float(g.degrees.max())  # >= the largest Laplacian eigenvalue
        try:
            return -_largest(lambda x: -g.laplacian_matvec(x), dim, 1, "fiedler", bound, ones)[0]
        except (_NoConvergence, sla.ArpackNoConvergence):
            pass
        # shift-invert around a small negative sigma: cheap where the graph is "thin" (bands,
        # rings), which is exactly where plain Lanczos is slow
        A = sp.bmat([[None, g.C], [g.CT, None]], format="csc")
        L = (sp.diags(g.degrees) - A).tocsc()
        sigma = -1e-3 * max(1.0, float(g.degrees.min()))
        values = sla.eigsh(L, k=3, sigma=sigma, which="LM", v0=_start(dim, "fiedler", "si"),
                           tol=SOLVER_RTOL, return_eigenvectors=False)
        return float(np.sort(values)[1])

    @cached_property
    def laplacian_top_two(self) -> tuple[float, float]:
        """The largest and second largest Laplacian eigenvalues (with multiplicity)."""
        g = self.g
        if g.n_edges == 0:
            return 0.0, 0.0
        if self.method == "dense" or g.n_nodes <= _TINY_DIMENSION:
            spectrum = self.dense_laplacian_spectrum
            return float(spectrum[-1]), float(spectrum[-2])
        if self._biregular_formulas:
            c, d = g.biregular
            return c + d, self._branch(self.singular_pair[1], +1)
        top, second = _largest(g.laplacian_matvec, g.n_nodes, 2, "laplacian", 2.0 * float(g.degrees.max()))
        return top, second

    def zero_tolerance(self) -> float:
        """Laplacian eigenvalues at most this are read as zero (rounding of a 0 eigenvalue)."""
        return 1e-8 * max(1.0, 2.0 * float(self.g.degrees.max()))

    # -- the measures ------------------------------------------------------------------------
    def spectral_gap(self) -> float:
        s1, s2 = self.singular_pair
        return s1 - s2

    def normalized_spectral_gap(self) -> float | None:
        s1, s2 = self.singular_pair
        return None if s1 == 0.0 else (s1 - s2) / s1

    def ramanujan_margin(self) -> float | None:
        g = self.g
        left, right = g.n_edges / g.n_left, g.n_edges / g.n_right
        if left < 1 or right < 1:
            return None
        return math.sqrt(left - 1) + math.sqrt(right - 1) - self.singular_pair[1]

    def paper_largest(self) -> float | None:
        top, _ = self.laplacian_top_two
        return top if top > self.zero_tolerance() else None

    def paper_second_largest(self) -> float | None:
        _, second = self.laplacian_top_two
        return second if second > self.zero_tolerance() else None


# -- public measures ---------------------------------------------------------------------------
def _undefined(name: str, why: str):
    raise SparsetopoError(f"{name} is undefined for this graph: {why}")


def algebraic_connectivity(graph: Graph, method: str = "auto") -> float:
    """Second smallest eigenvalue of the Laplacian ``L = D - A`` (the Fiedler value).

    ``graph`` is a Topology (the bipartite layer graph on ``n + m`` nodes) or a list of
    Topologies (the network graph on ``n0 + ... + nL`` nodes). Positive if and only if the graph
    is connected (Fiedler 1973); connectivity is decided combinatorially first
    (``scipy.sparse.csgraph.connected_components``), so a disconnected graph gives exactly 0.0
    rather than an iterative solver's rounding. Eigenvalues count with multiplicity. This is
    the standard reading of "algebraic connectivity"; see :func:`paper_laplacian_second_largest`
    for the paper's literal wording.
    """
    return _Solver(_as_graph(graph), method).fiedler


def spectral_gap(graph: Graph, method: str = "auto") -> float:
    """``s1 - s2``: the top two singular values of the biadjacency ``B`` (layer ``n x m``).

    Equivalently the top two eigenvalues of the adjacency ``A = [[0, B], [B^T, 0]]``, whose
    spectrum is ``+-s_i`` plus zeros. A network graph is bipartite (even vs odd layers), so for a
    network this is the difference of the top two eigenvalues of its full adjacency. When one
    side has a single node, ``B`` has one singular value and ``s2`` is read as 0. For a
    (c, d)-biregular graph ``s1 = sqrt(c d)`` (Chung 1997; Hoory, Linial, Wigderson 2006).
    """
    return _Solver(_as_graph(graph), method).spectral_gap()


def normalized_spectral_gap(graph: Graph, method: str = "auto") -> float:
    """``(s1 - s2) / s1`` in [0, 1], see :func:`spectral_gap`; raises when there are no edges."""
    value = _Solver(_as_graph(graph), method).normalized_spectral_gap()
    if value is None:
        _undefined("normalized_spectral_gap", "it has no edges, so s1 = 0; add edges (k >= 1)")
    return value


def ramanujan_margin(graph: Graph, method: str = "auto") -> float:
    """``sqrt(dL - 1) + sqrt(dR - 1) - s2``, with dL, dR the mean left and right degrees.

    A (c, d)-biregular bipartite graph is Ramanujan when every non-trivial singular value is at
    most ``sqrt(c - 1) + sqrt(d - 1)`` (Hoory, Linial, Wigderson 2006, section 5.3; for
    c = d = k this is the familiar ``2 sqrt(k - 1)``); random biregular graphs come close to it.
    A positive margin means the layer's second singular value beats that bound. The bound is
    meaningful only for (near) biregular graphs, e.g. ``random_regular`` and the rotating
    constructions; for a network, dL and dR are the mean degrees of the even and odd layers.
    Raises when a mean degree is below 1 (the square roots are undefined).
    """
    value = _Solver(_as_graph(graph), method).ramanujan_margin()
    if value is None:
        _undefined("ramanujan_margin", "a mean degree is below 1; use k >= 1 and n_in >= n_out / k")
    return value


def paper_laplacian_largest(graph: Graph, method: str = "auto") -> float:
    """The largest Laplacian eigenvalue: what the paper (Section 4.3) calls "spectral gap".

    The paper defines spectral gap and algebraic connectivity "as the first and second largest
    non-zero eigen value of the Laplacian matrix respectively". Standard usage (Fiedler 1973;
    Chung 1997) takes the *smallest* end of the Laplacian spectrum and the gap of the adjacency
    spectrum (:func:`algebraic_connectivity`, :func:`spectral_gap`); the largest Laplacian
    eigenvalue instead grows with the maximum degree (it lies in [dmax + 1, 2 dmax] for a graph
    with an edge). We read the paper literally so that its plots can be remade. Raises when the
    graph has no edges (all eigenvalues are zero).
    """
    value = _Solver(_as_graph(graph), method).paper_largest()
    if value is None:
        _undefined("paper_laplacian_largest", "it has no edges, so every Laplacian eigenvalue is 0")
    return value


def paper_laplacian_second_largest(graph: Graph, method: str = "auto") -> float:
    """The second largest non-zero Laplacian eigenvalue (with multiplicity): the paper's
    "algebraic connectivity" read literally; see :func:`paper_laplacian_largest` for why this is
    non-standard. Raises when fewer than two Laplacian eigenvalues are non-zero."""
    value = _Solver(_as_graph(graph), method).paper_second_largest()
    if value is None:
        _undefined("paper_laplacian_second_largest", "fewer than two Laplacian eigenvalues are non-zero")
    return value


def components(graph: Graph) -> int:
    """Number of connected components (an isolated node counts as one)."""
    return _Solver(_as_graph(graph), "sparse").components


def isolated_inputs(graph: Graph) -> int:
    """Input neurons without any edge (a network's inputs: neurons of its first layer)."""
    return _as_graph(graph).isolated_inputs


def isolated_outputs(graph: Graph) -> int:
    """Output neurons without any edge (a network's outputs: neurons of its last layer)."""
    return _as_graph(graph).isolated_outputs


def _all(g: _Bipartite, method: str) -> dict:
    solver = _Solver(g, method)
    return {
        "algebraic_connectivity": solver.fiedler,
        "spectral_gap": solver.spectral_gap(),
        "normalized_spectral_gap": solver.normalized_spectral_gap(),
        "ramanujan_margin": solver.ramanujan_margin(),
        "paper_laplacian_largest": solver.paper_largest(),
        "paper_laplacian_second_largest": solver.paper_second_largest(),
        "components": solver.components,
        "isolated_inputs": g.isolated_inputs,
        "isolated_outputs": g.isolated_outputs,
        "isolated_nodes": int(np.count_nonzero(g.degrees == 0)),
        "method": solver.method,
    }


def layer_measures(topology: Topology, method: str = "auto") -> dict:
    """Every measure of one layer's bipartite graph, as a dict keyed by :data:`MEASURES`.

    Measures that are undefined for this graph are ``None`` rather than an error (e.g.
    ``normalized_spectral_gap`` without edges, ``ramanujan_margin`` with a mean degree below 1),
    so that the dict can describe any layer; the single-measure functions raise instead. The
    extra key ``method`` says which solver ran ("dense" or "sparse"). Shared spectra are
    computed once.
    """
    if not isinstance(topology, Topology):
        raise SparsetopoError(
            f"layer_measures takes one Topology, got {type(topology).__name__}; use network_measures for a list"
        )
    return _all(_layer_graph(topology), method)


def network_measures(topologies: Sequence[Topology], method: str = "auto") -> dict:
    """Every measure of the whole network graph (all layers, ``n0 + n1 + ... + nL`` nodes).

    Same keys as :func:`layer_measures`; ``isolated_inputs`` / ``isolated_outputs`` count the
    network's input and output neurons that have no edge. Raises when the layer sizes do not
    chain (layer l's ``n_out`` must equal layer l+1's ``n_in``).
    """
    if isinstance(topologies, Topology):
        topologies = [topologies]
    return _all(_network_graph(topologies), method)


def measures(graph: Graph, method: str = "auto") -> dict:
    """:func:`layer_measures` for a Topology, :func:`network_measures` for a list of them."""
    return _all(_as_graph(graph), method)
