"""A block layer on one example: its tiles read in place (inference at batch 1).

A block layer (:mod:`sparsetopo.nn.block_ops`) computes its tiles as batched matmuls. For one
example those are matrix-vector products of a few dozen numbers each, and the gathers and
transposes around them cost more than the products. Here one pass over the tiles, in their
stored order (by output block, then input block), accumulates each output block in a register
row of ``b_out`` floats and stores it once: the tiles are read once, contiguously, and nothing
is gathered or copied.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from sparsetopo.kernels.options import FASTMATH


@njit(fastmath=FASTMATH, cache=True)
def block_vector(x, tiles, tile_in, tile_out, bias, y):
    """``y = bias + x @ lift(tiles)`` for one example ``x`` (``n_in``), ``y`` (``n_out``).

    ``tiles`` (E, b_in, b_out) are ordered by output block, then input block
    (``tile_in[e]``, ``tile_out[e]``: tile ``e``'s blocks). A ragged last block reads only the
    inputs and writes only the outputs it has. Each output's sum runs over its input blocks in
    ascending order, each block's inputs in order. Output blocks without a tile get the bias."""
    n_tiles, b_in, b_out = tiles.shape
    n_in, n_out = x.size, y.size
    for j in range(n_out):
        y[j] = bias[j]
    acc = np.zeros(b_out, tiles.dtype)
    e = 0
    while e < n_tiles:
        block = tile_out[e]
        acc[:] = 0
        while e < n_tiles and tile_out[e] == block:
            first = tile_in[e] * b_in
            for i in range(min(b_in, n_in - first)):
                xi = x[first + i]
                for j in range(b_out):
                    acc[j] += xi * tiles[e, i, j]
            e += 1
        first = block * b_out
        for j in range(min(b_out, n_out - first)):
            y[first + j] += acc[j]
