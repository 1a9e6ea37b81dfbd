"""The fused population engine: every member's epoch in one numba call, over its connected weights only.

For the paper's recipe (sigmoid, MSE, Nesterov SGD): one call per epoch
(:func:`sparsetopo.engines.population.population_batches`) trains every member over its
*connected* weights (CSR/CSC per member, concatenated per layer), the members spread over the
cores with ``prange``. Each member runs the sequential fused epoch's body
(:func:`sparsetopo.engines.step.train_batches`) and its SIMD kernels on its own thread, and never
mixes numbers with another member. No Python runs per step, and pruned connections cost nothing.
Evaluation is a numba call too. A member layer the cost model finds cheaper dense
(:func:`sparsetopo.nn.plan.member_prefers_dense`) is held dense and runs as BLAS GEMMs.

Timing: on one thread (every sweep worker) the members run one after the other and each is
clocked on its own (CPU time of the thread, which other jobs on the machine do not inflate), so
a 10% network shows its own, shorter epochs beside its fully connected sibling's; on more
threads the members share the clock: the epoch's wall time times the cores used divided by the
members trained.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sparsetopo.engines import population as engine
from sparsetopo.engines.layout import SGD, EngineLayer
from sparsetopo.kernels.cache import load_or_compile
from sparsetopo.kernels.threads import member_threads
from sparsetopo.nn import SparseIndex, SparseMLP
from sparsetopo.nn.plan import member_prefers_dense, wide_argument
from sparsetopo.train.config import RunResult, TrainConfig
from sparsetopo.train.fused import batch_counts
from sparsetopo.train.loop import split_tensors
from sparsetopo.train.recipe import epoch_lr
from sparsetopo.train.roster import DROPOUT_CHUNK_FLOATS, Roster, build_members

#: Activations the fused kernels implement (their forward and backward are written for it).
FUSED_ACTIVATIONS = ("sigmoid",)


class _FusedPopulation:
    """Every member's connected weights, buffers and CSR/CSC index in the packed layers
    :mod:`sparsetopo.engines.population` reads (:mod:`sparsetopo.engines.layout`). Built once;
    members that diverge or stop are simply left out of later calls, so no array is ever
    compacted or copied."""

    def __init__(self, models: Sequence[SparseMLP], layer_kernel: str = "auto"):
        n_layers = len(models[0].layers)
        self.sizes = np.array(models[0].sizes, dtype=np.int64)
        # which member layers are held dense and run as GEMMs (kernels.dense), which as CSR
        self.dense = np.array([[_runs_dense(m.layers[l].topology, layer_kernel) for m in models]
                               for l in range(n_layers)], dtype=np.bool_)
        rates = models[0].dropout_rates
        self.layers = tuple(_packed_layer([m.layers[l] for m in models], self.dense[l], rates[l])
                            for l in range(n_layers))
        # None: the kernels' specialisation without the dense layer code
        self.held_dense = self.dense if self.dense.any() else None

    def kernels(self, p: int) -> list[str]:
        """Member ``p``'s kernel per layer: ``"masked"`` (dense GEMMs) or ``"sparse"`` (CSR)."""
        return ["masked" if d else "sparse" for d in self.dense[:, p]]

    def epoch(self, x, targets, orders, members, batch_size, rates, uniforms, lr, momentum,
              threads) -> tuple[np.ndarray, np.ndarray]:
        """One epoch for the member rows ``members``; returns each one's summed batch losses
        (batch mean times batch size, as ``train()`` accumulates them) and its core-seconds.

        ``uniforms``: None without dropout, else a callable ``(first, stop) -> (A, count)``
        array of each member's dropout numbers for batches ``first .. stop - 1``.

        On one thread the members run one after the other anyway, so each gets its own clock
        (the thread's CPU time): a sparse member's seconds are its own, not the population's
        average (module docstring, "Timing"). On more threads the members share the cores and
        the wall time is shared out.
        """
        n = orders.shape[1]
        counts = batch_counts(n, batch_size)
        n_batches = counts.size
        losses = np.zeros((len(members), n_batches), dtype=np.float64)
        seconds = np.zeros(len(members), dtype=np.float64)
        sgd = SGD(np.float32(lr), np.float32(momentum), momentum > 0)
        per_example = int(sum(s for s, r in zip(self.sizes, rates) if r > 0))
        if uniforms is None:
            chunks = [(0, n_batches)]
        else:   # bound the dropout numbers held at once (an MNIST epoch would be GBs)
            step = max(1, DROPOUT_CHUNK_FLOATS // max(1, len(members) * batch_size * per_example))
            chunks = [(b, min(n_batches, b + step)) for b in range(0, n_batches, step)]
        groups = [slice(a, a + 1) for a in range(len(members))] if threads == 1 else [slice(None)]
        # One thread: all work runs on this thread, so its CPU clock is the member's own cost,
        # which another job taking turns on the core cannot inflate. More: the wall clock.
        clock = time.thread_time if threads == 1 else time.perf_counter
        with member_threads(threads):
            for first, stop in chunks:
                u = None if uniforms is None else uniforms(first, stop)   # None: nothing drops
                for rows in groups:
                    args = (x, targets, orders[rows], members[rows], first, stop, batch_size, self.sizes, self.layers,
                            self.held_dense, None if u is None else u[rows], sgd, wide_argument(batch_size),
                            losses[rows, first:stop])
                    load_or_compile(engine.population_batches, *args)  # before the clock (train.warmup)
                    tick = clock()
                    engine.population_batches(*args)
                    elapsed = clock() - tick
                    # one thread: this member's own time; more: the members' share of the cores
                    seconds[rows] += elapsed if threads == 1 else elapsed * threads / len(members)
        return losses @ counts, seconds

    def accuracies(self, x, y, members, threads) -> np.ndarray:
        correct = np.zeros(len(members), dtype=np.int64)
        with member_threads(threads):
            engine.population_correct(x, y, members, self.sizes, self.layers, self.held_dense, correct)
        return correct / x.shape[0]

    @torch.no_grad()
    def write_back(self, p: int, model: SparseMLP) -> None:
        """Copy member ``p``'s parameters into ``model`` (its own SparseMLP)."""
        for l, layer in enumerate(model.layers):
            packed = self.layers[l]
            if self.dense[l, p]:   # back to CSR order: the connected entries of the dense matrix
                full = packed.dense_values[packed.dense_offsets[p]: packed.dense_offsets[p + 1]]
                t = layer.topology           # full is n_in x n_out: (input, output) of every connection, CSR order
                values = torch.from_numpy(full.reshape(t.n_in, t.n_out)[t.rows, t.indices].copy())
            else:
                values = torch.from_numpy(packed.values[packed.offsets[p]: packed.offsets[p + 1]].copy())
            if layer.backend == "masked":   # pruned entries were never touched: they stay 0
                layer.weight[layer.edge_index()] = values
            else:
                layer.values.copy_(values)
            layer.bias.copy_(torch.from_numpy(packed.biases[p]))
        model.eval()


def _packed_layer(layers: list, held_dense: np.ndarray, rate: float) -> EngineLayer:
    """One layer of every member (``layers``: each member's SparseLinear) in the engines' layout,
    member ``p``'s held dense where ``held_dense[p]``, its inputs dropped at ``rate``."""
    csr = [not d for d in held_dense]
    index = [SparseIndex.from_topology(layer.topology) if keep else _empty_index(layer.topology)
             for layer, keep in zip(layers, csr)]
    n_in, n_out = layers[0].topology.n_in, layers[0].topology.n_out
    # connected_weights() is in CSR order on both backends: the kernels' order
    values = np.concatenate([layer.connected_weights().numpy() if keep else np.zeros(0, np.float32)
                             for layer, keep in zip(layers, csr)]).astype(np.float32)
    dense_values = np.concatenate([np.zeros(0, np.float32)] + [
        layer.dense_weight().detach().numpy().T.ravel()   # n_in x n_out row-major; pruned entries are 0
        for layer, keep in zip(layers, csr) if not keep]).astype(np.float32)
    dense_masks = np.concatenate([np.zeros(0, np.float32)] + [
        layer.topology.mask().ravel() for layer, keep in zip(layers, csr) if not keep]).astype(np.float32)
    biases = np.stack([layer.bias.detach().numpy() for layer in layers]).astype(np.float32)
    return EngineLayer(
        values=values, value_bufs=np.zeros_like(values), biases=biases, bias_bufs=np.zeros_like(biases),
        indptr=np.stack([ix.indptr for ix in index]).astype(np.int64),
        indices=np.concatenate([ix.indices for ix in index]).astype(np.int32),
        col_ptr=np.stack([ix.col_ptr for ix in index]).astype(np.int64),
        col_rows=np.concatenate([ix.col_rows for ix in index]).astype(np.int32),
        col_perm=np.concatenate([ix.col_perm for ix in index]).astype(np.int64),
        offsets=np.concatenate([[0], np.cumsum([ix.nnz for ix in index])]).astype(np.int64),
        dense_values=dense_values, dense_masks=dense_masks, dense_bufs=np.zeros_like(dense_values),
        dense_offsets=np.concatenate([[0], np.cumsum([0 if keep else n_in * n_out for keep in csr])]).astype(np.int64),
        rate=np.float32(rate), scale=np.float32(1.0 - rate))   # torch divides by float32(1 - rate)


def _runs_dense(topology, layer_kernel: str) -> bool:
    """Whether a member layer is held dense (GEMMs) rather than CSR: ``layer_kernel`` "masked" or
    "sparse" forces it, "auto" asks the measured cost model."""
    if layer_kernel != "auto":
        return layer_kernel == "masked"
    return member_prefers_dense(topology.nnz, topology.n_in, topology.n_out)


def _empty_index(topology) -> SparseIndex:
    """The CSR/CSC index of no connection at all, for a member layer held dense."""
    return SparseIndex(n_in=topology.n_in, n_out=topology.n_out,
                       indptr=np.zeros(topology.n_in + 1, dtype=np.int64), indices=np.zeros(0, dtype=np.int32),
                       col_ptr=np.zeros(topology.n_out + 1, dtype=np.int64), col_rows=np.zeros(0, dtype=np.int32),
                       col_perm=np.zeros(0, dtype=np.int64))


def train_fused(configs: list[TrainConfig], dataset, on_epoch, threads: int | None,
                 layer_kernel: str = "auto") -> list[RunResult]:
    """Train checked sigmoid ``configs`` with the fused kernels (see :func:`sparsetopo.train.train_population`)."""
    import numba

    started = time.perf_counter()
    threads = min(threads or torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    base = configs[0]
    x_train, y_train, x_val, y_val, x_test, y_test, n_classes = split_tensors(base, dataset)
    x = np.ascontiguousarray(x_train.numpy(), dtype=np.float32)
    targets = np.ascontiguousarray(F.one_hot(y_train, n_classes).float().numpy())
    xt = np.ascontiguousarray(x_test.numpy(), dtype=np.float32)
    yt = np.ascontiguousarray(y_test.numpy(), dtype=np.int64)
    xv = np.ascontiguousarray(x_val.numpy(), dtype=np.float32)
    yv = np.ascontiguousarray(y_val.numpy(), dtype=np.int64)
    models = build_members(configs, x_train.shape[1], n_classes)
    sizes = models[0].sizes
    rates = models[0].dropout_rates
    per_example = sum(s for s, r in zip(sizes, rates) if r > 0)
    population = _FusedPopulation(models, layer_kernel)
    roster = Roster(configs, on_epoch)
    n, batch = x.shape[0], base.batch_size

    for epoch in roster.epochs():
        members = np.array(roster.active, dtype=np.int64)
        orders = roster.orders(n, epoch).numpy()
        uniforms = None
        if per_example:
            # Each member's dropout generator, drawn in train()'s order: torch's CPU generator
            # yields the same numbers for one draw of the concatenated size, so consecutive
            # chunks of batches are consecutive draws.
            generators = roster.dropout_generators(epoch)

            def uniforms(first, stop, generators=generators):
                count = (min(n, stop * batch) - first * batch) * per_example
                return np.stack([torch.rand(count, generator=g).numpy() for g in generators])

        # core-seconds per member: comparable with one-thread train() (sparsetopo.train.population, "Timing")
        totals, seconds = population.epoch(x, targets, orders, members, batch, rates, uniforms,
                                           epoch_lr(base, epoch), base.momentum, threads)
        accuracies = population.accuracies(xt, yt, members, threads)
        val_accuracies = population.accuracies(xv, yv, members, threads) if len(yv) else [None] * len(members)
        roster.close_epoch(epoch, n, totals, seconds, accuracies, val_accuracies)

    for member, model in enumerate(models):
        population.write_back(member, model)
    results = roster.results(models, x_test, y_test, started, threads, "fused-population/sparse")
    for p, result in enumerate(results):   # the kernel each layer really ran
        for layer, kernel in zip(result.layers, population.kernels(p)):
            layer["backend"] = f"fused-population/{kernel}"
    return results
