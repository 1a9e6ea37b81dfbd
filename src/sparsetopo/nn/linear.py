"""SparseLinear: a layer whose connections are fixed by a Topology.

The paper multiplies the weight by the 0/1 adjacency "at each update" so that pruned
connections stay exactly zero. The ``masked`` backend does this as a dense weight times a
fixed mask buffer in the forward pass: the gradient of a pruned weight is then exactly 0, so
no optimizer step (momentum included, no weight decay) ever moves it off 0.

Orientation follows the paper and Keras: the weight is ``n_in x n_out`` and ``y = x W + b``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.init import initial_weights
from sparsetopo.topology import Topology

BACKENDS = ("masked",)


class SparseLinear(nn.Module):
    """``y = x @ (W * Adj) + b`` with ``Adj`` the topology's fixed adjacency.

    Parameters
    ----------
    topology : the layer's connectivity (n_in x n_out).
    init : "glorot" (the paper's, dense fan-in/out) or "glorot_sparse" (per-connection fans).
    gen : numpy Generator for the initial weights; the same generator gives the same weights
        on every backend.
    backend : "masked" (dense weight times mask).
    """

    def __init__(self, topology: Topology, init: str = "glorot", gen: np.random.Generator | None = None,
                 backend: str = "masked"):
        super().__init__()
        if backend not in BACKENDS:
            raise SparsetopoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.topology = topology
        self.backend = backend
        values = initial_weights(topology, init, gen if gen is not None else np.random.default_rng(0))
        rows = torch.from_numpy(topology.rows.astype(np.int64))
        cols = torch.from_numpy(topology.indices.astype(np.int64))
        weight = torch.zeros(topology.n_in, topology.n_out)
        weight[rows, cols] = torch.from_numpy(values)
        mask = torch.zeros(topology.n_in, topology.n_out)
        mask[rows, cols] = 1.0
        self.weight = nn.Parameter(weight)
        self.register_buffer("mask", mask, persistent=False)
        self.bias = nn.Parameter(torch.zeros(topology.n_out))
        self._edge_index = (rows, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias, x, self.weight * self.mask)

    def connected_weights(self) -> torch.Tensor:
        """The weights of the existing connections, in the topology's CSR order."""
        return self.weight.detach()[self._edge_index]

    def dense_weight(self) -> torch.Tensor:
        """The effective ``n_in x n_out`` weight (zeros where there is no connection)."""
        return (self.weight * self.mask).detach()

    def parameter_bytes(self) -> int:
        """Bytes held by this layer's parameters (optimizer state costs as much again per slot)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def extra_repr(self) -> str:
        t = self.topology
        return f"{t.construction}, {t.n_in}->{t.n_out}, k={t.k}, density={t.density:.4f}, backend={self.backend}"
