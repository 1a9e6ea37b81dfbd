"""Graph measures of a layer's (or a whole network's) connectivity: pure numpy/scipy.

The paper (Section 4.5) relates accuracy to "spectral gap and algebraic connectivity, which are
defined as the first and second largest non-zero eigen value of the Laplacian matrix
respectively". That wording is not the standard one, so we offer both readings, each under
its own name (docs/design.md, "What the paper leaves open"):

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

from sparsetopo.spectral.eigen import SOLVER_RTOL
from sparsetopo.spectral.graph import Graph
from sparsetopo.spectral.compute import (
    DENSE_MAX_NODES,
    MEASURES,
    METHODS,
    algebraic_connectivity,
    components,
    isolated_inputs,
    isolated_outputs,
    layer_measures,
    measures,
    network_measures,
    normalized_spectral_gap,
    paper_laplacian_largest,
    paper_laplacian_second_largest,
    ramanujan_margin,
    spectral_gap,
)

# each measure of MEASURES that has a function of its own (``isolated_nodes`` is only a key of
# the measures' dicts), written once there
__all__ = ["METHODS", "DENSE_MAX_NODES", "SOLVER_RTOL", "MEASURES", *(name for name in MEASURES if name in globals()),
           "layer_measures", "network_measures", "measures"]
