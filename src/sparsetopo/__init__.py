"""sparsetopo: neural networks whose layer connectivity is a sparse bipartite graph fixed before training.

Reference: Bourelly, Bouri, Choromanski, "Sparse Neural Network Topologies" (2022).
"""

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import CONSTRUCTIONS, Topology, build, build_stack

__all__ = ["CONSTRUCTIONS", "SparsetopoError", "Topology", "build", "build_stack"]
__version__ = "0.1.0"
