"""The measures API: :class:`_Solver` computes and caches each graph's spectra once, and the
public measure functions (and ``layer_measures`` / ``network_measures`` / ``measures``) read them.
"""

from __future__ import annotations

import math
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy.sparse.csgraph import connected_components

from sparsetopo.errors import SparsetopoError
from sparsetopo.spectral.eigen import SOLVER_RTOL, _TINY_DIMENSION, _largest, _NoConvergence, _start
from sparsetopo.spectral.graph import Graph, _as_graph, _Bipartite, _layer_graph, _network_graph
from sparsetopo.topology.value import Topology

METHODS = ("auto", "dense", "sparse")
DENSE_MAX_NODES = 600  # "auto" uses LAPACK up to this many nodes, where a dense solve stays cheap, Lanczos above

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


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise SparsetopoError(f"method={method!r} is not known: choose one of {', '.join(METHODS)}")
    return method


# -- the solver: each quantity computed once per call ------------------------------------------
class _Solver:
    """Lazily computes and caches the spectra every measure is read from."""

    def __init__(self, g: _Bipartite, method: str):
        _check_method(method)
        if method == "auto":
            method = "dense" if g.n_nodes <= DENSE_MAX_NODES else "sparse"
        # a block layer's spectra come exactly from its graph of blocks (LAPACK on the blocks),
        # whatever the method asked for
        self.quotient = g.quotient
        self.g, self.method = g, "dense" if g.quotient is not None else method

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
        if self.quotient is not None or self.method == "dense" or min(g.n_left, g.n_right) <= _TINY_DIMENSION:
            s = self.quotient.singular_values() if self.quotient is not None else \
                np.linalg.svd(g.C.toarray(), compute_uv=False)
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
        if self.quotient is not None:
            return self.quotient.laplacian_spectrum
        return np.linalg.eigvalsh(self.g.dense_laplacian())

    @property
    def _exact_spectrum(self) -> bool:
        """Whether the Laplacian's extremes are read off its whole spectrum (LAPACK)."""
        return self.quotient is not None or self.method == "dense" or self.g.n_nodes <= _TINY_DIMENSION

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
        if self._exact_spectrum:
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
        if self._exact_spectrum:
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
