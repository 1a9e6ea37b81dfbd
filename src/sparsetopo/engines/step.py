"""One training step of a sparse sigmoid MLP in compiled code: MSE, dropout, SGD, the batch loop.

:func:`train_batches` is the body of both the sequential fused epoch
(:mod:`sparsetopo.train.fused`, one call per segment of an epoch) and the population engine
(:mod:`sparsetopo.engines.population`), so the two cannot drift apart. The layer maths it calls
are :mod:`sparsetopo.kernels.layer`'s and :mod:`sparsetopo.kernels.dense`'s; the update rule is
:mod:`sparsetopo.kernels.sgd`'s; the arrays it reads are laid out as :mod:`.layout` says.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparsetopo.kernels.dense import dense_backward_input, dense_forward, dense_values_sgd
from sparsetopo.kernels.layer import (backward_sgd, backward_sgd_serial, backward_values_sgd,
                                      backward_values_sgd_serial, forward, forward_serial)
from sparsetopo.kernels.options import FASTMATH
from sparsetopo.kernels.sgd import bias_sgd


@njit(fastmath=FASTMATH, cache=True)
def gather_transposed(x, rows, out):
    """``out[f, b] = x[rows[b], f]``: a batch of examples, feature-major."""
    nb = rows.shape[0]
    for b in range(nb):
        r = rows[b]
        for f in range(x.shape[1]):
            out[f, b] = x[r, f]


@njit(fastmath=FASTMATH, cache=True)
def mse_sigmoid_delta(yt, targets, rows, dt):
    """Mean squared error of ``yt`` against one-hot ``targets[rows]`` and its gradient.

    Writes the gradient to the pre-activations of the sigmoid output layer,
    ``2 (y - t) / (batch * n_out) * y (1 - y)`` (what ``F.mse_loss``'s mean reduction gives),
    to ``dt``, and returns the loss.
    """
    n_out, nb = yt.shape
    scale = np.float32(2.0 / (nb * n_out))
    total = 0.0
    for b in range(nb):
        r = rows[b]
        for j in range(n_out):
            y = yt[j, b]
            diff = y - targets[r, j]
            total += diff * diff
            dt[j, b] = scale * diff * y * (np.float32(1.0) - y)
    return total / (nb * n_out)


@njit(fastmath=FASTMATH, cache=True, inline="always")  # a view: not worth a compiled function of its own
def _block(buffer, offset, n_rows, nb):
    """A feature-major ``n_rows x nb`` view into a flat scratch buffer."""
    return buffer[offset: offset + n_rows * nb].reshape((n_rows, nb))


@njit(fastmath=FASTMATH, cache=True)
def dropout_inputs(a, u, u_pos, rate, scale, d):
    """``d = a * keep / scale`` with ``keep = u >= rate`` (``scale`` is float32 ``1 - rate``).

    ``u`` is read from ``u_pos`` in the order :class:`sparsetopo.nn.SparseMLP` draws it,
    ``torch.rand((batch, n_features))`` (example-major), so that a member trained here drops
    exactly the units its autograd run drops.
    """
    n_f, nb = a.shape
    for t in range(nb):
        base = u_pos + t * n_f
        for f in range(n_f):
            keep = np.float32(1.0) if u[base + f] >= rate else np.float32(0.0)
            d[f, t] = (a[f, t] * keep) / scale


@njit(fastmath=FASTMATH, cache=True)
def dropout_grad(g, dropped, scale):
    """``g *= keep / scale``: the gradient through a dropout whose output is ``dropped``.

    The keep pattern is read back from the dropped copy rather than stored: a kept sigmoid
    output is > 0 unless it underflowed to 0, and then its gradient ``a (1 - a)`` (already in
    ``g``) is 0 anyway.
    """
    n_f, nb = g.shape
    for f in range(n_f):
        for t in range(nb):
            g[f, t] = g[f, t] / scale if dropped[f, t] != 0.0 else np.float32(0.0)


@njit(fastmath=FASTMATH, cache=True)
def train_batches(x, targets, order, first, stop, batch_size, sizes, layers, p, dense, u, sgd, parallel, n_chunks,
                  wide, losses):
    """Minibatch SGD on batches ``first .. stop - 1`` of one sparse sigmoid MLP, MSE on one-hot
    targets: the body of both the sequential fused epoch (:class:`sparsetopo.train.fused.FusedEpoch`) and the
    population engine (:mod:`sparsetopo.engines.population`), so the two cannot drift apart.

    Per batch (the rows ``order[start:start + batch_size]`` of ``x``, the same batches as the
    autograd loop in :func:`sparsetopo.train.train`): input dropout of layers with
    ``rate > 0`` (numbers ``u`` from the start of batch ``first``, see
    :func:`dropout_inputs`), forward with sigmoid, the MSE gradient, then from the last layer
    down the gradient to the layer's inputs (with the weights *before* this step's update, as
    autograd does) and the SGD update (``sgd``, an :class:`~sparsetopo.engines.layout.SGD`) of
    the layer's connected weights, bias and momentum buffers, in place. ``losses[step - first]``
    gets each batch's mean loss.

    Layout: ``layers`` is a tuple of :class:`~sparsetopo.engines.layout.EngineLayer`, one per
    layer, which may hold several networks: the network trained is ``p``. ``sizes`` are the
    layer widths, inputs first. ``parallel[l]`` says whether layer ``l`` runs on the thread
    pool (never from inside a ``prange``). A layer with ``dense[l, p]`` is held dense and runs
    as BLAS GEMMs.

    What a call cannot use is passed as None, and is then not compiled at all: ``u`` when no
    layer drops, ``dense`` when no layer is held dense, ``parallel`` when every layer runs on
    the calling thread, ``wide`` when no batch is wider than ``BLOCK``
    (:mod:`sparsetopo.kernels.layer`; else True). numba removes a branch on ``x is not None``
    for an argument ``x`` typed None before it compiles the calls inside, so each such
    specialisation compiles only the kernels it runs: the sequential epoch of a small network
    compiles neither the parallel, the dense nor the dropout kernels (about two thirds of this
    function's compile time).
    """
    lr, momentum, nesterov = sgd
    n_layers = sizes.shape[0] - 1
    n = order.shape[0]
    at = np.zeros(n_layers + 2, dtype=np.int64)   # where each layer's block starts
    drops = False
    for l in range(n_layers + 1):
        at[l + 1] = at[l] + sizes[l] * batch_size
        if u is not None and l < n_layers and layers[l].rate > 0:
            drops = True
    act = np.empty(at[n_layers + 1], dtype=np.float32)      # every layer's activations
    delta = np.empty(at[n_layers + 1], dtype=np.float32)    # gradients to pre-activations
    dropped = np.empty(at[n_layers] if drops else 0, dtype=np.float32)  # layer inputs after dropout
    grad_size = 0                                            # a dense layer's weight gradient
    for l in range(n_layers):
        if dense is not None and dense[l, p]:
            grad_size = max(grad_size, sizes[l] * sizes[l + 1])
    grad = np.empty(grad_size, dtype=np.float32)
    u_pos = 0
    for step in range(first, stop):
        start = step * batch_size
        nb = min(batch_size, n - start)
        rows = order[start: start + nb]
        gather_transposed(x, rows, _block(act, at[0], sizes[0], nb))
        for l in range(n_layers):
            layer = layers[l]
            inp = _block(act, at[l], sizes[l], nb)
            if u is not None and layer.rate > 0:
                d = _block(dropped, at[l], sizes[l], nb)
                dropout_inputs(inp, u, u_pos, layer.rate, layer.scale, d)
                u_pos += nb * sizes[l]
                inp = d
            lo, hi = layer.offsets[p], layer.offsets[p + 1]
            a_out = _block(act, at[l + 1], sizes[l + 1], nb)
            if dense is not None and dense[l, p]:
                w = layer.dense_values[layer.dense_offsets[p]: layer.dense_offsets[p + 1]]
                dense_forward(inp, w.reshape((sizes[l], sizes[l + 1])), layer.biases[p], a_out, True)
            elif parallel is not None and parallel[l]:
                forward(inp, layer.values[lo:hi], layer.biases[p], layer.col_ptr[p], layer.col_rows[lo:hi],
                        layer.col_perm[lo:hi], a_out, True, n_chunks, wide)
            else:
                forward_serial(inp, layer.values[lo:hi], layer.biases[p], layer.col_ptr[p], layer.col_rows[lo:hi],
                               layer.col_perm[lo:hi], a_out, True, wide)
        losses[step - first] = mse_sigmoid_delta(_block(act, at[n_layers], sizes[n_layers], nb), targets, rows,
                                                 _block(delta, at[n_layers], sizes[n_layers], nb))
        for l in range(n_layers - 1, -1, -1):
            layer = layers[l]
            lo, hi = layer.offsets[p], layer.offsets[p + 1]
            v = layer.values[lo:hi]
            buf = layer.value_bufs[lo:hi]
            ip = layer.indptr[p]
            idx = layer.indices[lo:hi]
            a_in = _block(act, at[l], sizes[l], nb)
            inp = a_in
            if u is not None and layer.rate > 0:
                inp = _block(dropped, at[l], sizes[l], nb)
            d_out = _block(delta, at[l + 1], sizes[l + 1], nb)
            if dense is not None and dense[l, p]:
                dlo, dhi = layer.dense_offsets[p], layer.dense_offsets[p + 1]
                w = layer.dense_values[dlo:dhi]
                if l > 0:  # with the weights before the step, as autograd
                    d_in = _block(delta, at[l], sizes[l], nb)
                    dense_backward_input(d_out, w.reshape((sizes[l], sizes[l + 1])), d_in, a_in)
                    if u is not None and layer.rate > 0:
                        dropout_grad(d_in, inp, layer.scale)
                dense_values_sgd(inp, d_out, w, layer.dense_masks[dlo:dhi], layer.dense_bufs[dlo:dhi], grad,
                                 lr, momentum, nesterov)
            elif l > 0:  # the gradient to the inputs and the step, in one pass
                d_in = _block(delta, at[l], sizes[l], nb)
                if parallel is not None and parallel[l]:
                    backward_sgd(inp, d_out, v, ip, idx, d_in, a_in, True, buf, lr, momentum, nesterov, n_chunks, wide)
                else:
                    backward_sgd_serial(inp, d_out, v, ip, idx, d_in, a_in, True, buf, lr, momentum, nesterov, wide)
                if u is not None and layer.rate > 0:
                    dropout_grad(d_in, inp, layer.scale)
            elif parallel is not None and parallel[l]:  # the first layer needs no gradient to the data
                backward_values_sgd(inp, d_out, ip, idx, v, buf, lr, momentum, nesterov, n_chunks)
            else:
                backward_values_sgd_serial(inp, d_out, ip, idx, v, buf, lr, momentum, nesterov)
            bias_sgd(d_out, layer.biases[p], layer.bias_bufs[p], lr, momentum, nesterov)
