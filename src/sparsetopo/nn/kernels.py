"""Numba kernels of the truly sparse backend: work and memory follow the number of connections.

Why numba: it needs no compiler toolchain at install time (llvmlite ships as wheels on PyPI),
caches compiled kernels on disk (``cache=True``) so only the first process pays for
compilation, and parallelises over cores with ``prange``. ``torch.compile`` lowers to dense
kernels and would not give us a gather/scatter over a fixed edge list. ``fastmath=False``
everywhere: sums run in the order written here, so results are reproducible run to run.

Layout: activations are *feature-major* (``a[feature, example]``, C-contiguous float32), so
that for one connection ``(i, j)`` the batch of products ``w * x[i, :]`` is a contiguous,
vectorisable loop. A layer's connections are addressed two ways, both built once from the
Topology (see :class:`sparsetopo.nn.sparse_ops.SparseIndex`):

* CSR by input: ``indptr``, ``indices``; the weights ``values`` are stored in this order.
* CSC by output: ``col_ptr``, ``col_rows`` and ``col_perm`` (the CSR position of each edge),
  so that each output's sum is owned by one thread (no atomics, no scratch per thread).

Each kernel is written once for a range of rows (``_*_rows``). Its parallel entry point splits
the rows into ``n_chunks`` contiguous ranges run with ``prange`` (a chunk allocates its scratch
once, not per row); its ``*_serial`` entry point runs them on the calling thread, for layers
too small to repay waking the thread pool.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

LANES = 16  # independent partial sums in a dot product: lets LLVM use SIMD without fastmath


@njit(cache=True, inline="always")
def _bounds(chunk, n_chunks, n):
    return chunk * n // n_chunks, (chunk + 1) * n // n_chunks


@njit(cache=True, inline="always")
def _dot(x, i, y, j, nb, acc):
    """sum_b x[i, b] * y[j, b], with LANES interleaved partial sums (a fixed, documented order)."""
    for t in range(LANES):
        acc[t] = 0.0
    full = nb - nb % LANES
    for b0 in range(0, full, LANES):
        for t in range(LANES):
            acc[t] += x[i, b0 + t] * y[j, b0 + t]
    s = np.float32(0.0)
    for t in range(LANES):
        s += acc[t]
    for b in range(full, nb):
        s += x[i, b] * y[j, b]
    return s


# -- row kernels: one range of rows, serial; the entry points below run them in chunks ------------
@njit(fastmath=False, cache=True)
def _forward_rows(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid):
    nb = yt.shape[1]
    for j in range(lo, hi):
        bj = bias[j]
        for b in range(nb):
            yt[j, b] = bj
        for e in range(col_ptr[j], col_ptr[j + 1]):
            w = values[col_perm[e]]
            i = col_rows[e]
            for b in range(nb):
                yt[j, b] += w * xt[i, b]
        if sigmoid:
            for b in range(nb):
                yt[j, b] = np.float32(1.0) / (np.float32(1.0) + np.exp(-yt[j, b]))


@njit(fastmath=False, cache=True)
def _backward_input_rows(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad):
    nb = gxt.shape[1]
    for i in range(lo, hi):
        for b in range(nb):
            gxt[i, b] = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            w = values[e]
            j = indices[e]
            for b in range(nb):
                gxt[i, b] += w * gyt[j, b]
        if sigmoid_grad:
            for b in range(nb):
                a = act[i, b]
                gxt[i, b] *= a * (np.float32(1.0) - a)


@njit(fastmath=False, cache=True)
def _backward_values_rows(lo, hi, xt, gyt, indptr, indices, gv, values, buf, lr, momentum, nesterov, update):
    nb = xt.shape[1]
    acc = np.empty(LANES, dtype=np.float32)
    for i in range(lo, hi):
        for e in range(indptr[i], indptr[i + 1]):
            g = _dot(xt, i, gyt, indices[e], nb, acc)
            if not update:
                gv[e] = g
                continue
            m = momentum * buf[e] + g
            buf[e] = m
            if nesterov:
                values[e] -= lr * (g + momentum * m)
            else:
                values[e] -= lr * m


# -- entry points -----------------------------------------------------------------------------
@njit(parallel=True, fastmath=False, cache=True)
def forward(xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, n_chunks):
    """``yt[j, :] = act(bias[j] + sum over edges (i, j) of values[e] * xt[i, :])``.

    Chunked over outputs (CSC order), so each output's sum belongs to one thread. ``sigmoid``
    applies the logistic function in place (the paper's activation), saving a pass in training.
    """
    n_out = yt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_out)
        _forward_rows(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid)


@njit(fastmath=False, cache=True)
def forward_serial(xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid):
    """:func:`forward` on the calling thread: for layers too small to repay a parallel launch."""
    _forward_rows(0, yt.shape[0], xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid)


@njit(parallel=True, fastmath=False, cache=True)
def backward_input(gyt, values, indptr, indices, gxt, act, sigmoid_grad, n_chunks):
    """``gxt[i, :] = sum over edges (i, j) of values[e] * gyt[j, :]``, the gradient to the inputs.

    With ``sigmoid_grad`` the result is multiplied by ``act * (1 - act)``, where ``act`` holds
    the inputs (the previous layer's sigmoid outputs): the gradient to that layer's
    pre-activations, fused so that the training step makes one pass.
    """
    n_in = gxt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_input_rows(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad)


@njit(fastmath=False, cache=True)
def backward_input_serial(gyt, values, indptr, indices, gxt, act, sigmoid_grad):
    """:func:`backward_input` on the calling thread."""
    _backward_input_rows(0, gxt.shape[0], gyt, values, indptr, indices, gxt, act, sigmoid_grad)


@njit(parallel=True, fastmath=False, cache=True)
def backward_values(xt, gyt, indptr, indices, gv, n_chunks):
    """SDDMM: ``gv[e] = sum_b xt[i, b] * gyt[j, b]`` for every edge ``e = (i, j)``, nothing else.

    This is the weight gradient sampled at the connections: never an ``n_in x n_out`` matrix.
    """
    n_in = xt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_values_rows(lo, hi, xt, gyt, indptr, indices, gv, gv, gv,
                              np.float32(0.0), np.float32(0.0), False, False)


@njit(fastmath=False, cache=True)
def backward_values_serial(xt, gyt, indptr, indices, gv):
    """:func:`backward_values` on the calling thread."""
    _backward_values_rows(0, xt.shape[0], xt, gyt, indptr, indices, gv, gv, gv,
                          np.float32(0.0), np.float32(0.0), False, False)


@njit(parallel=True, fastmath=False, cache=True)
def backward_values_sgd(xt, gyt, indptr, indices, values, buf, lr, momentum, nesterov, n_chunks):
    """The SDDMM gradient of every connection, applied at once by (Nesterov) momentum SGD.

    Exactly torch.optim.SGD's rule with dampening 0 and no weight decay (its first step, which
    sets ``buf = g``, is this rule with ``buf`` starting at zero):
    ``buf = momentum * buf + g``; ``w -= lr * (g + momentum * buf)`` (Nesterov) or ``lr * buf``.
    """
    n_in = xt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_values_rows(lo, hi, xt, gyt, indptr, indices, values, values, buf, lr, momentum, nesterov, True)


@njit(fastmath=False, cache=True)
def backward_values_sgd_serial(xt, gyt, indptr, indices, values, buf, lr, momentum, nesterov):
    """:func:`backward_values_sgd` on the calling thread."""
    _backward_values_rows(0, xt.shape[0], xt, gyt, indptr, indices, values, values, buf, lr, momentum, nesterov, True)


@njit(fastmath=False, cache=True)
def bias_sgd(gyt, bias, buf, lr, momentum, nesterov):
    """The bias gradient (sum over the batch) applied by the same SGD rule as the weights."""
    n_out, nb = gyt.shape
    for j in range(n_out):
        g = np.float32(0.0)
        for b in range(nb):
            g += gyt[j, b]
        m = momentum * buf[j] + g
        buf[j] = m
        if nesterov:
            bias[j] -= lr * (g + momentum * m)
        else:
            bias[j] -= lr * m


@njit(fastmath=False, cache=True)
def gather_transposed(x, rows, out):
    """``out[f, b] = x[rows[b], f]``: a batch of examples, feature-major."""
    nb = rows.shape[0]
    for b in range(nb):
        r = rows[b]
        for f in range(x.shape[1]):
            out[f, b] = x[r, f]


@njit(fastmath=False, cache=True)
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


@njit(fastmath=False, cache=True)
def _block(buffer, offset, n_rows, nb):
    """A feature-major ``n_rows x nb`` view into a flat scratch buffer."""
    return buffer[offset: offset + n_rows * nb].reshape((n_rows, nb))


@njit(fastmath=False, cache=True)
def train_epoch(x, targets, order, batch_size, values, biases, value_bufs, bias_bufs, indptrs, indices,
                col_ptrs, col_rows, col_perms, sizes, parallel, lr, momentum, nesterov, n_chunks, losses):
    """One epoch of minibatch SGD on an MLP of sparse sigmoid layers, MSE on one-hot targets.

    Per batch (the rows ``order[start:start + batch_size]`` of ``x``, the same batches as the
    autograd loop in :func:`sparsetopo.train.train`): forward with sigmoid, the MSE gradient,
    then from the last layer down the gradient to the layer's inputs (computed with the
    weights *before* this step's update, as autograd does) followed by the SGD update of the
    layer's connected weights, bias and momentum buffers, in place. ``values`` and the other
    per-layer arguments are homogeneous tuples indexed by layer; ``parallel[l]`` says whether
    layer ``l`` is large enough to run on the thread pool. ``losses[step]`` gets each batch's
    mean loss.
    """
    n_layers = sizes.shape[0] - 1
    n = order.shape[0]
    offsets = np.zeros(n_layers + 2, dtype=np.int64)
    for l in range(n_layers + 1):
        offsets[l + 1] = offsets[l] + sizes[l] * batch_size
    act = np.empty(offsets[n_layers + 1], dtype=np.float32)    # every layer's activations
    delta = np.empty(offsets[n_layers + 1], dtype=np.float32)  # gradients to pre-activations
    step = 0
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        rows = order[start: start + nb]
        gather_transposed(x, rows, _block(act, offsets[0], sizes[0], nb))
        for l in range(n_layers):
            a_in = _block(act, offsets[l], sizes[l], nb)
            a_out = _block(act, offsets[l + 1], sizes[l + 1], nb)
            if parallel[l]:
                forward(a_in, values[l], biases[l], col_ptrs[l], col_rows[l], col_perms[l], a_out, True, n_chunks)
            else:
                forward_serial(a_in, values[l], biases[l], col_ptrs[l], col_rows[l], col_perms[l], a_out, True)
        losses[step] = mse_sigmoid_delta(_block(act, offsets[n_layers], sizes[n_layers], nb), targets, rows,
                                         _block(delta, offsets[n_layers], sizes[n_layers], nb))
        for l in range(n_layers - 1, -1, -1):
            a_in = _block(act, offsets[l], sizes[l], nb)
            d_out = _block(delta, offsets[l + 1], sizes[l + 1], nb)
            if l > 0:
                d_in = _block(delta, offsets[l], sizes[l], nb)
                if parallel[l]:
                    backward_input(d_out, values[l], indptrs[l], indices[l], d_in, a_in, True, n_chunks)
                else:
                    backward_input_serial(d_out, values[l], indptrs[l], indices[l], d_in, a_in, True)
            if parallel[l]:
                backward_values_sgd(a_in, d_out, indptrs[l], indices[l], values[l], value_bufs[l],
                                    lr, momentum, nesterov, n_chunks)
            else:
                backward_values_sgd_serial(a_in, d_out, indptrs[l], indices[l], values[l], value_bufs[l],
                                           lr, momentum, nesterov)
            bias_sgd(d_out, biases[l], bias_bufs[l], lr, momentum, nesterov)
        step += 1
