"""SparseMLP: a stack of SparseLinear layers with the paper's sigmoid on every neuron.

The backend of its layers is decided once for the whole network
(:func:`sparsetopo.nn.plan.layer_backends`); a layer whose topology is built on blocks of
neurons is a :class:`~sparsetopo.nn.BlockSparseLinear`, which computes only its tiles. How it trains (optimizer, epochs, the fused
epoch) is :mod:`sparsetopo.train`'s business, not the module's.

Dropout follows the paper's variant (Section 4.4): rate ``dropout[0]`` on the input layer
and ``dropout[1]`` on every hidden layer, applied to a layer's *input* as Keras' Dropout
layers are. It draws from a torch Generator owned by the caller, never the global RNG.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.plan import layer_backends
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.seeding import rng
from sparsetopo.topology import Topology

ACTIVATIONS = {"sigmoid": torch.sigmoid, "relu": torch.relu, "tanh": torch.tanh}
#: What the output layer computes: the activation, as every other neuron (the paper), or
#: "linear" logits (for a softmax applied inside a cross-entropy loss).
OUTPUTS = ("activation", "linear")


class SparseMLP(nn.Module):
    """Layers ``topologies[0] .. topologies[-1]``; their sizes must chain."""

    def __init__(self, topologies: Sequence[Topology], activation: str = "sigmoid",
                 dropout: Sequence[float] = (0.0, 0.0), init: str = "glorot", seed: int = 0,
                 backend: str = "masked", output: str = "activation", device=None, batch_size: int | None = None):
        super().__init__()
        for a, b in zip(topologies, topologies[1:]):
            if a.n_out != b.n_in:
                raise SparsetopoError(f"layer sizes do not chain: {a.n_in}->{a.n_out} then {b.n_in}->{b.n_out}")
        if activation not in ACTIVATIONS:
            raise SparsetopoError(f"unknown activation {activation!r}: choose one of {', '.join(ACTIVATIONS)}")
        if len(dropout) != 2 or not all(0.0 <= p < 1.0 for p in dropout):
            raise SparsetopoError(f"dropout={list(dropout)} must be two rates in [0, 1): input layer, hidden layers")
        if output not in OUTPUTS:
            raise SparsetopoError(f"unknown output {output!r}: choose one of {', '.join(OUTPUTS)}")
        # device: where it will compute (CUDA: masked); batch_size: the batch "auto" predicts for
        backends = layer_backends(topologies, backend, device, batch_size=batch_size)
        self.layers = nn.ModuleList(
            BlockSparseLinear(t, init=init, gen=rng(seed, "init", l)) if t.is_blocked
            else SparseLinear(t, init=init, gen=rng(seed, "init", l), backend=b)
            for l, (t, b) in enumerate(zip(topologies, backends))
        )
        for layer in self.layers:  # "auto" also lets inference run dense where that is faster (nn.plan)
            if isinstance(layer, SparseLinear):
                layer.dense_when_faster = backend == "auto"
        self.activation_name = activation
        self.act = ACTIVATIONS[activation]
        self.output = output
        self.dropout = tuple(float(p) for p in dropout)

    @property
    def sizes(self) -> list[int]:
        return [self.layers[0].topology.n_in] + [layer.topology.n_out for layer in self.layers]

    @property
    def dropout_rates(self) -> list[float]:
        """The dropout rate on each layer's input: ``dropout[0]`` on the first, ``dropout[1]`` on the others."""
        return [self.dropout[0] if l == 0 else self.dropout[1] for l in range(len(self.layers))]

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        last = self.layers[-1]
        for layer, rate in zip(self.layers, self.dropout_rates):
            if self.training and rate > 0:
                # drawn on the CPU generator whatever the device: the same numbers everywhere
                keep = (torch.rand(x.shape, generator=generator, dtype=x.dtype) >= rate).to(x.device)
                x = x * keep / (1.0 - rate)
            x = layer(x)
            if layer is not last or self.output == "activation":
                x = self.act(x)
        return x

    def parameter_count(self) -> int:
        """Trainable numbers: one per connection plus one bias per non-input neuron."""
        return sum(layer.topology.nnz + layer.topology.n_out for layer in self.layers)

    def weight_stats(self) -> list[dict]:
        """Per layer: max, min, mean, std (population) and count of the connected weights."""
        stats = []
        for layer in self.layers:
            w = layer.connected_weights().double().cpu().numpy()
            stats.append({"max": float(w.max()), "min": float(w.min()), "mean": float(w.mean()),
                          "std": float(w.std()), "nnz": int(w.size)})
        return stats
