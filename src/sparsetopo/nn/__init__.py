"""Torch modules: SparseLinear (masked-dense backend) and SparseMLP, with their initialisers."""

from sparsetopo.nn.init import INITIALISERS, initial_weights
from sparsetopo.nn.linear import BACKENDS, SparseLinear
from sparsetopo.nn.mlp import ACTIVATIONS, SparseMLP

__all__ = ["ACTIVATIONS", "BACKENDS", "INITIALISERS", "SparseLinear", "SparseMLP", "initial_weights"]
