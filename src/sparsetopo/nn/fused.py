"""A fused training epoch for a SparseMLP whose every layer uses the sparse backend.

With MNIST-sized layers at 1-10% density the kernels themselves take tens of microseconds a
step, less than the Python, autograd and optimizer bookkeeping around them. So when a model
qualifies, :func:`sparsetopo.train.train` hands the whole epoch to one numba function
(:func:`sparsetopo.nn.kernels.train_epoch`, whose body :func:`~sparsetopo.nn.kernels.train_batches`
the population engine shares): batch gather, forward with sigmoid, MSE gradient,
backward and the SGD update in place, one call per epoch.

It computes what the autograd path computes: the same batches in the same order, the same
loss (MSE, mean over batch and outputs, on sigmoid outputs) and the update of
``torch.optim.SGD`` (``buf = momentum * buf + g``; Nesterov: ``w -= lr * (g + momentum * buf)``),
on the optimizer's own momentum buffers, so checkpoints and resumption are unchanged. Only
float rounding differs (other summation orders). Dropout is not fused: models with dropout
take the autograd path.
"""

from __future__ import annotations

import numpy as np
import torch

from sparsetopo.nn import kernels
from sparsetopo.nn.sparse_ops import n_chunks, use_threads


def _view(t: torch.Tensor) -> np.ndarray:
    """A numpy view sharing memory with ``t``: the kernels update parameters in place."""
    return t.detach().numpy()


def _row(a: np.ndarray) -> np.ndarray:
    """``a`` as a one-row 2-D view (member 0 of the layout :func:`kernels.train_batches` reads)."""
    return a.reshape(1, -1)


def batch_counts(n: int, batch_size: int) -> np.ndarray:
    """Examples in each batch of an epoch over ``n`` examples (float64, the last one may be short):
    the weights that turn the kernels' per-batch mean losses into the epoch's summed loss."""
    counts = np.full(-(-n // batch_size), batch_size, dtype=np.float64)
    counts[-1] = n - batch_size * (counts.size - 1)
    return counts


class FusedEpoch:
    """Runs training epochs of ``model`` with the SGD settings of ``optimizer``, in numba.

    Build it with :meth:`for_model`, which returns None when the model or optimizer is not
    one this class computes exactly (then use the autograd path).
    """

    def __init__(self, model, optimizer: torch.optim.SGD):
        self.model = model
        self.optimizer = optimizer
        self.group = optimizer.param_groups[0]
        topologies = [layer.topology for layer in model.layers]
        self.sizes = np.array([topologies[0].n_in] + [t.n_out for t in topologies], dtype=np.int64)
        self.params = [(layer.values, layer.bias) for layer in model.layers]

    @classmethod
    def for_model(cls, model, optimizer) -> "FusedEpoch | None":
        """A fused epoch for ``model`` and ``optimizer``, or None if they are not supported.

        Supported: every layer on the sparse backend, sigmoid activation, no dropout, a plain
        ``torch.optim.SGD`` with one parameter group, no weight decay, no dampening, not
        maximising, float32 parameters on CPU.
        """
        if not isinstance(optimizer, torch.optim.SGD) or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        if group["weight_decay"] != 0 or group["dampening"] != 0 or group.get("maximize", False):
            return None
        if model.activation_name != "sigmoid" or any(p > 0 for p in model.dropout):
            return None
        if not all(layer.backend == "sparse" for layer in model.layers):
            return None
        params = [p for layer in model.layers for p in (layer.values, layer.bias)]
        if {id(p) for p in params} != {id(p) for p in group["params"]}:
            return None
        if any(p.dtype != torch.float32 or p.device.type != "cpu" for p in params):
            return None
        return cls(model, optimizer)

    def _buffer(self, p: torch.Tensor) -> torch.Tensor:
        """The optimizer's momentum buffer of ``p``, created as zeros (equivalent to torch's
        first step, which sets it to the gradient) so that it lives in the optimizer's state."""
        state = self.optimizer.state[p]
        if state.get("momentum_buffer") is None:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        return state["momentum_buffer"]

    def run(self, x: torch.Tensor, targets: torch.Tensor, order: torch.Tensor, batch_size: int) -> float:
        """Train one epoch over ``x[order]`` in batches of ``batch_size``; return the summed loss
        (each batch's mean loss times its size), as the autograd loop accumulates it."""
        momentum = float(self.group["momentum"])
        nesterov = bool(self.group["nesterov"])
        if momentum > 0:
            value_bufs = tuple(_view(self._buffer(v)) for v, _ in self.params)
            bias_bufs = tuple(_view(self._buffer(b)) for _, b in self.params)
        else:  # torch keeps no buffer without momentum; the rule then reduces to w -= lr * g
            value_bufs = tuple(np.zeros(v.numel(), dtype=np.float32) for v, _ in self.params)
            bias_bufs = tuple(np.zeros(b.numel(), dtype=np.float32) for _, b in self.params)
        layers = self.model.layers
        n = int(order.numel())
        if n == 0:
            return 0.0
        losses = np.zeros((n + batch_size - 1) // batch_size, dtype=np.float64)
        # train_epoch reads the population layout (kernels.train_batches): one network is
        # member 0, its bias and pointer arrays one-row views, its slice the whole layer
        kernels.train_epoch(
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
            np.array([use_threads(layer.index, batch_size) for layer in layers]),
            np.float32(self.group["lr"]),
            np.float32(momentum),
            nesterov,
            n_chunks(),
            losses,
        )
        return float(np.dot(losses, batch_counts(n, batch_size)))
