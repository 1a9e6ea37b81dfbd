"""The plan: which computation runs for a sparse layer, and on how many threads. One place decides.

Every choice between the ways of computing a layer is made here, from the layer's shape,
density, the batch, whether a gradient is wanted and the device; the code that computes only
asks. The choices:

* the **backend** of a network's layers, made once when they are built (:func:`layer_backends`):
  ``masked`` (dense weight times mask, parameter ``weight``) or ``sparse`` (connected weights
  only, parameter ``values``). It fixes the parameters an optimizer is built from, so it cannot
  change per call;
* the **path** of each call of a sparse-backend layer (:func:`call_path`), one of :data:`PATHS`,
  and of a block layer (:func:`block_path`), one of :data:`BLOCK_PATHS`;
* the **threads** of a call (:func:`call_threads`) and of a fused training engine (:func:`engine_threads`),
  both by the one rule :func:`sparsetopo.kernels.threads.use_threads`;
* the **tile width** of the tiled kernels (:func:`tile_width`) and the blocked kernels'
  ``wide`` argument (:func:`wide_argument`), and the batch chunks of a block layer
  (:func:`block_chunk_rows`);
* whether a **population member's** layer trains dense or as CSR (:func:`member_prefers_dense`).

The cost model
--------------
One question, dense or sparse, answered by straight lines in the work done, each fitted by
``benchmarks/bench_layers.py`` (its ``cost_model``):

* a training step (forward and backward) of an autograd layer, :class:`CostModel`:
  ``dense_overhead_s + dense_per_mac_s * n_in * n_out * batch`` for the masked backend against
  ``sparse_overhead_s + sparse_per_mac_s * nnz * batch`` for the sparse one;
* an inference forward at batch 1, the same two lines with the ``infer_*`` constants (a
  matrix-vector product is bound by memory, a matrix product by arithmetic: their costs per
  entry differ several-fold, so batch 1 has its own line). Larger inference batches use the
  training lines: both sides do a third of a step's products, so their ratio is the step's;
* a population member's layer in the fused engines (:func:`member_prefers_dense`): seconds per
  connection (CSR) against seconds per matrix entry (GEMM) inside one numba call, fitted by
  ``benchmarks/bench_layer_kernels.py``.

The constants are fixed rather than measured per process on purpose: the choice must be
deterministic, or a resumed run could rebuild its model with other parameters than its
checkpoint holds. Another machine can pass its own :class:`CostModel`. A misjudged choice
costs time, never accuracy: every path computes the layer's function.

The batch-1 lines move most between machines (a gather-bound sparse dot product against a
bandwidth-bound dense one: one AMD EPYC ran the sparse kernel at half the speed per connection
of another host of the same model name, while its dense matrix-vector product kept pace), and
they choose only between paths of the same parameters. So they alone can be measured on the
user's machine: ``sparsetopo calibrate --out FILE`` (:mod:`sparsetopo.nn.calibration`) writes
them, and a process whose environment names that file in ``SPARSETOPO_INFERENCE_COSTS`` reads
them once (:func:`inference_cost_model`); the choice stays deterministic for a given file.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numba
import torch

from sparsetopo.errors import SparsetopoError
from sparsetopo.kernels.options import BLOCK
from sparsetopo.kernels.threads import AdaptiveThreads, use_threads
from sparsetopo.kernels.tiled import HALF_TILE, TILE
from sparsetopo.topology import Topology

BACKENDS = ("auto", "masked", "sparse")
CONCRETE_BACKENDS = ("masked", "sparse")
CALIBRATION_BATCH = 32  # the paper's batch size: the batch the cost model predicts for by default

PATHS = {
    "masked": "dense weight times mask, one torch matmul (the masked backend)",
    "dense": "the connected weights as a dense matrix (rebuilt when they change), one torch matmul",
    "vector": "one example: one dot product per output over the CSC index (kernels.tiled.forward_vector)",
    "untiled": "a small layer at a small batch: one numba call per direction (kernels.batch_major)",
    "tiled": "the batch cut into tiles of 64 or 32 examples (kernels.tiled)",
}
#: The paths of a block layer (:class:`sparsetopo.nn.BlockSparseLinear`), chosen by :func:`block_path`.
BLOCK_PATHS = {
    "block": "the tiles as batched matmuls: one gather of blocks and one torch.bmm per pass (nn.block_ops)",
    "block-vector": "one example in inference on the CPU: the tiles read in place (kernels.block.block_vector)",
}


@dataclass(frozen=True)
class CostModel:
    """Predicted seconds of a layer's step, per backend (see the module docstring)."""

    dense_overhead_s: float
    dense_per_mac_s: float
    sparse_overhead_s: float
    sparse_per_mac_s: float
    infer_dense_overhead_s: float = 0.0
    infer_dense_per_mac_s: float = 0.0
    infer_sparse_overhead_s: float = 0.0
    infer_sparse_per_mac_s: float = 0.0

    def dense_seconds(self, n_in: int, n_out: int, batch: int = CALIBRATION_BATCH) -> float:
        """One training step of the masked backend."""
        return self.dense_overhead_s + self.dense_per_mac_s * n_in * n_out * batch

    def sparse_seconds(self, nnz: int, batch: int = CALIBRATION_BATCH) -> float:
        """One training step of the sparse backend."""
        return self.sparse_overhead_s + self.sparse_per_mac_s * nnz * batch

    def seconds(self, nnz: int, n_in: int, n_out: int, batch: int, training: bool) -> tuple[float, float]:
        """``(dense, sparse)``: predicted seconds of a training step, or of an inference forward."""
        if training or batch > 1:
            return self.dense_seconds(n_in, n_out, batch), self.sparse_seconds(nnz, batch)
        return (self.infer_dense_overhead_s + self.infer_dense_per_mac_s * n_in * n_out,
                self.infer_sparse_overhead_s + self.infer_sparse_per_mac_s * nnz)

    def inference_crossover_density(self, n_in: int, n_out: int) -> float:
        """The density below which one example is predicted faster on the sparse kernel."""
        entries = n_in * n_out
        dense = self.infer_dense_overhead_s + self.infer_dense_per_mac_s * entries
        return (dense - self.infer_sparse_overhead_s) / (self.infer_sparse_per_mac_s * entries)

    def crossover_density(self, n_in: int, n_out: int, batch: int = CALIBRATION_BATCH) -> float:
        """The density below which a training step is predicted faster on the sparse backend."""
        dense = self.dense_seconds(n_in, n_out, batch)
        return (dense - self.sparse_overhead_s) / (self.sparse_per_mac_s * n_in * n_out * batch)


# Fitted by bench_layers.py (its "cost_model"), one thread for both sides. The training lines:
# `taskset -c 0 python benchmarks/bench_layers.py --json --threads 1`, Intel Xeon (AVX-512),
# torch 2.13.0+cpu, numba 0.68.1, batch 32 (crossover about 72% density for 784x300). The
# inference lines: `python benchmarks/bench_layers.py --no-paper --threads 1 --batch 1 --seconds
# 0.3` (784x300 to 4096x4096 at 1-30%), AMD EPYC family 25 (AVX2), 2026-12-07: crossover about
# 16% density at 784x300 and 27% at 1024x1024 (below it the "vector" kernel). Other CPUs:
# `sparsetopo calibrate`.
CPU_COST_MODEL = CostModel(
    dense_overhead_s=8.68e-05,
    dense_per_mac_s=1.153e-10,
    sparse_overhead_s=1.88e-05,
    sparse_per_mac_s=1.72e-10,
    infer_dense_overhead_s=7.2e-07,
    infer_dense_per_mac_s=1.337e-10,
    infer_sparse_overhead_s=1.59e-05,
    infer_sparse_per_mac_s=4.40e-10,
)


#: The environment variable naming a file of measured batch-1 lines (``sparsetopo calibrate``).
INFERENCE_COSTS_ENV = "SPARSETOPO_INFERENCE_COSTS"
#: The constants such a file holds: the two batch-1 lines, each an overhead and a per-entry cost.
INFERENCE_FIELDS = ("infer_dense_overhead_s", "infer_dense_per_mac_s", "infer_sparse_overhead_s",
                    "infer_sparse_per_mac_s")


def inference_cost_model() -> CostModel:
    """:data:`CPU_COST_MODEL` with its batch-1 lines read from the file that
    ``SPARSETOPO_INFERENCE_COSTS`` names, when it names one (read once per file; see the module
    docstring); :data:`CPU_COST_MODEL` itself otherwise."""
    path = os.environ.get(INFERENCE_COSTS_ENV, "")
    return _with_inference_costs(path) if path else CPU_COST_MODEL


@functools.cache
def _with_inference_costs(path: str) -> CostModel:
    where = f"{INFERENCE_COSTS_ENV}={path}"
    try:
        with open(path) as fh:
            data = json.load(fh)
    except OSError as exc:
        raise SparsetopoError(f"{where}: cannot read it ({exc.strerror}); write it with sparsetopo calibrate "
                              f"--out {path}, or unset {INFERENCE_COSTS_ENV}") from None
    except ValueError as exc:
        raise SparsetopoError(f"{where} is not JSON ({exc}); write it again with sparsetopo calibrate") from None
    costs = data.get("costs") if isinstance(data, dict) else None
    if not isinstance(costs, dict):
        raise SparsetopoError(f"{where} holds no \"costs\" object; write it again with sparsetopo calibrate")
    for name in INFERENCE_FIELDS:
        value = costs.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise SparsetopoError(f"{where}: costs.{name} is {value!r}, not a number of seconds >= 0; write "
                                  "the file again with sparsetopo calibrate")
    return replace(CPU_COST_MODEL, **{name: float(costs[name]) for name in INFERENCE_FIELDS})


def _on_cpu(device) -> bool:
    if isinstance(device, torch.device):   # a tensor's device: no parsing (it costs a microsecond a call)
        return device.type == "cpu"
    return torch.device(device if device is not None else "cpu").type == "cpu"


def choose_backend(topology: Topology, device: torch.device | str | None = None,
                   batch: int = CALIBRATION_BATCH, cost_model: CostModel | None = None) -> str:
    """"masked" or "sparse" for this layer: the one the cost model predicts faster to train.

    ``device``: where the layer will compute (CPU when None); off CPU always "masked" (the
    sparse kernels are CPU-only). ``cost_model``: defaults to :data:`CPU_COST_MODEL`.
    """
    if not _on_cpu(device):
        return "masked"
    dense, sparse = (cost_model or CPU_COST_MODEL).seconds(topology.nnz, topology.n_in, topology.n_out, batch, True)
    return "sparse" if sparse < dense else "masked"


def layer_backends(topologies: Sequence[Topology], backend: str = "auto", device=None,
                   cost_model: CostModel | None = None, batch_size: int | None = None) -> list[str]:
    """The concrete backend ("masked" or "sparse") of each layer of one network.

    ``backend``: "masked" or "sparse" for every layer, or "auto": every layer sparse when
    :func:`choose_backend` prefers sparse for *each*, else every layer masked. Mixing is never
    worth it: it rules out the fused epoch, and alternating torch's and numba's thread pools
    within one step makes them compete for the same cores. ``device``: where the network
    computes (CPU when None). ``batch_size``: the examples per step it will train on (None: 32).
    """
    if backend not in BACKENDS:
        raise SparsetopoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        batch = CALIBRATION_BATCH if batch_size is None else int(batch_size)
        if batch < 1:
            raise SparsetopoError(f"batch_size={batch_size} must be a positive number of examples")
        choices = [choose_backend(t, device, batch=batch, cost_model=cost_model) for t in topologies]
        backend = "sparse" if all(c == "sparse" for c in choices) else "masked"
    elif backend == "sparse" and not _on_cpu(device):
        raise SparsetopoError(
            f"backend='sparse' computes on CPU only, not on {device}: use backend='masked' or 'auto'"
        )
    return [backend] * len(topologies)


# A small layer at a small batch (at most SMALL_BATCH rows, fewer than SMALL_OUTPUTS outputs: the
# paper's 784-300-10 at batch 32) trains on the untiled kernels of kernels.batch_major, one numba
# call per direction: cutting 32 rows into tiles costs more there than it saves, while from 512
# outputs the two are even or the tiles win (benchmarks/bench_small_batch.py times both).
SMALL_BATCH = 32
SMALL_OUTPUTS = 512


def call_path(nnz: int, n_in: int, n_out: int, batch: int, grad: bool, dense_when_faster: bool,
              cost_model: CostModel | None = None) -> str:
    """The path (a key of :data:`PATHS`) of one call of a sparse-backend layer.

    ``grad``: whether the call records a graph for a backward (training). ``dense_when_faster``:
    whether an inference call may run on the dense matrix of the connected weights where the
    cost model predicts it faster (layers built with ``backend="auto"``); a training call cannot,
    its gradient must reach the connected weights only.
    """
    if grad:
        return "untiled" if batch <= SMALL_BATCH and n_out < SMALL_OUTPUTS else "tiled"
    if dense_when_faster:
        dense, sparse = (cost_model or inference_cost_model()).seconds(nnz, n_in, n_out, batch, False)
        if dense < sparse:
            return "dense"
    return "vector" if batch == 1 else "tiled"


#: The smallest tile (b_in * b_out entries) the one-example kernel reads: on 1x1 tiles its
#: per-tile bookkeeping made it 1.6-2x slower than the batched matmuls, from 4x4 it is faster.
BLOCK_VECTOR_MIN_TILE = 16


def block_path(batch: int, grad: bool, device, dtype: torch.dtype, tile_entries: int) -> str:
    """The path (a key of :data:`BLOCK_PATHS`) of one call of a block layer with tiles of
    ``tile_entries`` numbers: ``block-vector`` for one float32 example on the CPU with no
    gradient wanted and tiles of at least :data:`BLOCK_VECTOR_MIN_TILE`, where the batched
    matmuls' gathers and transposes cost more than the products
    (``benchmarks/bench_layers.py --block`` times the layer, docs/benchmarks.md); ``block``
    otherwise."""
    if (batch == 1 and not grad and tile_entries >= BLOCK_VECTOR_MIN_TILE and _on_cpu(device)
            and dtype == torch.float32):
        return "block-vector"
    return "block"


#: A block layer's batched matmuls take the batch in chunks whose gathered blocks fill about
#: this many floats (4 MiB), so that they are still in cache for the matmul; measured at 1024
#: wide, blocks of 16 and 32, batch 512-2048, 1.3-2x faster forward and input gradient than the
#: whole batch at once, and faster than chunks of 2 or 4 times this (bench_layers --block).
BLOCK_CHUNK_FLOATS = 1 << 20
#: The fewest examples in a chunk: a matmul of fewer rows runs well below its rate.
BLOCK_CHUNK_MIN_ROWS = 256


def block_chunk_rows(batch: int, row_floats: int) -> int:
    """Examples per chunk of a block layer's gathers and matmuls, for gathered rows of
    ``row_floats`` floats: :data:`BLOCK_CHUNK_FLOATS` worth, at least
    :data:`BLOCK_CHUNK_MIN_ROWS`; the whole ``batch`` (at least 1) when that many rows would
    gather over four times :data:`BLOCK_CHUNK_FLOATS` (wide layers, 4096 wide in blocks of 32:
    no chunk size tried there beat the whole batch)."""
    rows = max(BLOCK_CHUNK_MIN_ROWS, BLOCK_CHUNK_FLOATS // max(row_floats, 1))
    return max(batch, 1) if rows * row_floats > 4 * BLOCK_CHUNK_FLOATS else rows


def block_keeps_gathered(batch: int, row_floats: int) -> bool:
    """Whether a block layer gathers the whole ``batch`` (rows of ``row_floats`` floats) into a
    new tensor and keeps it for the tile gradient: when it holds at most
    :data:`BLOCK_CHUNK_FLOATS` floats (batches up to a few hundred at 1024 wide). Gathering
    again and the scratch tensors' bookkeeping took about a tenth of a training step at batch
    32-128 there (``bench_layers --block``, docs/benchmarks.md); a larger batch would keep ``D`` times its input alive until the backward, so it goes
    through the scratch tensors in chunks (:func:`block_chunk_rows`) and is gathered again."""
    return batch * row_floats <= BLOCK_CHUNK_FLOATS


THREADS = AdaptiveThreads()  # the per-site memory of which thread count has lately been faster


def call_threads(site, work: int) -> int:
    """Ranges to split one call of an autograd layer into (numba's thread count), or 0 for the
    calling thread: the rule of :func:`~sparsetopo.kernels.threads.use_threads`, then, for a
    call large enough to have a choice, whichever has lately been faster at ``site``
    (:class:`~sparsetopo.kernels.threads.AdaptiveThreads`: a busy core does not stall it)."""
    return THREADS.chunks(site, work)


class ThreadClock:
    """``with ThreadClock(site, work) as chunks:`` runs one call on the threads
    :func:`call_threads` picks (``chunks``: ranges to split into, 0 for the calling thread) and
    tells the plan's memory how long it took, when the choice matters (enough work for the
    pool); otherwise it costs nothing."""

    def __init__(self, site, work: int):
        self.site, self.chunks = site, call_threads(site, work)
        self.timed = THREADS.timed(work)

    def __enter__(self) -> int:
        self.tick = time.perf_counter() if self.timed else 0.0
        return self.chunks

    def __exit__(self, *exc):
        if self.timed:
            THREADS.record(self.site, self.chunks, time.perf_counter() - self.tick)


def engine_threads(nnz: int, batch: int) -> bool:
    """Whether a layer's kernels may use the thread pool inside a fused training engine
    (:mod:`sparsetopo.train.fused`): the static rule; the sequential epoch then runs in
    segments and asks :class:`ThreadClock` per segment whether the pool is worth it now."""
    return use_threads(nnz, batch)


def thread_count(nnz: int, batch: int) -> int:
    """The threads a call of this size may use: numba's thread count when the rule allows the pool."""
    return numba.get_num_threads() if use_threads(nnz, batch) else 1


def tile_width(batch: int) -> int:
    """Examples per tile of the tiled kernels: ``TILE``, ``HALF_TILE`` for 32..63 examples (less
    padding), or the whole batch when it is smaller. Measured (one core, 1024x1024 at 10%):
    64-wide tiles run 33-36 GFLOP/s at batch 128-512 where 32-wide ones ran 25-30."""
    if batch >= TILE:
        return TILE
    return HALF_TILE if batch >= HALF_TILE else max(batch, 1)


def wide_argument(batch: int) -> bool | None:
    """The blocked kernels' ``wide`` argument for calls of at most ``batch`` columns: None when
    they fit in one register block (the code for wider batches is then not compiled, see
    :mod:`sparsetopo.kernels.layer`), else True."""
    return None if batch <= BLOCK else True


# A population member's layer in the fused engines (kernels.dense against the CSR kernels of
# kernels.layer): seconds per connection (CSR) and per matrix entry (GEMM) of one example's
# training step, medians over the paper grid's layer shapes and densities measured on one core
# with the paper's batch of 32 by ``python benchmarks/bench_layer_kernels.py`` (AMD EPYC,
# 2026-11-30). Their ratio is the density above which a layer is cheaper dense: about 0.3.
CSR_SECONDS_PER_CONNECTION = 3.7e-10
GEMM_SECONDS_PER_ENTRY = 1.15e-10
# A narrower layer (the 10 outputs) runs the GEMM at about half its rate per entry, so the two
# constants above do not apply to it. bench_layer_kernels (300 -> 10, 2026-11-30): dense steps
# take 0.71-0.75 of CSR's when the layer is fully connected, 0.96-1.01 at density 0.8 and
# 1.1-3.0 below; such a layer is held dense only when every connection exists.
DENSE_MIN_OUTPUTS = 32


def member_prefers_dense(nnz: int, n_in: int, n_out: int) -> bool:
    """Whether a population member's layer with ``nnz`` of its ``n_in x n_out`` possible
    connections trains faster stored dense (GEMMs over every entry) than as CSR."""
    if n_out < DENSE_MIN_OUTPUTS or n_in < DENSE_MIN_OUTPUTS:
        return nnz == n_in * n_out
    return GEMM_SECONDS_PER_ENTRY * n_in * n_out < CSR_SECONDS_PER_CONNECTION * nnz
