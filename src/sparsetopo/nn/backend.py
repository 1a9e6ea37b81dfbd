"""Choosing the backend of every layer: ``masked`` (dense weight times mask) or ``sparse`` (numba kernels).

One rule, one place: :func:`layer_backends`. An explicit backend applies to every layer.
``"auto"`` is decided once per network: every layer sparse when the cost model predicts the
sparse backend faster for *each* layer, otherwise every layer masked. Mixing is never worth
it: it rules out the fused epoch, and alternating torch's and numba's thread pools within one
step makes them compete for the same cores (784-300-10 at density 1 with a sparse 300x10
output layer runs slower than all-masked). A lone :class:`~sparsetopo.nn.SparseLinear` is a
network of one layer under the same rule.

The per-layer prediction, :func:`choose_backend`, compares the *predicted* cost of one
training step (forward and backward) of the layer under each backend.
The predictions come from :class:`CostModel`, a straight line per backend in the work done:

* masked: ``dense_overhead_s + dense_per_mac_s * n_in * n_out * batch`` (density-independent:
  a dense matmul does the same work whatever the mask);
* sparse: ``sparse_overhead_s + sparse_per_mac_s * nnz * batch``.

The four constants are *measured*, not guessed: ``benchmarks/bench_layers.py`` times both
backends (784->300 at several densities and a small 64->10 layer, batch 32) and fits them; the
``CPU_COST_MODEL`` below is the fit it printed on the machine named in its docstring. They
are fixed constants rather than a per-process calibration on purpose: the choice must be
deterministic, or a resumed run could rebuild its model with other parameters than the
checkpoint holds. A different machine can pass its own :class:`CostModel`.

On CUDA the masked backend is always chosen: the sparse kernels are CPU-only, and a dense
GPU matmul beats a scattered one at the densities of the paper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import Topology

BACKENDS = ("auto", "masked", "sparse")
CONCRETE_BACKENDS = ("masked", "sparse")
CALIBRATION_BATCH = 32  # the paper's batch size: the batch the cost model predicts for by default


@dataclass(frozen=True)
class CostModel:
    """Predicted seconds of one forward+backward step of a layer, per backend (see module doc)."""

    dense_overhead_s: float
    dense_per_mac_s: float
    sparse_overhead_s: float
    sparse_per_mac_s: float

    def dense_seconds(self, n_in: int, n_out: int, batch: int = CALIBRATION_BATCH) -> float:
        return self.dense_overhead_s + self.dense_per_mac_s * n_in * n_out * batch

    def sparse_seconds(self, nnz: int, batch: int = CALIBRATION_BATCH) -> float:
        return self.sparse_overhead_s + self.sparse_per_mac_s * nnz * batch

    def crossover_density(self, n_in: int, n_out: int, batch: int = CALIBRATION_BATCH) -> float:
        """The density below which the sparse backend is predicted faster for this layer shape."""
        dense = self.dense_seconds(n_in, n_out, batch)
        return (dense - self.sparse_overhead_s) / (self.sparse_per_mac_s * n_in * n_out * batch)


# Fitted by `taskset -c 0 python benchmarks/bench_layers.py --json --threads 1` (its
# "cost_model"): Intel Xeon (AVX-512), torch 2.13.0+cpu, numba 0.68.1, batch 32, one thread for
# both backends. Both gain similarly from a second thread, so the crossover is what matters:
# about 72% density for 784x300; below it sparse. See docs/design.md, "Layer cost model".
CPU_COST_MODEL = CostModel(
    dense_overhead_s=8.68e-05,
    dense_per_mac_s=1.153e-10,
    sparse_overhead_s=1.88e-05,
    sparse_per_mac_s=1.72e-10,
)


def choose_backend(topology: Topology, device: torch.device | str | None = None,
                   batch: int = CALIBRATION_BATCH, cost_model: CostModel | None = None) -> str:
    """"masked" or "sparse" for this layer: the one the measured cost model predicts faster.

    ``device``: where the layer will compute (CPU when None); on CUDA always "masked".
    ``cost_model``: defaults to :data:`CPU_COST_MODEL`; tests and other machines inject theirs.
    """
    if torch.device(device if device is not None else "cpu").type != "cpu":
        return "masked"
    model = cost_model if cost_model is not None else CPU_COST_MODEL
    sparse = model.sparse_seconds(topology.nnz, batch)
    dense = model.dense_seconds(topology.n_in, topology.n_out, batch)
    return "sparse" if sparse < dense else "masked"


def layer_backends(topologies: Sequence[Topology], backend: str = "auto", device=None,
                   cost_model: CostModel | None = None, batch_size: int | None = None) -> list[str]:
    """The concrete backend ("masked" or "sparse") of each layer of one network.

    ``backend``: "masked" or "sparse" for every layer, or "auto" (see the module docstring:
    sparse for all layers when :func:`choose_backend` prefers sparse for each, else masked for
    all). ``device``: where the network computes (CPU when None); the sparse backend is CPU only.
    ``batch_size``: the examples per step the network will train on (None: the paper's 32).
    """
    if backend not in BACKENDS:
        raise SparsetopoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        batch = CALIBRATION_BATCH if batch_size is None else int(batch_size)
        if batch < 1:
            raise SparsetopoError(f"batch_size={batch_size} must be a positive number of examples")
        choices = [choose_backend(t, device, batch=batch, cost_model=cost_model) for t in topologies]
        backend = "sparse" if all(c == "sparse" for c in choices) else "masked"
    elif backend == "sparse" and device is not None and torch.device(device).type != "cpu":
        raise SparsetopoError(
            f"backend='sparse' computes on CPU only, not on {device}: use backend='masked' or 'auto'"
        )
    return [backend] * len(topologies)
