"""Numba kernels that train a whole population of sparse sigmoid MLPs in one compiled call.

Why a kernel of its own: a digits-sized network (64-300-10, batch 8) does a few microseconds of
arithmetic per SGD step, but the autograd loop of :func:`sparsetopo.train.train` spends a few
hundred microseconds per step in the interpreter, autograd and the optimizer. Stacking the
members into batched matmuls (the torch path of :mod:`sparsetopo.population`) pays that
overhead once per step instead of once per member, but it still streams dense stacked weights,
gradients, masks and buffers several times a step, and it computes every pruned connection.
Here each member's epoch is one loop in compiled code over its *connected* weights only, and
the members (independent by construction: they share no numbers) are spread over the cores
with ``prange``: no interpreter work per step at all, and parallelism without any
synchronisation.

What is computed is what the autograd loop computes for each member: the batches
``x[order[start:start + batch]]`` in order, input dropout per layer (``u >= rate`` kept and
scaled by ``1 / (1 - rate)``, with the uniform numbers ``u`` supplied by the caller from the
member's own torch generator, in the order ``train()`` draws them), sigmoid on every neuron,
mean squared error on one-hot targets, the gradient to each layer's inputs computed with the
weights *before* the step's update (as autograd does), and ``torch.optim.SGD``'s update
(``buf = m * buf + g``; Nesterov ``w -= lr * (g + m * buf)``, else ``w -= lr * buf``; a buffer
starting at zero gives torch's first step ``buf = g``). Only float rounding differs from torch
(other summation orders), so results agree to float precision, not bit for bit.

Layout (the same idea as :mod:`sparsetopo.nn.kernels`, written for a population): activations
are feature-major ``a[feature, example]`` so that one connection's work over the batch is a
contiguous, vectorisable loop. Every per-layer argument is a tuple indexed by layer; within a
layer the members' connected weights are concatenated (member ``p``'s slice is
``offsets[l, p]:offsets[l, p + 1]``, in its topology's CSR order) and its CSR/CSC pointer rows
are ``indptr[l][p]`` / ``col_ptr[l][p]``, positions relative to its slice. Members of one
population share layer sizes but not connection counts, so one flat array per layer with
offsets holds them all without padding.

``fastmath=False``: sums run in the order written here, so results are reproducible run to
run and independent of how many threads run the members.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(fastmath=False, cache=True)
def _forward_layer(inp, out, v, bias, cp, cr, cperm, nb):
    """``out[j, :] = sigmoid(bias[j] + sum over edges (i, j) of v[e] * inp[i, :])`` (CSC order)."""
    for j in range(out.shape[0]):
        bj = bias[j]
        for t in range(nb):
            out[j, t] = bj
        for e in range(cp[j], cp[j + 1]):
            w = v[cperm[e]]
            i = cr[e]
            for t in range(nb):
                out[j, t] += w * inp[i, t]
        for t in range(nb):
            out[j, t] = np.float32(1.0) / (np.float32(1.0) + np.exp(-out[j, t]))


@njit(fastmath=False, cache=True)
def _drop(a, u, u_start, rate, scale, d, nb):
    """``d[f, t] = a[f, t] * keep / (1 - rate)`` with keep = ``u >= rate``; ``u`` is read in
    train()'s order, ``torch.rand((nb, n_features))`` row-major from ``u_start``."""
    n_f = a.shape[0]
    for t in range(nb):
        base = u_start + t * n_f
        for f in range(n_f):
            keep = np.float32(1.0) if u[base + f] >= rate else np.float32(0.0)
            d[f, t] = (a[f, t] * keep) / scale


@njit(fastmath=False, cache=True)
def _member_batches(x, targets, order, first, stop, batch_size, sizes, rates, scales, u, u_first,
                    values, bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                    offsets, p, lr, momentum, nesterov, losses):
    """Train member ``p`` on the batches ``first .. stop - 1`` of its epoch order ``order``.

    ``u`` holds the member's dropout numbers from the start of batch ``first`` (``u_first`` is
    the epoch position of ``u[0]``, unused when no layer drops). ``losses[step]`` gets each
    batch's mean loss.
    """
    n_layers = sizes.shape[0] - 1
    n = order.shape[0]
    width = 0
    for l in range(n_layers + 1):
        width += sizes[l]
    act = np.empty((width, batch_size), dtype=np.float32)     # every layer's outputs, stacked
    delta = np.empty((width, batch_size), dtype=np.float32)   # gradients to pre-activations
    dropped = np.empty((width, batch_size), dtype=np.float32)  # a layer's input after dropout
    rows = np.zeros(n_layers + 2, dtype=np.int64)
    widest = 0
    for l in range(n_layers + 1):
        rows[l + 1] = rows[l] + sizes[l]
        if l > 0:
            widest = max(widest, sizes[l])
    d_ex = np.empty((batch_size, widest), dtype=np.float32)  # a layer's output gradient, example-major
    grad = np.empty(widest, dtype=np.float32)                # one input's edges' gradients (out-degree <= width)
    per_example = 0
    for l in range(n_layers):
        if rates[l] > 0:
            per_example += sizes[l]
    u_pos = first * batch_size * per_example - u_first
    for step in range(first, stop):
        start = step * batch_size
        nb = min(batch_size, n - start)
        a0 = act[rows[0]: rows[1]]
        for t in range(nb):
            r = order[start + t]
            for f in range(sizes[0]):
                a0[f, t] = x[r, f]
        # forward: each layer's input (dropped when its rate is positive), then sigmoid(x W + b)
        for l in range(n_layers):
            a_in = act[rows[l]: rows[l + 1]]
            inp = a_in
            if rates[l] > 0:
                inp = dropped[rows[l]: rows[l + 1]]
                _drop(a_in, u, u_pos, rates[l], scales[l], inp, nb)
                u_pos += nb * sizes[l]
            lo, hi = offsets[l, p], offsets[l, p + 1]
            _forward_layer(inp, act[rows[l + 1]: rows[l + 2]], values[l][lo:hi], biases[l][p],
                           col_ptr[l][p], col_rows[l][lo:hi], col_perm[l][lo:hi], nb)
        # MSE (mean over batch and outputs) and its gradient through the output sigmoid
        out = act[rows[n_layers]: rows[n_layers + 1]]
        d_out = delta[rows[n_layers]: rows[n_layers + 1]]
        n_out = sizes[n_layers]
        grad_scale = np.float32(2.0 / (nb * n_out))
        total = 0.0
        for t in range(nb):
            r = order[start + t]
            for j in range(n_out):
                y = out[j, t]
                diff = y - targets[r, j]
                total += diff * diff
                d_out[j, t] = grad_scale * diff * y * (np.float32(1.0) - y)
        losses[step - first] = total / (nb * n_out)
        # backward, last layer first: gradient to the inputs with the old weights, then update
        for l in range(n_layers - 1, -1, -1):
            lo, hi = offsets[l, p], offsets[l, p + 1]
            v = values[l][lo:hi]
            buf = bufs[l][lo:hi]
            ip = indptr[l][p]
            idx = indices[l][lo:hi]
            d_o = delta[rows[l + 1]: rows[l + 2]]
            inp = act[rows[l]: rows[l + 1]]
            if rates[l] > 0:
                inp = dropped[rows[l]: rows[l + 1]]
            if l > 0:
                d_i = delta[rows[l]: rows[l + 1]]
                a_in = act[rows[l]: rows[l + 1]]
                # keep pattern of the dropout on this input, read back from the dropped copy:
                # a kept sigmoid output is > 0 unless it underflowed to 0, and then its
                # gradient a * (1 - a) is 0 anyway, so no extra mask needs to be stored
                for i in range(sizes[l]):
                    for t in range(nb):
                        d_i[i, t] = 0.0
                    for e in range(ip[i], ip[i + 1]):
                        w = v[e]
                        j = idx[e]
                        for t in range(nb):
                            d_i[i, t] += w * d_o[j, t]
                    for t in range(nb):
                        g = d_i[i, t]
                        if rates[l] > 0:
                            keep = np.float32(1.0) if inp[i, t] != 0.0 else np.float32(0.0)
                            g = (g / scales[l]) * keep
                        a = a_in[i, t]
                        d_i[i, t] = g * (np.float32(1.0) - a) * a
            # weight gradient of every connection, example by example across a row's edges:
            # elementwise over edges, so it vectorises (a dot product over the batch would
            # be a serial reduction without fastmath); then the update, also elementwise
            n_o = sizes[l + 1]
            for t in range(nb):
                for j in range(n_o):
                    d_ex[t, j] = d_o[j, t]
            for i in range(sizes[l]):
                e0, e1 = ip[i], ip[i + 1]
                for e in range(e0, e1):
                    grad[e - e0] = 0.0
                for t in range(nb):
                    xi = inp[i, t]
                    if xi == 0.0:
                        continue
                    row = d_ex[t]
                    for e in range(e0, e1):
                        grad[e - e0] += xi * row[idx[e]]
                if nesterov:
                    for e in range(e0, e1):
                        g = grad[e - e0]
                        m = momentum * buf[e] + g
                        buf[e] = m
                        v[e] -= lr * (g + momentum * m)
                else:
                    for e in range(e0, e1):
                        m = momentum * buf[e] + grad[e - e0]
                        buf[e] = m
                        v[e] -= lr * m
            b = biases[l][p]
            bb = bias_bufs[l][p]
            for j in range(sizes[l + 1]):
                g = np.float32(0.0)
                for t in range(nb):
                    g += d_o[j, t]
                m = momentum * bb[j] + g
                bb[j] = m
                if nesterov:
                    b[j] -= lr * (g + momentum * m)
                else:
                    b[j] -= lr * m


@njit(parallel=True, fastmath=False, cache=True)
def population_batches(x, targets, orders, members, first, stop, batch_size, sizes, rates, scales, uniforms,
                       u_first, values, bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                       offsets, lr, momentum, nesterov, losses):
    """Batches ``first .. stop - 1`` of an epoch for every member row in ``members``, in parallel.

    ``orders[a]`` is member ``members[a]``'s permutation of the training rows, ``uniforms[a]``
    its dropout numbers from batch ``first`` on (a ``(len(members), 0)`` array when nothing
    drops), ``losses[a, step - first]`` receives its batch losses. Members touch disjoint
    slices only, so the ``prange`` needs no synchronisation and the numbers do not depend on
    the thread count.
    """
    for a in prange(members.shape[0]):
        _member_batches(x, targets, orders[a], first, stop, batch_size, sizes, rates, scales, uniforms[a], u_first,
                        values, bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                        offsets, members[a], lr, momentum, nesterov, losses[a])


@njit(parallel=True, fastmath=False, cache=True)
def population_correct(x, y, members, sizes, values, biases, col_ptr, col_rows, col_perm, offsets, chunk, correct):
    """``correct[a]``: test examples member ``members[a]`` classifies right (no dropout).

    The predicted class is the first largest output, as ``torch.argmax`` picks.
    """
    n_layers = sizes.shape[0] - 1
    n = x.shape[0]
    for a in prange(members.shape[0]):
        p = members[a]
        width = 0
        for l in range(n_layers + 1):
            width += sizes[l]
        act = np.empty((width, chunk), dtype=np.float32)
        rows = np.zeros(n_layers + 2, dtype=np.int64)
        for l in range(n_layers + 1):
            rows[l + 1] = rows[l] + sizes[l]
        count = 0
        for start in range(0, n, chunk):
            nb = min(chunk, n - start)
            a0 = act[rows[0]: rows[1]]
            for t in range(nb):
                for f in range(sizes[0]):
                    a0[f, t] = x[start + t, f]
            for l in range(n_layers):
                lo, hi = offsets[l, p], offsets[l, p + 1]
                _forward_layer(act[rows[l]: rows[l + 1]], act[rows[l + 1]: rows[l + 2]], values[l][lo:hi],
                               biases[l][p], col_ptr[l][p], col_rows[l][lo:hi], col_perm[l][lo:hi], nb)
            out = act[rows[n_layers]: rows[n_layers + 1]]
            for t in range(nb):
                best = 0
                for j in range(1, sizes[n_layers]):
                    if out[j, t] > out[best, t]:
                        best = j
                if best == y[start + t]:
                    count += 1
        correct[a] = count
