"""Torch modules: SparseLinear (masked-dense and truly sparse backends), BlockSparseLinear (dense
tiles between blocks of neurons), SparseConv2d, SparseMLP, torch's recurrent layers and attention
with masked weights (SparseLSTM, SparseGRU, SparseRNN, SparseMultiheadAttention), and
:func:`sparsify`, which puts them into any PyTorch model.

Torch modules only: no optimizer, no epoch. The numba kernels under the sparse backend live
in :mod:`sparsetopo.kernels`, their autograd Function in :mod:`sparsetopo.nn.sparse_ops`, and
the one rule deciding each layer's backend in :mod:`sparsetopo.nn.backend`
(:func:`layer_backends`). Training is :mod:`sparsetopo.train`.
"""

from sparsetopo.nn.backend import BACKENDS, CostModel, choose_backend, layer_backends
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.conv import SparseConv2d
from sparsetopo.nn.coverage import Coverage, CoverageWarning
from sparsetopo.nn.init import INITIALISERS, initial_weights
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.attention import SparseMultiheadAttention
from sparsetopo.nn.mlp import ACTIVATIONS, SparseMLP
from sparsetopo.nn.recurrent import SparseGRU, SparseLSTM, SparseRNN
from sparsetopo.nn.sparse_ops import SparseIndex
from sparsetopo.nn.sparsify import sparsify, summarize, summary

__all__ = ["ACTIVATIONS", "BACKENDS", "INITIALISERS", "BlockSparseLinear", "CostModel", "Coverage", "CoverageWarning",
           "SparseConv2d", "SparseGRU", "SparseIndex", "SparseLSTM", "SparseLinear", "SparseMLP",
           "SparseMultiheadAttention", "SparseRNN", "choose_backend", "initial_weights",
           "layer_backends", "sparsify", "summarize", "summary"]
