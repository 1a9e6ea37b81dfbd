"""A fused training epoch for a SparseMLP whose every layer uses the sparse backend.

With MNIST-sized layers at 1-10% density the kernels themselves take tens of microseconds a
step, less than the Python, autograd and optimizer bookkeeping around them. So when a model
qualifies, :func:`sparsetopo.train.train` hands the whole epoch to one numba function
(:func:`sparsetopo.kernels.step.train_epoch`, whose body :func:`~sparsetopo.kernels.step.train_batches`
the population engine shares): batch gather, forward with sigmoid, MSE gradient,
backward and the SGD update in place, one call per epoch.

It computes what the autograd path computes: the same batches in the same order, the same
loss (MSE, mean over batch and outputs, on sigmoid outputs) and the update of
``torch.optim.SGD`` (``buf = momentum * buf + g``; Nesterov: ``w -= lr * (g + momentum * buf)``),
with the learning rate and momentum of the run's config, on momentum buffers the training loop
keeps in its optimizer's state, so checkpoints and resumption are unchanged. Only
float rounding differs (other summation orders). Dropout is not fused: models with dropout
take the autograd path.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsetopo.errors import SparsetopoError
from sparsetopo.kernels.step import train_epoch
from sparsetopo.kernels.threads import n_chunks, use_threads


def _view(t: torch.Tensor) -> np.ndarray:
    """A numpy view sharing memory with ``t``: the kernels update parameters in place."""
    return t.detach().numpy()


def _row(a: np.ndarray) -> np.ndarray:
    """``a`` as a one-row 2-D view (member 0 of the layout :func:`~sparsetopo.kernels.step.train_batches` reads)."""
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
        topologies = [layer.topology for layer in model.layers]
        self.sizes = np.array([topologies[0].n_in] + [t.n_out for t in topologies], dtype=np.int64)
        self.params = [(layer.values, layer.bias) for layer in model.layers]
        self.value_bufs = tuple(_view(b) for b in buffers[0::2])
        self.bias_bufs = tuple(_view(b) for b in buffers[1::2])

    @staticmethod
    def supports(model) -> bool:
        """Whether this class computes ``model``'s epoch exactly: every layer on the sparse
        backend, sigmoid activation on every layer (output included), no dropout, float32
        parameters on CPU. The loss and optimizer are the caller's to check
        (:func:`sparsetopo.train.recipe.fused_applies`): the kernels compute MSE and Nesterov SGD."""
        if model.activation_name != "sigmoid" or model.output != "activation" or any(p > 0 for p in model.dropout):
            return False
        if not all(layer.backend == "sparse" for layer in model.layers):
            return False
        params = [p for layer in model.layers for p in (layer.values, layer.bias)]
        return all(p.dtype == torch.float32 and p.device.type == "cpu" for p in params)

    def run(self, x: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, batch_size: int) -> float:
        """Train one epoch over ``x[order]`` in batches of ``batch_size``; return the summed loss
        (each batch's mean loss times its size), as the autograd loop accumulates it."""
        # with momentum 0 the rule reduces to w -= lr * g, whatever the buffers hold
        value_bufs, bias_bufs = self.value_bufs, self.bias_bufs
        layers = self.model.layers
        n = int(order.numel())
        if n == 0:
            return 0.0
        losses = np.zeros((n + batch_size - 1) // batch_size, dtype=np.float64)
        # train_epoch reads the population layout (kernels.step.train_batches): one network is
        # member 0, its bias and pointer arrays one-row views, its slice the whole layer
        train_epoch(
            np.ascontiguousarray(x.detach().numpy(), dtype=np.float32),
            np.ascontiguousarray(targets.detach().numpy(), dtype=np.float32),
            order.numpy().astype(np.int64),
            batch_size,
            tuple(_view(v) for v, _ in self.params),
            tuple(_row(_view(b)) for _, b in self.params),
            value_bufs,
            tuple(_row(b) for b in bias_bufs),
            tuple(_row(layer.index.indptr) for layer in layers),
            tuple(layer.index.indices for layer in layers),
            tuple(_row(layer.index.col_ptr) for layer in layers),
            tuple(layer.index.col_rows for layer in layers),
            tuple(layer.index.col_perm for layer in layers),
            np.array([[0, layer.index.nnz] for layer in layers], dtype=np.int64),
            self.sizes,
            np.array([use_threads(layer.index.nnz, batch_size) for layer in layers]),
            np.float32(self.lr),
            np.float32(self.momentum),
            self.momentum > 0,
            n_chunks(),
            losses,
        )
        return float(np.dot(losses, batch_counts(n, batch_size)))
