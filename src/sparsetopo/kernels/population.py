"""Numba entry points that train a whole population of sparse sigmoid MLPs in one compiled call.

Why a kernel of its own: a digits-sized network (64-300-10, batch 8) does a few microseconds of
arithmetic per SGD step, but the autograd loop of :func:`sparsetopo.train.train` spends a few
hundred microseconds per step in the interpreter, autograd and the optimizer. Here every
member's epoch runs in compiled code and the members (independent by construction: they share
no numbers) are spread over the cores with ``prange``: no interpreter work per step, and
parallelism without any synchronisation.

No arithmetic lives here. Each member's batches are
:func:`sparsetopo.kernels.step.train_batches`, the body of the sequential fused epoch, with the
serial SIMD kernels of :mod:`sparsetopo.kernels.layer` (a member is far too small to repay the
thread pool, and the cores are already busy with other members); evaluation is their
:func:`~sparsetopo.kernels.layer.forward_serial`. So a member computes what ``train()`` on the
sparse backend computes, in the same summation order: the two cannot drift apart.

Layout (see :func:`sparsetopo.kernels.step.train_batches`): every per-layer argument is a tuple
indexed by layer; within a layer the members' connected weights are concatenated (member
``p``'s slice is ``offsets[l, p]:offsets[l, p + 1]``, in its topology's CSR order) and its bias
and CSR/CSC pointer rows are ``biases[l][p]``, ``indptr[l][p]`` / ``col_ptr[l][p]``. Members of
one population share layer sizes but not connection counts, so one flat array per layer with
offsets holds them all without padding. A member layer that is cheaper dense
(:func:`sparsetopo.kernels.options.prefers_dense`) is held in the ``dense_*`` arrays instead
(``dense[l, p]``; see :func:`~sparsetopo.kernels.step.train_batches`) and runs as BLAS GEMMs.

Reproducibility: the kernels' summation order is fixed at compile time (``FASTMATH`` in
:mod:`sparsetopo.kernels.options`) and each member runs on one thread from start to end, so results
are the same bits run to run and whatever the number of threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from sparsetopo.kernels.dense import dense_forward
from sparsetopo.kernels.layer import forward_serial
from sparsetopo.kernels.options import BLOCK, FASTMATH
from sparsetopo.kernels.step import train_batches


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def population_batches(x, targets, orders, members, first, stop, batch_size, sizes, rates, scales, uniforms,
                       values, bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                       offsets, dense, dense_values, dense_masks, dense_bufs, dense_offsets,
                       lr, momentum, nesterov, losses):
    """Batches ``first .. stop - 1`` of an epoch for every member row in ``members``, in parallel.

    ``orders[a]`` is member ``members[a]``'s permutation of the training rows, ``uniforms[a]``
    its dropout numbers from the start of batch ``first`` (a ``(len(members), 0)`` array when
    nothing drops), ``losses[a, step - first]`` receives its batch losses. Members touch
    disjoint slices only, so the ``prange`` needs no synchronisation.
    """
    serial = np.zeros(sizes.shape[0] - 1, dtype=np.bool_)   # no nested thread pool per member
    for a in prange(members.shape[0]):
        train_batches(x, targets, orders[a], first, stop, batch_size, sizes, rates, scales, uniforms[a],
                      values, biases, bufs, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                      offsets, members[a], dense, dense_values, dense_masks, dense_bufs, dense_offsets,
                      serial, lr, momentum, nesterov, 1, losses[a])


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def population_correct(x, y, members, sizes, values, biases, col_ptr, col_rows, col_perm, offsets,
                       dense, dense_values, dense_offsets, correct):
    """``correct[a]``: test examples member ``members[a]`` classifies right (no dropout).

    Examples go through in blocks of ``BLOCK`` (the width the forward kernel keeps in
    registers; a wider block would run as strided column views). The predicted class is the
    first largest output, as ``torch.argmax`` picks.
    """
    n_layers = sizes.shape[0] - 1
    n, n_features = x.shape
    for a in prange(members.shape[0]):
        p = members[a]
        at = np.zeros(n_layers + 2, dtype=np.int64)
        for l in range(n_layers + 1):
            at[l + 1] = at[l] + sizes[l] * BLOCK
        act = np.empty(at[n_layers + 1], dtype=np.float32)
        count = 0
        for start in range(0, n, BLOCK):
            nb = min(BLOCK, n - start)
            a0 = act[at[0]: at[0] + n_features * nb].reshape((n_features, nb))
            for t in range(nb):
                for f in range(n_features):
                    a0[f, t] = x[start + t, f]
            for l in range(n_layers):
                lo, hi = offsets[l, p], offsets[l, p + 1]
                a_in = act[at[l]: at[l] + sizes[l] * nb].reshape((sizes[l], nb))
                a_out = act[at[l + 1]: at[l + 1] + sizes[l + 1] * nb].reshape((sizes[l + 1], nb))
                if dense[l, p]:
                    w = dense_values[l][dense_offsets[l, p]: dense_offsets[l, p + 1]].reshape((sizes[l], sizes[l + 1]))
                    dense_forward(a_in, w, biases[l][p], a_out, True)
                else:
                    forward_serial(a_in, values[l][lo:hi], biases[l][p], col_ptr[l][p], col_rows[l][lo:hi],
                                   col_perm[l][lo:hi], a_out, True)
            out = act[at[n_layers]: at[n_layers] + sizes[n_layers] * nb].reshape((sizes[n_layers], nb))
            for t in range(nb):
                best = 0
                for j in range(1, sizes[n_layers]):
                    if out[j, t] > out[best, t]:
                        best = j
                if best == y[start + t]:
                    count += 1
        correct[a] = count
