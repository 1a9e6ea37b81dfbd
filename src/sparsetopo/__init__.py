"""sparsetopo: neural networks whose layer connectivity is a sparse bipartite graph fixed before training.

Reference: Bourelly, Bouri, Choromanski, "Sparse Neural Network Topologies" (2022).
"""

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import CONSTRUCTIONS, Topology, build, build_stack

__all__ = ["CONSTRUCTIONS", "SparsetopoError", "Topology", "build", "build_stack", "export_onnx", "load", "reproduce",
           "save", "sparsify"]
__version__ = "0.1.0"


def __getattr__(name):
    # imported on first use: ``import sparsetopo.topology`` must not pull in torch and pandas
    if name == "reproduce":
        from sparsetopo.report.reproduce import reproduce

        return reproduce
    if name == "sparsify":
        from sparsetopo.nn.sparsify import sparsify

        return sparsify
    if name in ("save", "load", "export_onnx"):
        from sparsetopo import io

        return getattr(io, name)
    raise AttributeError(f"module 'sparsetopo' has no attribute {name!r}")
