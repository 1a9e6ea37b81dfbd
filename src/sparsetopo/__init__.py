"""sparsetopo: neural networks whose layer connectivity is a sparse bipartite graph fixed before training.

Reference: Bourelly, Bouri, Choromanski, "Sparse Neural Network Topologies" (2022).
"""

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import CONSTRUCTIONS, Topology, build, build_stack

__all__ = ["CONSTRUCTIONS", "SparsetopoError", "Topology", "build", "build_stack", "explain", "export_onnx", "load",
           "reproduce",
           "save", "sparsify", "summary"]
__version__ = "0.1.0"


def __getattr__(name):
    # imported on first use: ``import sparsetopo.topology`` must not pull in torch and pandas
    if name == "reproduce":
        from sparsetopo.report.reproduce import reproduce

        return reproduce
    if name == "explain":
        from sparsetopo.nn.explain import explain

        return explain
    if name in ("sparsify", "summary"):
        from importlib import import_module

        # by path: the package sparsetopo.nn exports the function sparsify under the module's name
        return getattr(import_module("sparsetopo.nn.sparsify"), name)
    if name in ("save", "load", "export_onnx"):
        from sparsetopo import io

        return getattr(io, name)
    raise AttributeError(f"module 'sparsetopo' has no attribute {name!r}")
