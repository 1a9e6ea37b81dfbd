"""sparsetopo: neural networks whose layer connectivity is a sparse bipartite graph fixed before training.

Reference: Bourelly, Bouri, Choromanski, "Sparse Neural Network Topologies" (2022).
"""

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import CONSTRUCTIONS, Topology, build, build_stack

# name -> the module that defines it, imported on first use: ``import sparsetopo`` (and
# ``import sparsetopo.topology``) must not pull in torch, numba or pandas. By module path, since
# the package sparsetopo.nn exports the function sparsify under the module's name.
LAZY = {
    "reproduce": "sparsetopo.report.reproduce",
    "sparsify": "sparsetopo.nn.sparsify",
    "summary": "sparsetopo.nn.sparsify",
    "save": "sparsetopo.io",
    "load": "sparsetopo.io",
    "export_onnx": "sparsetopo.onnx",
    "explain": "sparsetopo.nn.explain",
}

__all__ = ["CONSTRUCTIONS", "SparsetopoError", "Topology", "build", "build_stack", *LAZY]
__version__ = "0.1.0"


def __getattr__(name):
    if name not in LAZY:
        raise AttributeError(f"module 'sparsetopo' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(LAZY[name]), name)
