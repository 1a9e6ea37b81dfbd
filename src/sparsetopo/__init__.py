"""sparsetopo: neural networks whose layer connectivity is a sparse bipartite graph fixed before training.

Reference: Bourelly, Bouri, Choromanski, "Sparse Neural Network Topologies" (2022).
"""

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import CONSTRUCTIONS, Topology, build, build_stack

__all__ = ["CONSTRUCTIONS", "SparsetopoError", "Topology", "build", "build_stack", "reproduce"]
__version__ = "0.1.0"


def __getattr__(name):
    # imported on first use: ``import sparsetopo.topology`` must not pull in torch and pandas
    if name == "reproduce":
        from sparsetopo.report.reproduce import reproduce

        return reproduce
    raise AttributeError(f"module 'sparsetopo' has no attribute {name!r}")
