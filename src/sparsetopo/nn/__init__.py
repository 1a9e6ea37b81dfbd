"""Torch modules: SparseLinear (masked-dense and truly sparse backends) and SparseMLP.

Kernels of the sparse backend live in :mod:`sparsetopo.nn.kernels`, its autograd Function in
:mod:`sparsetopo.nn.sparse_ops`, the fused training epoch in :mod:`sparsetopo.nn.fused`, and
the "auto" choice between backends in :mod:`sparsetopo.nn.backend`.
"""

from sparsetopo.nn.backend import BACKENDS, CostModel, choose_backend
from sparsetopo.nn.init import INITIALISERS, initial_weights
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.mlp import ACTIVATIONS, SparseMLP

__all__ = ["ACTIVATIONS", "BACKENDS", "INITIALISERS", "CostModel", "SparseLinear", "SparseMLP",
           "choose_backend", "initial_weights"]
