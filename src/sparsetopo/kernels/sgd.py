"""The SGD rule with (Nesterov) momentum, as torch.optim.SGD applies it, for the fused kernels.

Keras' Nesterov SGD (the paper's optimiser) and torch's are the same update written two ways
(Keras' velocity ``v`` is ``-lr * buf`` here). A zero-initialised buffer gives ``buf = g`` on
the first step, as torch's first step does.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparsetopo.kernels.options import FASTMATH


@njit(fastmath=FASTMATH, cache=True, inline="always")
def apply_update(e, g, gv, values, buf, lr, momentum, nesterov, update):
    """The update of connection ``e`` with gradient ``g``: with ``update`` false only stored in
    ``gv[e]``; otherwise torch.optim.SGD's rule (dampening 0), ``buf = momentum * buf + g``, then
    Nesterov ``w -= lr * (g + momentum * buf)`` or plain ``w -= lr * buf``. Inlined into the
    backward passes so the weight is updated in the same pass that computes its gradient."""
    if not update:
        gv[e] = g
        return
    m = momentum * buf[e] + g
    buf[e] = m
    if nesterov:
        values[e] -= lr * (g + momentum * m)
    else:
        values[e] -= lr * m


@njit(fastmath=FASTMATH, cache=True)
def bias_sgd(gyt, bias, buf, lr, momentum, nesterov):
    """The bias gradient (sum over the batch) applied by the same SGD rule as the weights."""
    n_out, nb = gyt.shape
    for j in range(n_out):
        g = np.float32(0.0)
        for b in range(nb):
            g += gyt[j, b]
        apply_update(j, g, bias, bias, buf, lr, momentum, nesterov, True)  # gv unused when updating
