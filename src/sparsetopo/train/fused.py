"""A fused training epoch for a SparseMLP whose every layer is sparse or a block layer.

With MNIST-sized layers at 1-10% density the kernels themselves take tens of microseconds a
step, less than the Python, autograd and optimizer bookkeeping around them. So when a model
qualifies, :func:`sparsetopo.train.train` hands the whole epoch to one numba function
(:func:`sparsetopo.engines.step.train_batches`, which the population engine shares): batch
gather, forward with sigmoid, MSE gradient, backward and the SGD update in place, one call per
segment of ``SEGMENT_BATCHES`` batches (each on the thread pool or the calling thread, as the
plan's clock finds faster). The trained network is evaluated by the same kernels
(:meth:`FusedEpoch.outputs`). A block layer takes part as the ordinary layer on its lifted
topology (:class:`_BlockStage`).

It computes what the autograd path computes: the same batches in the same order, the same
loss (MSE, mean over batch and outputs, on sigmoid outputs) and the update of
``torch.optim.SGD`` (``buf = momentum * buf + g``; Nesterov: ``w -= lr * (g + momentum * buf)``),
with the learning rate and momentum of the run's config, on momentum buffers the training loop
keeps in its optimizer's state, so checkpoints and resumption are unchanged. Only
float rounding differs (other summation orders). Dropout is not fused: models with dropout
take the autograd path.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch
from torch.autograd.graph import increment_version

from sparsetopo.engines.layout import SGD, EngineLayer, no_dense_members, no_dropout
from sparsetopo.engines.predict import layer_outputs
from sparsetopo.engines.step import train_batches
from sparsetopo.errors import SparsetopoError
from sparsetopo.kernels.cache import load_or_compile
from sparsetopo.kernels.threads import n_chunks
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.plan import ThreadClock, engine_threads, wide_argument
from sparsetopo.nn.sparse_index import SparseIndex


def _view(t: torch.Tensor) -> np.ndarray:
    """A numpy view sharing memory with ``t``: the kernels update parameters in place."""
    return t.detach().numpy()


def _row(a: np.ndarray) -> np.ndarray:
    """``a`` as a one-row 2-D view (member 0 of :class:`~sparsetopo.engines.layout.EngineLayer`)."""
    return a.reshape(1, -1)


def batch_counts(n: int, batch_size: int) -> np.ndarray:
    """Examples in each batch of an epoch over ``n`` examples (float64, the last one may be short):
    the weights that turn the kernels' per-batch mean losses into the epoch's summed loss."""
    counts = np.full(-(-n // batch_size), batch_size, dtype=np.float64)
    counts[-1] = n - batch_size * (counts.size - 1)
    return counts


class FusedEpoch:
    """Runs training epochs of ``model`` in numba with SGD at learning rate ``lr`` and Nesterov
    momentum ``momentum`` (plain SGD when 0), the numbers of the run's TrainConfig.

    ``buffers``: the momentum buffer of each parameter, weights then bias, layer by layer
    (tensors updated in place; the training loop keeps them in its optimizer's state so that
    checkpoints hold them). Check :meth:`supports` first.
    """

    def __init__(self, model, lr: float, momentum: float, buffers: list[torch.Tensor]):
        if not self.supports(model):
            raise SparsetopoError("the fused epoch needs every layer on the sparse backend, sigmoid "
                                  "activation, no dropout and float32 CPU parameters")
        self.model = model
        self.lr = float(lr)
        self.momentum = float(momentum)
        layers = model.layers
        self.sizes = np.array([layers[0].topology.n_in] + [layer.topology.n_out for layer in layers], dtype=np.int64)
        # The engines' layout (engines.layout): one network is member 0, its bias and pointer
        # arrays one-row views, its slice the whole layer. A sparse layer's weights and
        # momentum are views of its parameters, so the kernels update them in place; a block
        # layer's are staged copies in its lifted topology's CSR order (_BlockStage).
        self._stages = []
        engine_layers = []
        for layer, weight_buf, bias_buf in zip(layers, buffers[0::2], buffers[1::2]):
            if isinstance(layer, BlockSparseLinear):
                stage = _BlockStage(layer, weight_buf)
                self._stages.append(stage)
                values, value_bufs, index = stage.values, stage.value_bufs, stage.index
            else:
                values, value_bufs, index = _view(layer.values), _view(weight_buf), layer.index
            engine_layers.append(EngineLayer(
                values=values, value_bufs=value_bufs, biases=_row(_view(layer.bias)), bias_bufs=_row(_view(bias_buf)),
                indptr=_row(index.indptr), indices=index.indices, col_ptr=_row(index.col_ptr),
                col_rows=index.col_rows, col_perm=index.col_perm, offsets=np.array([0, index.nnz], dtype=np.int64),
                **no_dense_members(1), **no_dropout()))
        self.layers = tuple(engine_layers)
        self._nnz = tuple(int(layer.offsets[1]) for layer in self.layers)

    @staticmethod
    def supports(model) -> bool:
        """Whether this class computes ``model``'s epoch exactly: every layer on the sparse
        backend, sigmoid activation on every layer (output included), no dropout, float32
        parameters on CPU. The loss and optimizer are the caller's to check
        (:func:`sparsetopo.train.recipe.fused_applies`): the kernels compute MSE and Nesterov SGD."""
        if model.activation_name != "sigmoid" or model.output != "activation" or any(p > 0 for p in model.dropout):
            return False
        if not all(layer.backend in ("sparse", "block") and layer.bias is not None for layer in model.layers):
            return False
        params = [p for layer in model.layers for p in (weight_parameter(layer), layer.bias)]
        return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)

    def run(self, x: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, batch_size: int) -> float:
        """Train one epoch over ``x[order]`` in batches of ``batch_size``; return the summed loss
        (each batch's mean loss times its size), as the autograd loop accumulates it."""
        n = int(order.numel())
        if n == 0:
            return 0.0
        losses = np.zeros((n + batch_size - 1) // batch_size, dtype=np.float64)
        for stage in self._stages:
            stage.load()
        args = list(self.epoch_arguments(x, targets, order, batch_size, losses))
        parallel = args[_PARALLEL]
        # one site per network shape, so that the runs of a sweep share what the first learnt
        site = ("epoch", tuple(int(s) for s in self.sizes), self._nnz, batch_size)
        for first in range(0, losses.size, SEGMENT_BATCHES):
            stop = min(first + SEGMENT_BATCHES, losses.size)
            args[_FIRST], args[_STOP], args[_LOSSES] = first, stop, losses[first:stop]
            if parallel is None:
                train_batches(*args)
                continue
            # per segment, the thread pool or the calling thread, whichever has lately been
            # faster: one busy core stalls every parallel step (same numbers either way)
            with ThreadClock(site, max(self._nnz) * batch_size) as chunks:
                args[_PARALLEL] = parallel if chunks else None
                train_batches(*args)
        for stage in self._stages:
            stage.store()
        for layer in self.model.layers:  # written through numpy: tell torch (and the layers' dense caches)
            increment_version(weight_parameter(layer))
        return float(np.dot(losses, batch_counts(n, batch_size)))

    def prepare(self, x: torch.Tensor, targets: torch.Tensor, batch_size: int) -> None:
        """Load or compile the kernel :meth:`run` calls for this data and batch size, without
        training (:func:`sparsetopo.kernels.cache.load_or_compile`): a clock started after
        this times the epoch alone."""
        n = int(x.shape[0])
        losses = np.zeros(-(-n // batch_size), dtype=np.float64)
        args = list(self.epoch_arguments(x, targets, torch.arange(n), batch_size, losses))
        load_or_compile(train_batches, *args)
        if args[_PARALLEL] is not None:  # the serial segments' specialisation too (see run)
            args[_PARALLEL] = None
            load_or_compile(train_batches, *args)

    def epoch_arguments(self, x: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, batch_size: int,
                        losses: np.ndarray) -> tuple:
        """The arguments of :func:`~sparsetopo.engines.step.train_batches` for one epoch: every
        batch of network 0, no dropout (``u`` None), no layer dense (``dense`` None), so neither
        kind of code is compiled for it."""
        threaded = [engine_threads(int(layer.offsets[1]), batch_size) for layer in self.layers]
        # None when every layer stays serial: that specialisation compiles no parallel kernel
        parallel = np.array(threaded) if any(threaded) else None
        # with momentum 0 the rule reduces to w -= lr * g, whatever the buffers hold
        return (_features(x), np.ascontiguousarray(targets.detach().numpy(), dtype=np.float32),
                order.numpy().astype(np.int64), 0, losses.size, batch_size, self.sizes, self.layers, 0, None, None,
                SGD(np.float32(self.lr), np.float32(self.momentum), self.momentum > 0), parallel, n_chunks(),
                wide_argument(batch_size), losses)

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's sigmoid outputs for ``x`` (examples x units; the output layer last), computed
        by the kernels the network trains on (:func:`sparsetopo.engines.predict.layer_outputs`)."""
        for stage in self._stages:  # the parameters may have changed since the last epoch (a checkpoint)
            stage.load()
        out = torch.from_numpy(layer_outputs(_features(x), self.sizes, self.layers, 0, None))
        return list(out.split([int(s) for s in self.sizes[1:]], dim=1))

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """The share of ``x`` the network classifies as ``y`` says: its largest output, the first
        of equals, as the model's own evaluation (``argmax``) picks."""
        return float((self.outputs(x)[-1].argmax(dim=1) == y).double().mean())

    def hidden_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each hidden layer's sigmoid outputs for ``x`` (what the divergence rule probes)."""
        return self.outputs(x)[:-1]


# The fused epoch's kernels hold up to BLOCK (32) examples per register block; wider batches run
# their slower "wide" form, while the autograd loop's tiled kernels (and a block layer's batched
# matmuls) gain from width. Epoch seconds fused / autograd on one core (784-H-10, 4000 examples,
# AMD EPYC, 2026-12-07; sparse layers at 2% and 10% for H = 300 and 1024, block layers at 10%
# with blocks of 16 for H = 300 and of 32 for H = 1024 and 4096):
#   batch 32: 0.24-0.50 (every case); batch 40-48: 0.42-0.82, except H = 1024 at 10%, 1.18-1.31;
#   batch 64: 0.59-1.46, the fused epoch slower in 4 of 7 cases; batch 128 and above: 0.94-2.0.
FUSED_MAX_BATCH = 48


def fused_pays(batch_size: int) -> bool:
    """Whether the fused epoch, where it computes a network exactly (:meth:`FusedEpoch.supports`),
    is also the faster way to train it at ``batch_size`` examples per step: up to
    :data:`FUSED_MAX_BATCH`, for sparse and block layers alike (see the measurements above)."""
    return batch_size <= FUSED_MAX_BATCH


def weight_parameter(layer) -> torch.Tensor:
    """A layer's weight parameter: a sparse layer's ``values``, a block layer's ``tiles``."""
    return layer.tiles if isinstance(layer, BlockSparseLinear) else layer.values


class _BlockStage:
    """A block layer's tiles and momentum, staged as its lifted topology's connected weights.

    A block layer is the ordinary layer on its lifted (neuron-level) topology, whose every
    connection is one tile entry (:meth:`BlockSparseLinear.tile_index` maps them). At the paper's
    sizes and batch 32 an epoch of such a network is dominated by each step's autograd and
    optimizer calls, not by its matmuls, so the fused epoch runs it on the connections
    (up to :data:`FUSED_MAX_BATCH`):
    :meth:`load` copies the tiles and their momentum into CSR order before an epoch and
    :meth:`store` writes them back after (one pass over the connections each; the entries
    padding a ragged block are never touched and stay 0).
    """

    def __init__(self, layer: BlockSparseLinear, momentum: torch.Tensor):
        self.index = SparseIndex.from_topology(layer.topology)
        self.positions = layer.tile_index().numpy()
        self.tiles, self.momentum = _view(layer.tiles).reshape(-1), _view(momentum).reshape(-1)
        self.values = np.empty(self.positions.size, dtype=np.float32)
        self.value_bufs = np.empty(self.positions.size, dtype=np.float32)

    def load(self) -> None:
        np.take(self.tiles, self.positions, out=self.values)
        np.take(self.momentum, self.positions, out=self.value_bufs)

    def store(self) -> None:
        self.tiles[self.positions] = self.values
        self.momentum[self.positions] = self.value_bufs


# Batches per numba call of the epoch (see FusedEpoch.run): long enough that a call's entry
# (a few microseconds) is lost in its work, short enough that a thread choice gone stale under
# a changing load costs a fraction of the epoch. The positions of the arguments a segment sets,
# read from train_batches' signature:
SEGMENT_BATCHES = 16
_ARG = {name: i for i, name in enumerate(inspect.signature(train_batches.py_func).parameters)}
_FIRST, _STOP, _PARALLEL, _LOSSES = _ARG["first"], _ARG["stop"], _ARG["parallel"], _ARG["losses"]


def _features(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)
