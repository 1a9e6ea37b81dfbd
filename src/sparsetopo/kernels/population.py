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
thread pool, and the cores are already busy with other members); evaluation is
:func:`sparsetopo.kernels.predict.count_correct` on the same kernels. So a member computes what ``train()`` on the
sparse backend computes, in the same summation order: the two cannot drift apart.

Layout (see :func:`sparsetopo.kernels.step.train_batches`): every per-layer argument is a tuple
indexed by layer; within a layer the members' connected weights are concatenated (member
``p``'s slice is ``offsets[l, p]:offsets[l, p + 1]``, in its topology's CSR order) and its bias
and CSR/CSC pointer rows are ``biases[l][p]``, ``indptr[l][p]`` / ``col_ptr[l][p]``. Members of
one population share layer sizes but not connection counts, so one flat array per layer with
offsets holds them all without padding. A member layer that is cheaper dense
(:func:`sparsetopo.nn.plan.member_prefers_dense`) is held in the ``dense_*`` arrays instead
(``dense[l, p]``; see :func:`~sparsetopo.kernels.step.train_batches`) and runs as BLAS GEMMs.

Reproducibility: the kernels' summation order is fixed at compile time (``FASTMATH`` in
:mod:`sparsetopo.kernels.options`) and each member runs on one thread from start to end, so results
are the same bits run to run and whatever the number of threads.
"""

from __future__ import annotations

from numba import njit, prange

from sparsetopo.kernels.options import FASTMATH
from sparsetopo.kernels.predict import count_correct
from sparsetopo.kernels.step import train_batches


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def population_batches(x, targets, orders, members, first, stop, batch_size, sizes, rates, scales, uniforms,
                       values, bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                       offsets, dense, dense_values, dense_masks, dense_bufs, dense_offsets,
                       lr, momentum, nesterov, wide, losses):
    """Batches ``first .. stop - 1`` of an epoch for every member row in ``members``, in parallel.

    ``orders[a]`` is member ``members[a]``'s permutation of the training rows, ``uniforms[a]``
    its dropout numbers from the start of batch ``first``, ``losses[a, step - first]`` receives
    its batch losses. ``rates`` (with ``scales`` and ``uniforms``) is None when nothing drops,
    ``dense_values`` (with ``dense_masks`` and ``dense_bufs``) when no layer is held dense,
    ``wide`` when no batch is wider than ``BLOCK``: that code is then not compiled
    (:func:`~sparsetopo.kernels.step.train_batches`).
    Members touch disjoint slices only, so the ``prange`` needs no synchronisation; each runs
    on its thread alone (``parallel`` None: no nested thread pool).
    """
    for a in prange(members.shape[0]):
        if rates is None:
            train_batches(x, targets, orders[a], first, stop, batch_size, sizes, None, None, None,
                          values, biases, bufs, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                          offsets, members[a], dense, dense_values, dense_masks, dense_bufs, dense_offsets,
                          None, lr, momentum, nesterov, 1, wide, losses[a])
        else:
            train_batches(x, targets, orders[a], first, stop, batch_size, sizes, rates, scales, uniforms[a],
                          values, biases, bufs, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                          offsets, members[a], dense, dense_values, dense_masks, dense_bufs, dense_offsets,
                          None, lr, momentum, nesterov, 1, wide, losses[a])


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def population_correct(x, y, members, sizes, values, biases, col_ptr, col_rows, col_perm, offsets,
                       dense, dense_values, dense_offsets, correct):
    """``correct[a]``: test examples member ``members[a]`` classifies right (no dropout), by
    :func:`sparsetopo.kernels.predict.count_correct`, the sequential fused engine's evaluation."""
    for a in prange(members.shape[0]):
        correct[a] = count_correct(x, y, sizes, values, biases, col_ptr, col_rows, col_perm, offsets, members[a],
                                   dense, dense_values, dense_offsets)
