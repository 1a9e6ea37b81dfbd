"""Torch modules: SparseLinear (masked-dense and truly sparse backends) and SparseMLP.

Torch modules only: no optimizer, no epoch. The numba kernels under the sparse backend live
in :mod:`sparsetopo.kernels`, their autograd Function in :mod:`sparsetopo.nn.sparse_ops`, and
the one rule deciding each layer's backend in :mod:`sparsetopo.nn.backend`
(:func:`layer_backends`). Training is :mod:`sparsetopo.train`.
"""

from sparsetopo.nn.backend import BACKENDS, CostModel, choose_backend, layer_backends
from sparsetopo.nn.init import INITIALISERS, initial_weights
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.mlp import ACTIVATIONS, SparseMLP
from sparsetopo.nn.sparse_ops import SparseIndex

__all__ = ["ACTIVATIONS", "BACKENDS", "INITIALISERS", "CostModel", "SparseIndex", "SparseLinear", "SparseMLP",
           "choose_backend", "initial_weights", "layer_backends"]
