"""One call per direction for a sparse layer inside someone else's network (batch-major tensors).

A layer called through autograd receives ``x`` as torch lays it out, batch-major
(``x[example, feature]``), while the kernels of :mod:`.layer` read activations feature-major.
Done in Python, each step pays numpy layout copies, small allocations, a numpy bias reduction
and one numba dispatch per kernel around kernels that, at 1% density, take tens of
microseconds. The entry points here do all of it inside one compiled call per direction:

* :func:`forward`: ``x`` (batch-major) -> the feature-major copy the kernel reads (and the
  weight gradient needs later), the kernel of :func:`.layer.forward` writing ``y`` batch-major;
* :func:`backward`: ``grad_y`` (batch-major) -> feature-major, the one-pass input and weight
  gradient of :func:`.layer.backward` (or one of the two) writing ``grad_x`` batch-major, and
  the bias gradient (the sum of ``grad_y`` over the batch).

The layer arithmetic is :mod:`.layer`'s, unchanged: the same kernels, the same summation order, so the numbers are bit-identical to
calling those kernels on feature-major arrays.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit

from sparsetopo.kernels import layer as kernels
from sparsetopo.kernels.options import FASTMATH

# Compiled code loaded from numba's on-disk cache that contains a parallel kernel crashes when
# called before numba's thread pool is running (numba starts it when a parallel function is
# compiled or its thread count is read). Reading the thread count here starts it, so every
# entry point below is safe to call first thing in a process.
numba.get_num_threads()


@njit(cache=True)
def transpose_into(a, out):
    """``out[j, i] = a[i, j]``. The loop order that measured fastest on 784 x 32 and 32 x 784
    blocks: stores along ``out``'s rows when ``a`` is the wider one, loads along ``a``'s rows
    otherwise."""
    rows, cols = a.shape
    if rows <= cols:
        for j in range(cols):
            dst = out[j]
            for i in range(rows):
                dst[i] = a[i, j]
    else:
        for i in range(rows):
            src = a[i]
            for j in range(cols):
                out[j, i] = src[j]


# The outputs (y, grad_x) are written by the kernels straight into batch-major arrays through
# their transposed views: a kernel stores each finished row once, so storing it strided costs
# what a transpose would, without the second array and pass. Inputs are transposed first: the
# kernels' inner loops read them row by row, thousands of times, and need them contiguous.
@njit(cache=True)
def _forward_into(xt, values, bias, col_ptr, col_rows, col_perm, yt, n_chunks):
    if n_chunks:
        kernels.forward(xt, values, bias, col_ptr, col_rows, col_perm, yt, False, n_chunks)
    else:
        kernels.forward_serial(xt, values, bias, col_ptr, col_rows, col_perm, yt, False)


@njit(cache=True)
def forward(x, values, bias, col_ptr, col_rows, col_perm, n_chunks, keep_xt):
    """``(y, xt)``: ``y = x @ W + b`` batch-major for a batch-major ``x``, and ``x`` feature-major
    (an empty array unless ``keep_xt``: only training needs it, for the weight gradient).
    ``n_chunks``: ranges for the thread pool, or 0 to stay on the calling thread."""
    xt = np.empty((x.shape[1], x.shape[0]), np.float32)
    transpose_into(x, xt)
    y = np.empty((x.shape[0], col_ptr.size - 1), np.float32)
    _forward_into(xt, values, bias, col_ptr, col_rows, col_perm, y.T, n_chunks)
    if not keep_xt:
        xt = np.empty((0, 0), np.float32)
    return y, xt


@njit(fastmath=FASTMATH, cache=True)
def _backward_into(xt, gyt, values, indptr, indices, gxt, gv, want_x, want_values, n_chunks):
    """The input gradient into ``gxt`` (any layout) and the weight gradient into ``gv``."""
    if want_x and want_values:  # one pass over the connections computes both
        if n_chunks:
            kernels.backward(xt, gyt, values, indptr, indices, gxt, gxt, False, gv, n_chunks)
        else:
            kernels.backward_serial(xt, gyt, values, indptr, indices, gxt, gxt, False, gv)
    elif want_x:
        if n_chunks:
            kernels.backward_input(gyt, values, indptr, indices, gxt, gxt, False, n_chunks)
        else:
            kernels.backward_input_serial(gyt, values, indptr, indices, gxt, gxt, False)
    elif want_values:
        if n_chunks:
            kernels.backward_values(xt, gyt, indptr, indices, gv, n_chunks)
        else:
            kernels.backward_values_serial(xt, gyt, indptr, indices, gv)


@njit(fastmath=FASTMATH, cache=True)
def _bias_grad(gyt, want_bias):
    gb = np.zeros(gyt.shape[0] if want_bias else 0, np.float32)
    for j in range(gb.size):
        row = gyt[j]
        s = np.float32(0.0)
        for t in range(row.size):
            s += row[t]
        gb[j] = s
    return gb


@njit(cache=True)
def backward(xt, gy, values, indptr, indices, want_x, want_values, want_bias, n_chunks):
    """``(gx, gv, gb)`` for a batch-major ``gy``: the gradient to the inputs (batch-major), to the
    connected weights (CSR order) and to the bias; unwanted ones are empty arrays."""
    batch = gy.shape[0]
    gyt = np.empty((gy.shape[1], batch), np.float32)
    transpose_into(gy, gyt)
    n_in = indptr.size - 1 if want_x else 0  # xt is empty when only x needs a gradient
    gv = np.empty(values.size if want_values else 0, np.float32)
    gx = np.empty((batch, n_in), np.float32)
    _backward_into(xt, gyt, values, indptr, indices, gx.T, gv, want_x, want_values, n_chunks)
    return gx, gv, _bias_grad(gyt, want_bias)
