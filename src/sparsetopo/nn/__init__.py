"""Torch modules: SparseLinear (masked-dense and truly sparse backends), BlockSparseLinear (dense
tiles between blocks of neurons), SparseConv1d/2d/3d, SparseMLP, and :func:`sparsify`, which puts them
into any PyTorch model.

Torch modules only: no optimizer, no epoch. The numba kernels under the sparse backend live
in :mod:`sparsetopo.kernels`, their autograd Function in :mod:`sparsetopo.nn.sparse_ops`, and
the one rule deciding each layer's backend in :mod:`sparsetopo.nn.backend`
(:func:`layer_backends`). Training is :mod:`sparsetopo.train`.
"""

from sparsetopo.nn.backend import BACKENDS, CostModel, choose_backend, layer_backends
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.conv import SparseConv1d, SparseConv2d, SparseConv3d, SparseConvNd
from sparsetopo.nn.coverage import Coverage, CoverageWarning
from sparsetopo.nn.init import INITIALISERS, initial_weights
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.mlp import ACTIVATIONS, SparseMLP
from sparsetopo.nn.sparse_ops import SparseIndex
from sparsetopo.nn.sparsify import sparsify, summarize, summary

__all__ = ["ACTIVATIONS", "BACKENDS", "INITIALISERS", "BlockSparseLinear", "CostModel", "Coverage", "CoverageWarning",
           "SparseConv1d", "SparseConv2d", "SparseConv3d", "SparseConvNd", "SparseIndex", "SparseLinear", "SparseMLP",
           "choose_backend", "initial_weights", "layer_backends", "sparsify", "summarize", "summary"]
