"""SparseMLP: a stack of SparseLinear layers with the paper's sigmoid on every neuron.

Dropout follows the paper's variant (Section 4.4): rate ``dropout[0]`` on the input layer
and ``dropout[1]`` on every hidden layer, applied to a layer's *input* as Keras' Dropout
layers are. It draws from a torch Generator owned by the caller, never the global RNG.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.backend import choose_backend
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.seeding import rng
from sparsetopo.topology import Topology

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}


def auto_backends(topologies: Sequence[Topology], device=None) -> list[str]:
    """The backend of each layer under "auto": sparse for all layers if the measured cost model
    (:func:`sparsetopo.nn.backend.choose_backend`) prefers sparse for every one, else masked
    for all. Mixing is never worth it: it rules out the fused epoch, and alternating torch's
    and numba's thread pools within one step makes them fight over the same cores (measured:
    784-300-10 at density 1 with a sparse 300x10 output layer ran slower than all-masked)."""
    choices = [choose_backend(t, device) for t in topologies]
    return ["sparse"] * len(choices) if all(c == "sparse" for c in choices) else ["masked"] * len(choices)


class SparseMLP(nn.Module):
    """Layers ``topologies[0] .. topologies[-1]``; their sizes must chain."""

    def __init__(self, topologies: Sequence[Topology], activation: str = "sigmoid",
                 dropout: Sequence[float] = (0.0, 0.0), init: str = "glorot", seed: int = 0,
                 backend: str = "masked"):
        super().__init__()
        for a, b in zip(topologies, topologies[1:]):
            if a.n_out != b.n_in:
                raise SparsetopoError(f"layer sizes do not chain: {a.n_in}->{a.n_out} then {b.n_in}->{b.n_out}")
        if activation not in ACTIVATIONS:
            raise SparsetopoError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if len(dropout) != 2 or not all(0.0 <= p < 1.0 for p in dropout):
            raise SparsetopoError(f"dropout={list(dropout)} must be two rates in [0, 1): input layer, hidden layers")
        backends = [backend] * len(topologies)
        if backend == "auto":
            backends = auto_backends(topologies)
        self.layers = nn.ModuleList(
            SparseLinear(t, init=init, gen=rng(seed, "init", l), backend=b)
            for l, (t, b) in enumerate(zip(topologies, backends))
        )
        self.activation_name = activation
        self.act = ACTIVATIONS[activation]
        self.dropout = tuple(float(p) for p in dropout)

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].topology.n_in] + [layer.topology.n_out for layer in self.layers]

    @property
    def dropout_rates(self) -> list[float]:
        """The dropout rate on each layer's input: ``dropout[0]`` on the first, ``dropout[1]`` on the others."""
        return [self.dropout[0] if l == 0 else self.dropout[1] for l in range(len(self.layers))]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for layer, rate in zip(self.layers, self.dropout_rates):
            if self.training and rate > 0:
                keep = torch.rand(x.shape, generator=generator, dtype=x.dtype) >= rate
                x = x * keep / (1.0 - rate)
            x = self.act(layer(x))
        return x

    def fused_epoch(self, optimizer):
        """A :class:`sparsetopo.nn.fused.FusedEpoch` training this model with ``optimizer`` in one
        numba call per epoch, or None when this model or optimizer needs the autograd path
        (a masked layer, dropout, another activation or optimizer setting)."""
        from sparsetopo.nn.fused import FusedEpoch

        return FusedEpoch.for_model(self, optimizer)

    def parameter_count(self) -> int:
        """Trainable numbers: one per connection plus one bias per non-input neuron."""
        return sum(layer.topology.nnz + layer.topology.n_out for layer in self.layers)

    def weight_stats(self) -> list[dict]:
        """Per layer: max, min, mean, std (population) and count of the connected weights."""
        stats = []
        for layer in self.layers:
            w = layer.connected_weights().double().numpy()
            stats.append({"max": float(w.max()), "min": float(w.min()), "mean": float(w.mean()),
                          "std": float(w.std()), "nnz": int(w.size)})
        return stats
