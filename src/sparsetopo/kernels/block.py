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
    """``y[0] = bias + x[0] @ lift(tiles)`` for one example, ``x`` (1, ``n_in``) and ``y``
    (1, ``n_out``), as the layer's tensors are (any strides).

    ``tiles`` (E, b_in, b_out) are ordered by output block, then input block
    (``tile_in[e]``, ``tile_out[e]``: tile ``e``'s blocks). A ragged last block reads only the
    inputs and writes only the outputs it has. Each output's sum runs over its input blocks in
    ascending order, each block's inputs four at a time. Output blocks without a tile get the bias."""
    n_tiles, b_in, b_out = tiles.shape
    x, y = x[0], y[0]
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
            rows = min(b_in, n_in - first)
            i = 0
            # four rows of the tile per pass over the output row: a quarter of the loads and
            # stores of acc, which bound the one-row loop (about 2x faster, measured)
            while i + 4 <= rows:
                x0, x1, x2, x3 = x[first + i], x[first + i + 1], x[first + i + 2], x[first + i + 3]
                t0, t1, t2, t3 = tiles[e, i], tiles[e, i + 1], tiles[e, i + 2], tiles[e, i + 3]
                for j in range(b_out):
                    acc[j] += x0 * t0[j] + x1 * t1[j] + x2 * t2[j] + x3 * t3[j]
                i += 4
            while i < rows:
                xi, ti = x[first + i], tiles[e, i]
                for j in range(b_out):
                    acc[j] += xi * ti[j]
                i += 1
            e += 1
        first = block * b_out
        for j in range(min(b_out, n_out - first)):
            y[first + j] += acc[j]
