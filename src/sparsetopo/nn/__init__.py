"""Torch modules: SparseLinear (masked-dense and truly sparse backends), BlockSparseLinear (dense
tiles between blocks of neurons), SparseConv1d/2d/3d, SparseMLP, torch's recurrent layers and
attention with masked weights (SparseLSTM, SparseGRU, SparseRNN, SparseMultiheadAttention), and
:func:`sparsify`, which puts them into any PyTorch model.

Torch modules only: no optimizer, no epoch. The numba kernels under the sparse backend live
in :mod:`sparsetopo.kernels`, their autograd Function in :mod:`sparsetopo.nn.sparse_autograd`,
and every choice of backend, kernel and threads in :mod:`sparsetopo.nn.plan`, which
:func:`explain` shows per layer. Training is :mod:`sparsetopo.train`.
"""

from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.conv import SparseConv1d, SparseConv2d, SparseConv3d, SparseConvNd
from sparsetopo.nn.coverage import Coverage, CoverageWarning
from sparsetopo.nn.explain import Explanation, LayerPlan, explain
from sparsetopo.nn.init import INITIALISERS, initial_weights
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.attention import SparseMultiheadAttention
from sparsetopo.nn.mlp import ACTIVATIONS, SparseMLP
from sparsetopo.nn.plan import BACKENDS, CostModel, choose_backend, layer_backends
from sparsetopo.nn.recurrent import SparseGRU, SparseLSTM, SparseRNN
from sparsetopo.nn.sparse_index import SparseIndex
from sparsetopo.nn.sparsify import sparsify, summarize, summary

__all__ = ["ACTIVATIONS", "BACKENDS", "INITIALISERS", "BlockSparseLinear", "CostModel", "Coverage", "CoverageWarning",
           "Explanation", "LayerPlan", "SparseConv1d", "SparseConv2d", "SparseConv3d", "SparseConvNd", "SparseGRU",
           "SparseIndex", "SparseLSTM", "SparseLinear", "SparseMLP", "SparseMultiheadAttention", "SparseRNN",
           "choose_backend", "explain", "initial_weights", "layer_backends", "sparsify", "summarize", "summary"]
