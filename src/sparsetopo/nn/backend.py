"""Choosing a layer's backend: ``masked`` (dense weight times mask) or ``sparse`` (numba kernels).

``backend="auto"`` asks :func:`choose_backend`, which compares the *predicted* cost of one
training step (forward and backward) of the layer under each backend and takes the cheaper.
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
# "cost_model"), on an Intel Xeon (AVX-512) with 2 cores, torch 2.13.0+cpu, numba 0.68.1, batch
# 32, one thread for both, pinned to one core while another job used the other (load average
# about 5), with the SIMD kernels and the one-pass backward. Both backends gain similarly from
# a second thread, so the crossover is what matters: about 72% density for 784x300; below it
# sparse. See README "Sparse backend".
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


def resolve_backend(backend: str, topology: Topology, device=None) -> str:
    """The concrete backend for a requested one ("auto" decided by :func:`choose_backend`)."""
    if backend not in BACKENDS:
        raise SparsetopoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return choose_backend(topology, device)
    if backend == "sparse" and device is not None and torch.device(device).type != "cpu":
        raise SparsetopoError(
            f"backend='sparse' computes on CPU only, not on {device}: use backend='masked' or 'auto'"
        )
    return backend
