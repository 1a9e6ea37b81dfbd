"""A trained sparse sigmoid MLP's outputs in compiled code: its accuracy and its layers' activations.

The fused training engines evaluate their networks here rather than through the torch module
(whose sparse layers run the tiled kernels of :mod:`sparsetopo.kernels.tiled`): the forward pass is
:func:`~sparsetopo.kernels.layer.forward_serial` (or :func:`~sparsetopo.kernels.dense.dense_forward`
for a layer held dense) on arguments of the very types the training step passes it, so the
specialisations compiled for training serve evaluation too, and a first run compiles no
second set of layer kernels only to measure its accuracy (about a third of a cold start).

Layout and arguments are those of :func:`sparsetopo.engines.step.train_batches` (network
``p`` of a tuple of :class:`~sparsetopo.engines.layout.EngineLayer`, a layer held dense where
``dense[l, p]``, ``dense`` None when none is). Examples go through in blocks of ``BLOCK`` (the width the forward kernel
keeps in registers). The functions are serial: the population engine runs one member per
thread (:func:`sparsetopo.engines.population.population_correct` counts with
:func:`count_correct`); the sequential fused epoch reads :func:`layer_outputs`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparsetopo.kernels.dense import dense_forward
from sparsetopo.kernels.layer import forward_serial
from sparsetopo.kernels.options import BLOCK, FASTMATH


@njit(fastmath=FASTMATH, cache=True)
def _layer_offsets(sizes):
    """Where each layer's block of ``BLOCK`` examples starts in one flat activation buffer."""
    at = np.zeros(sizes.shape[0] + 1, dtype=np.int64)
    for l in range(sizes.shape[0]):
        at[l + 1] = at[l] + sizes[l] * BLOCK
    return at


@njit(fastmath=FASTMATH, cache=True)
def forward_block(x, start, nb, sizes, layers, p, dense, act, at):
    """Network ``p``'s sigmoid outputs of every layer for examples ``start .. start + nb - 1`` of
    ``x`` (``nb <= BLOCK``), each layer's as a feature-major ``sizes[l] x nb`` block of ``act``
    from ``at[l]`` (layer 0: the inputs)."""
    n_layers = sizes.shape[0] - 1
    a0 = act[at[0]: at[0] + sizes[0] * nb].reshape((sizes[0], nb))
    for t in range(nb):
        for f in range(sizes[0]):
            a0[f, t] = x[start + t, f]
    for l in range(n_layers):
        layer = layers[l]
        lo, hi = layer.offsets[p], layer.offsets[p + 1]
        a_in = act[at[l]: at[l] + sizes[l] * nb].reshape((sizes[l], nb))
        a_out = act[at[l + 1]: at[l + 1] + sizes[l + 1] * nb].reshape((sizes[l + 1], nb))
        if dense is not None and dense[l, p]:
            w = layer.dense_values[layer.dense_offsets[p]: layer.dense_offsets[p + 1]]
            dense_forward(a_in, w.reshape((sizes[l], sizes[l + 1])), layer.biases[p], a_out, True)
        else:
            forward_serial(a_in, layer.values[lo:hi], layer.biases[p], layer.col_ptr[p], layer.col_rows[lo:hi],
                           layer.col_perm[lo:hi], a_out, True, None)  # None: never wider than BLOCK


@njit(fastmath=FASTMATH, cache=True)
def count_correct(x, y, sizes, layers, p, dense):
    """How many examples of ``x`` network ``p`` classifies as ``y`` says (no dropout). The
    predicted class is the first largest output, as ``torch.argmax`` picks."""
    n_layers = sizes.shape[0] - 1
    n_out = sizes[n_layers]
    at = _layer_offsets(sizes)
    act = np.empty(at[n_layers + 1], dtype=np.float32)
    count = 0
    for start in range(0, x.shape[0], BLOCK):
        nb = min(BLOCK, x.shape[0] - start)
        forward_block(x, start, nb, sizes, layers, p, dense, act, at)
        out = act[at[n_layers]: at[n_layers] + n_out * nb].reshape((n_out, nb))
        for t in range(nb):
            best = 0
            for j in range(1, n_out):
                if out[j, t] > out[best, t]:
                    best = j
            if best == y[start + t]:
                count += 1
    return count


@njit(fastmath=FASTMATH, cache=True)
def layer_outputs(x, sizes, layers, p, dense):
    """Network ``p``'s sigmoid outputs of every layer but the input for every example of ``x``:
    an ``(examples, sizes[1] + ... + sizes[-1])`` array, layer after layer (the output layer
    last). One kernel gives both what the accuracy reads and what the divergence rule probes."""
    n_layers = sizes.shape[0] - 1
    at = _layer_offsets(sizes)
    act = np.empty(at[n_layers + 1], dtype=np.float32)
    width = 0
    for l in range(1, n_layers + 1):
        width += sizes[l]
    out = np.empty((x.shape[0], width), dtype=np.float32)
    for start in range(0, x.shape[0], BLOCK):
        nb = min(BLOCK, x.shape[0] - start)
        forward_block(x, start, nb, sizes, layers, p, dense, act, at)
        column = 0
        for l in range(1, n_layers + 1):
            a = act[at[l]: at[l] + sizes[l] * nb].reshape((sizes[l], nb))
            for t in range(nb):
                for f in range(sizes[l]):
                    out[start + t, column + f] = a[f, t]
            column += sizes[l]
    return out
