"""A sparse layer at any batch size: the kernels under ``SparseLinear`` in someone else's network.

The kernels of :mod:`.layer` read whole feature-major activations (``xt[feature, example]``):
at the paper's batch of 32 a row is one register block, but at batch 128-2048 each row is
walked block by block through strided views, and every block re-reads the layer's index. Here
the batch is cut into *tiles* of ``TILE`` examples, each tile laid out feature-major and
contiguous (``tiles[t, feature, example]``, zero-padded to the full width):

* a tile of one layer's inputs (``n_in x TILE`` floats, 256 KiB for 1024 inputs) stays in the
  core's L2 cache while the connections of every output are walked over it;
* the inner loop is ``TILE`` contiguous floats with a constant trip count: LLVM unrolls it and
  keeps the accumulator in registers (four AVX-512 registers);
* the weights are read in the order walked: CSR (``values``) for the input gradient and the
  weight gradient, and a CSC copy (:func:`csc_values`, made once per weight version) for the
  forward, so no gather through ``col_perm`` sits in the inner loop.

Outputs (``y``, ``grad_x``) are stored straight into the caller's batch-major array: each
finished row of a tile is stored once, strided, which costs what a transpose would without
the second array.

Threads: the parallel entry points split the *outputs* (forward) or the *inputs* (backward)
into ``n_chunks`` ranges, each range walking every tile. Every output sum, input-gradient sum
and weight-gradient sum therefore lies in one range, computed in one fixed order (connections
in index order, tiles in batch order): the numbers are the same whatever the thread count,
and the same run after run. ``*_serial`` entry points run on the calling thread;
:func:`sparsetopo.nn.plan.call_threads` decides between them, and
:func:`sparsetopo.nn.plan.tile_width` sets the width of the tiles.

Batch 1 (inference) has its own kernel, :func:`forward_vector`: one dot product per output.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray, njit, prange

from sparsetopo.kernels.layer import _bounds, _stack_f32
from sparsetopo.kernels.options import FASTMATH, UNROLL

# See batch_major: a cached parallel kernel must not run before numba's thread pool exists.
numba.get_num_threads()

TILE = 64  # examples per tile: an accumulator of four AVX-512 registers; index reads amortised over 64
HALF_TILE = 32  # the tile of batches 32..63 (the paper's batch): also compiled with a constant width
STORE_ROWS = 16  # output rows gathered before they are stored: one cache line of each example's row
STORE_BLOCK = STORE_ROWS * TILE  # floats of that block (a literal for the stack allocation)


@njit(cache=True)
def tiles_from_rows(x, width):
    """``x`` (batch x n, batch-major) as tiles ``(n_tiles, n, width)``, the last zero-padded.

    Copied in blocks of 8 examples x 16 features with constant bounds (unrolled into
    shuffles): a row of ``x`` whose length is a multiple of 4 KiB maps every example of a
    block to the same cache set, so a block reads only 8 of them at a time (measured fastest
    of five loop orders on 128-2048 x 784-4096)."""
    batch, n = x.shape
    n_tiles = (batch + width - 1) // width
    tiles = np.zeros((n_tiles, n, width), np.float32)
    for t in range(n_tiles):
        b0 = t * width
        m = min(width, batch - b0)
        dst = tiles[t]
        for bb in range(0, m, 8):
            if bb + 8 <= m:
                for i0 in range(0, n - 15, 16):
                    for i in range(i0, i0 + 16):
                        for b in range(8):
                            dst[i, bb + b] = x[b0 + bb + b, i]
                for i in range(n - n % 16, n):
                    for b in range(8):
                        dst[i, bb + b] = x[b0 + bb + b, i]
            else:
                for i in range(n):
                    for b in range(bb, m):
                        dst[i, b] = x[b0 + b, i]
    return tiles


@njit(cache=True)
def csc_values(values, col_perm):
    """The connected weights in output-major (CSC) order: what the forward walks."""
    out = np.empty(col_perm.size, np.float32)
    for e in range(col_perm.size):
        out[e] = values[col_perm[e]]
    return out


# -- one tile, one range of rows ----------------------------------------------------------------
@njit(fastmath=FASTMATH, cache=True, inline="always")
def _gather_tile(lo, hi, src, w, ptr, idx, bias, has_bias, out, b0, nb, m):
    """``out[b0 + t, r] = bias[r] + sum over e in ptr[r]:ptr[r+1] of w[e] * src[idx[e], t]`` for
    rows ``r`` in ``[lo, hi)`` and ``t < nb``; ``m`` (>= nb) columns computed, a constant for
    a full tile. The forward (CSC, with bias) and the input gradient (CSR, none) alike."""
    # Results go to a stack block of STORE_ROWS rows first, then to ``out`` a cache line per
    # example: stored one by one, a row's TILE values land TILE lines apart, and with 1024 or
    # 4096 outputs (rows 4 KiB apart) all in one cache set, which evicts them before they fill.
    blk = carray(_stack_f32(STORE_BLOCK), (STORE_ROWS, TILE))
    for r0 in range(lo, hi, STORE_ROWS):
        r1 = min(hi, r0 + STORE_ROWS)
        for r in range(r0, r1):
            acc = blk[r - r0]
            b = bias[r] if has_bias else np.float32(0.0)
            for t in range(m):
                acc[t] = b
            e = ptr[r]
            end = ptr[r + 1]
            while e + UNROLL <= end:
                w0 = w[e]
                w1 = w[e + 1]
                w2 = w[e + 2]
                w3 = w[e + 3]
                x0 = src[idx[e]]
                x1 = src[idx[e + 1]]
                x2 = src[idx[e + 2]]
                x3 = src[idx[e + 3]]
                for t in range(m):
                    acc[t] += (w0 * x0[t] + w1 * x1[t]) + (w2 * x2[t] + w3 * x3[t])
                e += UNROLL
            while e < end:
                w0 = w[e]
                x0 = src[idx[e]]
                for t in range(m):
                    acc[t] += w0 * x0[t]
                e += 1
        for t in range(nb):
            for q in range(r1 - r0):
                out[b0 + t, r0 + q] = blk[q, t]


@njit(fastmath=FASTMATH, cache=True)
def _gather_rows(lo, hi, tiles, w, ptr, idx, bias, has_bias, out):
    width = tiles.shape[2]
    batch = out.shape[0]
    for k in range(tiles.shape[0]):
        b0 = k * width
        nb = min(width, batch - b0)
        if width == TILE:  # a constant trip count: unrolled, accumulator in registers
            _gather_tile(lo, hi, tiles[k], w, ptr, idx, bias, has_bias, out, b0, nb, TILE)
        elif width == HALF_TILE:
            _gather_tile(lo, hi, tiles[k], w, ptr, idx, bias, has_bias, out, b0, nb, HALF_TILE)
        else:
            _gather_tile(lo, hi, tiles[k], w, ptr, idx, bias, has_bias, out, b0, nb, width)


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _sddmm_tile(lo, hi, xs, gs, indptr, indices, gv, first, m):
    """``gv[e] (+)= sum over t < m of xs[i, t] * gs[j, t]`` for the edges of rows ``[lo, hi)``:
    one tile's share of the weight gradient, added to the earlier tiles' (set by the first)."""
    for i in range(lo, hi):
        x = xs[i]
        e = indptr[i]
        end = indptr[i + 1]
        while e + UNROLL <= end:  # four dot products share each load of x
            g0 = gs[indices[e]]
            g1 = gs[indices[e + 1]]
            g2 = gs[indices[e + 2]]
            g3 = gs[indices[e + 3]]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            for t in range(m):
                xb = x[t]
                s0 += xb * g0[t]
                s1 += xb * g1[t]
                s2 += xb * g2[t]
                s3 += xb * g3[t]
            if first:
                gv[e] = s0
                gv[e + 1] = s1
                gv[e + 2] = s2
                gv[e + 3] = s3
            else:
                gv[e] += s0
                gv[e + 1] += s1
                gv[e + 2] += s2
                gv[e + 3] += s3
            e += UNROLL
        while e < end:
            g0 = gs[indices[e]]
            s0 = np.float32(0.0)
            for t in range(m):
                s0 += x[t] * g0[t]
            if first:
                gv[e] = s0
            else:
                gv[e] += s0
            e += 1


@njit(fastmath=FASTMATH, cache=True)
def _sddmm_rows(lo, hi, xtiles, gtiles, indptr, indices, gv):
    width = xtiles.shape[2]
    for k in range(xtiles.shape[0]):
        if width == TILE:
            _sddmm_tile(lo, hi, xtiles[k], gtiles[k], indptr, indices, gv, k == 0, TILE)
        elif width == HALF_TILE:
            _sddmm_tile(lo, hi, xtiles[k], gtiles[k], indptr, indices, gv, k == 0, HALF_TILE)
        else:
            _sddmm_tile(lo, hi, xtiles[k], gtiles[k], indptr, indices, gv, k == 0, width)


# -- entry points ---------------------------------------------------------------------------------
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def gather(tiles, w, ptr, idx, bias, has_bias, out, n_chunks):
    """Every row ``r`` of ``out.T``: ``bias[r] + sum_e w[e] * tiles[:, idx[e], :]`` over the
    edges ``ptr[r]:ptr[r+1]``, rows split into ``n_chunks`` ranges on the thread pool.

    Forward: ``tiles`` of ``x``, CSC (``col_ptr``, ``col_rows``, :func:`csc_values`), ``out`` = y.
    Input gradient: ``tiles`` of ``grad_y``, CSR (``indptr``, ``indices``, ``values``), ``out`` = grad_x.
    """
    n = ptr.size - 1
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n)
        _gather_rows(lo, hi, tiles, w, ptr, idx, bias, has_bias, out)


@njit(fastmath=FASTMATH, cache=True)
def gather_serial(tiles, w, ptr, idx, bias, has_bias, out):
    """:func:`gather` on the calling thread."""
    _gather_rows(0, ptr.size - 1, tiles, w, ptr, idx, bias, has_bias, out)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def sddmm(xtiles, gtiles, indptr, indices, gv, n_chunks):
    """The weight gradient at the connections, ``gv[e] = sum_b x[b, i] * grad_y[b, j]`` for every
    edge ``e = (i, j)`` (CSR order), inputs split into ``n_chunks`` ranges on the thread pool."""
    n = indptr.size - 1
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n)
        _sddmm_rows(lo, hi, xtiles, gtiles, indptr, indices, gv)


@njit(fastmath=FASTMATH, cache=True)
def sddmm_serial(xtiles, gtiles, indptr, indices, gv):
    """:func:`sddmm` on the calling thread."""
    _sddmm_rows(0, indptr.size - 1, xtiles, gtiles, indptr, indices, gv)


@njit(fastmath=FASTMATH, cache=True)
def forward_vector(x, w, col_ptr, col_rows, bias, y):
    """One example: ``y[0] = bias + x[0] @ W`` output by output over the CSC columns (inference
    at batch 1; ``x`` and ``y`` one row each, as the layer's tensors are), ``w`` the weights in
    CSC order (:func:`csc_values`; the layer keeps that copy while its weights stay unchanged).

    Each output's dot product is summed in registers and stored once, in an order fixed when the
    kernel is compiled. The scatter form (input by input over the CSR rows, ``y[j] += x_i w``,
    no copy of the weights) stored into ``y`` in its inner loop, and its speed was a lottery of
    array addresses: on an AMD EPYC of family 23 one 1024x1024 layer at 15% ran at 1.7 or 4.2 ns
    per connection depending on where ``y`` lay (loads falsely taken to depend on those stores),
    where this form runs at 2.1 wherever the arrays lie.

    The indices are read as unsigned on purpose. numba lets a signed index count from the end
    (``x[-1]``), so every load through one carries a compare and an add, and that is most of
    this loop's work: unsigned, an AMD EPYC of family 25 runs it at 0.35 ns per connection
    instead of 1.2."""
    xr, yr = x[0], y[0]
    for j in range(yr.size):
        s = np.float32(0.0)
        for e in range(np.uint64(col_ptr[j]), np.uint64(col_ptr[j + 1])):
            s += xr[np.uint32(col_rows[e])] * w[e]
        yr[j] = bias[j] + s


@njit(fastmath=FASTMATH, cache=True)
def tile_sums(tiles):
    """The bias gradient from the tiles of ``grad_y``: each row summed over every example (the
    padding is zero), tile by tile in batch order."""
    n_tiles, n, width = tiles.shape
    out = np.zeros(n, np.float32)
    for k in range(n_tiles):
        for j in range(n):
            row = tiles[k, j]
            s = np.float32(0.0)
            for t in range(width):
                s += row[t]
            out[j] += s
    return out


# -- one numba call per direction (batch-major tensors): the per-call overhead of small layers --
@njit(cache=True)
def forward_call(x, values, col_perm, col_ptr, col_rows, bias, n_chunks, keep_tiles, width):
    """``(y, tiles of x)`` for a batch-major ``x``: the tiles (``width`` examples each), the CSC
    weights and the kernel in one call (the tiles come back empty unless ``keep_tiles``: only the
    weight gradient reads them)."""
    tiles = tiles_from_rows(x, width)
    w = csc_values(values, col_perm)
    y = np.empty((x.shape[0], col_ptr.size - 1), np.float32)
    if n_chunks:
        gather(tiles, w, col_ptr, col_rows, bias, True, y, n_chunks)
    else:
        gather_serial(tiles, w, col_ptr, col_rows, bias, True, y)
    if not keep_tiles:
        tiles = np.empty((0, 0, 0), np.float32)
    return y, tiles


@njit(cache=True)
def backward_call(xtiles, gy, values, indptr, indices, want_x, want_values, want_bias, n_chunks, width):
    """``(grad_x, grad_values, grad_bias)`` for a batch-major ``gy`` in one call (tiles of
    ``width`` examples, as the forward's); unwanted ones are empty arrays."""
    batch = gy.shape[0]
    gtiles = tiles_from_rows(gy, width)
    gx = np.empty((batch if want_x else 0, indptr.size - 1 if want_x else 0), np.float32)
    if want_x:
        if n_chunks:
            gather(gtiles, values, indptr, indices, values, False, gx, n_chunks)
        else:
            gather_serial(gtiles, values, indptr, indices, values, False, gx)
    gv = np.empty(values.size if want_values else 0, np.float32)
    if want_values:
        if n_chunks:
            sddmm(xtiles, gtiles, indptr, indices, gv, n_chunks)
        else:
            sddmm_serial(xtiles, gtiles, indptr, indices, gv)
    gb = tile_sums(gtiles) if want_bias else np.empty(0, np.float32)
    return gx, gv, gb
