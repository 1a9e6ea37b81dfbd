"""Layer maths of a *dense-stored* layer: BLAS GEMMs with the topology's mask re-applied.

Why a second form: the CSR kernels of :mod:`sparsetopo.kernels.layer` pay an indirection per
connection and reach about a third of the machine's float32 GEMM rate on a fully connected
784-300 layer at batch 32. The paper's grid is mostly dense or near-dense layers (input
densities up to 90%), so for such a layer three GEMMs over the whole ``n_in x n_out`` matrix,
pruned entries included, cost less than the CSR passes over the connections alone. Which form a
layer takes is decided per member layer by :func:`sparsetopo.nn.plan.member_prefers_dense`.

Layout: as in :mod:`sparsetopo.kernels.layer`, activations are feature-major
(``a[feature, example]``). The weights are the layer's ``n_in x n_out`` matrix in row-major
order (``w[i, j]`` is connection ``i -> j``; a fully connected layer's CSR order is this very
order), pruned entries 0; ``mask`` holds 1 at connections and 0 elsewhere. The gradient of
``weight * mask`` is the gradient masked, so a pruned entry's gradient, momentum buffer and value
stay exactly 0 and the layer computes what its CSR form computes, up to the order of the sums.

``np.dot`` inside numba calls the BLAS that SciPy ships (``scipy.linalg.cython_blas``); the
caller keeps that BLAS on one thread (the members are the parallelism, see
:mod:`sparsetopo.train.fused_population`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparsetopo.kernels.expf import sigmoid_into
from sparsetopo.kernels.options import FASTMATH
from sparsetopo.kernels.sgd import apply_update


@njit(fastmath=FASTMATH, cache=True)
def dense_forward(xt, w, bias, yt, sigmoid):
    """``yt = act(w.T @ xt + bias)``: ``xt`` (n_in, nb), ``w`` (n_in, n_out), ``yt`` (n_out, nb)."""
    np.dot(w.T, xt, yt)
    n_out, nb = yt.shape
    for j in range(n_out):
        bj = bias[j]
        row = yt[j]
        for t in range(nb):
            row[t] = row[t] + bj
        if sigmoid:
            sigmoid_into(row, row, nb)


@njit(fastmath=FASTMATH, cache=True)
def dense_backward_input(gyt, w, gxt, act):
    """``gxt = (w @ gyt) * act * (1 - act)``: the gradient to the previous layer's
    pre-activations (``act`` its sigmoid outputs), with the weights before this step's update."""
    np.dot(w, gyt, gxt)
    n_in, nb = gxt.shape
    for i in range(n_in):
        a = act[i]
        g = gxt[i]
        for t in range(nb):
            g[t] = g[t] * (a[t] * (np.float32(1.0) - a[t]))


@njit(fastmath=FASTMATH, cache=True)
def dense_values_sgd(xt, gyt, w, mask, buf, grad, lr, momentum, nesterov):
    """The weight gradient ``xt @ gyt.T`` masked by the topology, applied by the SGD rule of
    :func:`sparsetopo.kernels.sgd.apply_update` to ``w`` and its momentum ``buf``.

    ``grad`` is scratch of ``n_in * n_out`` floats; ``w``, ``mask``, ``buf`` are flat
    row-major ``n_in x n_out`` arrays.
    """
    n_in = xt.shape[0]
    n_out = gyt.shape[0]
    g2 = grad[: n_in * n_out].reshape((n_in, n_out))
    np.dot(xt, gyt.T, g2)
    for e in range(n_in * n_out):
        apply_update(e, grad[e] * mask[e], grad, w, buf, lr, momentum, nesterov, True)
