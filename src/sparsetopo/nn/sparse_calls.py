"""The sparse layer's calls into the tiled kernels: forward, backward and inference on tensors.

:class:`~sparsetopo.nn.sparse_ops.SparseLinearFunction` (training) and
:func:`~sparsetopo.nn.sparse_ops.sparse_linear` (inference, when no gradient is wanted) call
these. Each direction is a few numba calls (:mod:`sparsetopo.kernels.tiled`): the input cut
into batch tiles, the kernel over every tile, the output stored straight into a batch-major
tensor. Whether a call uses numba's thread pool is decided per call site by
:class:`~sparsetopo.kernels.threads.AdaptiveThreads` (serial for small layers, and whichever
path has lately been faster for large ones, so a busy core does not stall the layer).

The forward walks the weights output by output, so it reads them in CSC order: each call
copies ``values`` into that order first (one pass over the connections, against one per tile of
the batch for the kernel). It is not cached across calls: the fused training engines update
the weights in place through numpy, which torch's version counter does not see.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from sparsetopo.kernels import tiled
from sparsetopo.kernels.threads import AdaptiveThreads

THREADS = AdaptiveThreads()


class _Clock:
    """Times a call for :data:`THREADS` when its choice matters (a large layer on several
    threads); otherwise costs nothing."""

    def __init__(self, site, work):
        self.site, self.chunks = site, THREADS.chunks(site, work)
        self.timed = THREADS.timed(work)

    def __enter__(self):
        self.tick = time.perf_counter() if self.timed else 0.0
        return self.chunks

    def __exit__(self, *exc):
        if self.timed:
            THREADS.record(self.site, self.chunks, time.perf_counter() - self.tick)


def _tiles(t: torch.Tensor, feature_major: bool) -> np.ndarray:
    """A batch-major tensor, or the transpose of a feature-major one, cut into batch tiles."""
    if feature_major:
        xt = t.detach().t().numpy()
        return tiled.tiles_from_columns(xt, tiled.tile_width(xt.shape[1]))
    return tiled.tiles_from_rows(_rows(t), tiled.tile_width(t.shape[0]))


def _rows(t: torch.Tensor) -> np.ndarray:
    a = t.detach()
    return (a if a.is_contiguous() else a.contiguous()).numpy()


def forward(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index, feature_major: bool,
            keep_tiles: bool = True):
    """``(y, x tiles)``: ``y = x @ W + b`` (batch-major) and the tiles of ``x`` the weight
    gradient reads later (empty unless ``keep_tiles``)."""
    batch = x.shape[0]
    v, b = values.detach().numpy(), bias.detach().numpy()
    with _Clock((id(index), "forward", batch), index.nnz * batch) as chunks:
        if not feature_major:  # the common case: one numba call
            y, xtiles = tiled.forward_call(_rows(x), v, index.col_perm, index.col_ptr, index.col_rows, b, chunks,
                                           keep_tiles)
            return torch.from_numpy(y), xtiles
        xtiles = _tiles(x, True)
        y = np.empty((batch, index.n_out), np.float32)
        w = tiled.csc_values(v, index.col_perm)
        if chunks:
            tiled.gather(xtiles, w, index.col_ptr, index.col_rows, b, True, y, chunks)
        else:
            tiled.gather_serial(xtiles, w, index.col_ptr, index.col_rows, b, True, y)
    return torch.from_numpy(y), xtiles


def backward(xtiles, grad_y: torch.Tensor, values: torch.Tensor, index, want_x: bool, want_values: bool,
             want_bias: bool, x_feature_major: bool, grad_feature_major: bool):
    """``(grad_x, grad_values, grad_bias)`` (None where not wanted): the input gradient in the
    input's layout, the weight gradient at the connections (CSR order), the bias gradient."""
    batch = grad_y.shape[0]
    v = values.detach().numpy()
    with _Clock((id(index), "backward", batch), index.nnz * batch) as chunks:
        if not (x_feature_major or grad_feature_major):  # the common case: one numba call
            xt = xtiles if want_values else np.empty((0, 0, 0), np.float32)
            gx, gv, gb = tiled.backward_call(xt, _rows(grad_y), v, index.indptr, index.indices, want_x,
                                             want_values, want_bias, chunks)
            return (torch.from_numpy(gx) if want_x else None, torch.from_numpy(gv) if want_values else None,
                    torch.from_numpy(gb) if want_bias else None)
        gtiles = _tiles(grad_y, grad_feature_major)
        grad_x = grad_values = grad_bias = None
        if want_x:
            gxt = np.empty((index.n_in, batch), np.float32)
            out = gxt.T if x_feature_major else np.empty((batch, index.n_in), np.float32)
            if chunks:
                tiled.gather(gtiles, v, index.indptr, index.indices, v, False, out, chunks)
            else:
                tiled.gather_serial(gtiles, v, index.indptr, index.indices, v, False, out)
            grad_x = torch.from_numpy(gxt).t() if x_feature_major else torch.from_numpy(out)
        if want_values:
            gv = np.empty(index.nnz, np.float32)
            if chunks:
                tiled.sddmm(xtiles, gtiles, index.indptr, index.indices, gv, chunks)
            else:
                tiled.sddmm_serial(xtiles, gtiles, index.indptr, index.indices, gv)
            grad_values = torch.from_numpy(gv)
        if want_bias:
            grad_bias = torch.from_numpy(tiled.tile_sums(gtiles))
    return grad_x, grad_values, grad_bias


def inference(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index) -> torch.Tensor:
    """``x @ W + b`` with no autograd bookkeeping (a 2-D ``x``; nothing saved for a backward)."""
    batch = x.shape[0]
    b = bias.detach().numpy()
    a = x.detach()
    if batch == 1:
        y = np.empty(index.n_out, np.float32)
        xv = a.reshape(-1)
        tiled.forward_vector((xv if xv.is_contiguous() else xv.contiguous()).numpy(), values.detach().numpy(),
                             index.indptr, index.indices, b, y)
        return torch.from_numpy(y).reshape(1, index.n_out)
    y, _ = forward(x, values, bias, index, False, keep_tiles=False)
    return y
