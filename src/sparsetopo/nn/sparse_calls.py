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


def _timed_gather(site, tiles, w, ptr, idx, bias, has_bias, out, work):
    chunks = THREADS.chunks(site, work)
    tick = time.perf_counter()
    if chunks:
        tiled.gather(tiles, w, ptr, idx, bias, has_bias, out, chunks)
    else:
        tiled.gather_serial(tiles, w, ptr, idx, bias, has_bias, out)
    THREADS.record(site, chunks, time.perf_counter() - tick)


def _tiles(t: torch.Tensor, feature_major: bool) -> np.ndarray:
    """A batch-major tensor, or the transpose of a feature-major one, cut into batch tiles."""
    if feature_major:
        xt = t.detach().t().numpy()
        return tiled.tiles_from_columns(xt, tiled.tile_width(xt.shape[1]))
    a = t.detach()
    a = (a if a.is_contiguous() else a.contiguous()).numpy()
    return tiled.tiles_from_rows(a, tiled.tile_width(a.shape[0]))


def forward(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index, feature_major: bool):
    """``(y, x tiles)``: ``y = x @ W + b`` (batch-major) and the tiles of ``x`` the weight
    gradient reads later."""
    batch = x.shape[0]
    xtiles = _tiles(x, feature_major)
    y = np.empty((batch, index.n_out), np.float32)
    _timed_gather((id(index), "forward", batch), xtiles, tiled.csc_values(values.detach().numpy(), index.col_perm), index.col_ptr,
                  index.col_rows, bias.detach().numpy(), True, y, index.nnz * batch)
    return torch.from_numpy(y), xtiles


def backward(xtiles, grad_y: torch.Tensor, values: torch.Tensor, index, want_x: bool, want_values: bool,
             want_bias: bool, x_feature_major: bool, grad_feature_major: bool):
    """``(grad_x, grad_values, grad_bias)`` (None where not wanted): the input gradient in the
    input's layout, the weight gradient at the connections (CSR order), the bias gradient."""
    batch = grad_y.shape[0]
    gtiles = _tiles(grad_y, grad_feature_major)
    work = index.nnz * batch
    grad_x = grad_values = grad_bias = None
    if want_x:
        v = values.detach().numpy()
        if x_feature_major:
            gxt = np.empty((index.n_in, batch), np.float32)
            _timed_gather((id(index), "grad_x", batch), gtiles, v, index.indptr, index.indices, v, False, gxt.T, work)
            grad_x = torch.from_numpy(gxt).t()
        else:
            gx = np.empty((batch, index.n_in), np.float32)
            _timed_gather((id(index), "grad_x", batch), gtiles, v, index.indptr, index.indices, v, False, gx, work)
            grad_x = torch.from_numpy(gx)
    if want_values:
        gv = np.empty(index.nnz, np.float32)
        site = (id(index), "grad_values", batch)
        chunks = THREADS.chunks(site, work)
        tick = time.perf_counter()
        if chunks:
            tiled.sddmm(xtiles, gtiles, index.indptr, index.indices, gv, chunks)
        else:
            tiled.sddmm_serial(xtiles, gtiles, index.indptr, index.indices, gv)
        THREADS.record(site, chunks, time.perf_counter() - tick)
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
    w = tiled.csc_values(values.detach().numpy(), index.col_perm)
    y = np.empty((batch, index.n_out), np.float32)
    xtiles = _tiles(a, False)
    _timed_gather((id(index), "forward", batch), xtiles, w, index.col_ptr, index.col_rows, b, True, y,
                  index.nnz * batch)
    return torch.from_numpy(y)
