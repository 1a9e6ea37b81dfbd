"""Numba entry points that train a whole population of sparse sigmoid MLPs in one compiled call.

Why an engine of its own: a digits-sized network (64-300-10, batch 8) does a few microseconds of
arithmetic per SGD step, but the autograd loop of :func:`sparsetopo.train.train` spends a few
hundred microseconds per step in the interpreter, autograd and the optimizer. Here every
member's epoch runs in compiled code and the members (independent by construction: they share
no numbers) are spread over the cores with ``prange``: no interpreter work per step, and
parallelism without any synchronisation.

No arithmetic lives here. Each member's batches are
:func:`sparsetopo.engines.step.train_batches`, the body of the sequential fused epoch, with the
serial SIMD kernels of :mod:`sparsetopo.kernels.layer` (a member is far too small to repay the
thread pool, and the cores are already busy with other members); evaluation is
:func:`sparsetopo.engines.predict.count_correct` on the same kernels. So a member computes what
``train()`` on the sparse backend computes, in the same summation order: the two cannot drift
apart.

Layout: ``layers`` holds every member, one :class:`~sparsetopo.engines.layout.EngineLayer` per
layer (:mod:`sparsetopo.engines.layout`). A member layer that is cheaper dense
(:func:`sparsetopo.nn.plan.member_prefers_dense`) has ``dense[l, p]`` set and runs as BLAS
GEMMs.

Reproducibility: the kernels' summation order is fixed at compile time (``FASTMATH`` in
:mod:`sparsetopo.kernels.options`) and each member runs on one thread from start to end, so results
are the same bits run to run and whatever the number of threads.
"""

from __future__ import annotations

from numba import njit, prange
from numba.extending import overload

from sparsetopo.engines.layout import EngineLayer
from sparsetopo.engines.predict import count_correct
from sparsetopo.engines.step import train_batches
from sparsetopo.kernels.options import FASTMATH


def by_field(layers):
    """``layers`` (a tuple of :class:`~sparsetopo.engines.layout.EngineLayer`) regrouped as one
    tuple per field, each indexed by layer. Compiled code uses :func:`_by_field`'s version."""
    return tuple(tuple(getattr(layer, name) for layer in layers) for name in EngineLayer._fields)


def by_layer(fields):
    """The inverse of :func:`by_field`: a tuple of ``EngineLayer`` again. Compiled code uses
    :func:`_by_layer`'s version."""
    return tuple(EngineLayer(*values) for values in zip(*fields))


# Why the regrouping: numba hands the variables a prange body reads to its worker function one
# tuple level deep. A tuple of per-field tuples of arrays passes; a tuple of EngineLayer (a
# tuple of tuples) does not. So the parallel loops below take the fields, and each member's
# body packs them back into the layers train_batches reads: the public entry points keep one
# packed structure per layer, and no array is copied (the tuples hold the same arrays).
@overload(by_field)
def _by_field(layers):
    n = len(layers)
    per_field = ", ".join("(" + "".join(f"layers[{l}].{name}, " for l in range(n)) + ")" for name in EngineLayer._fields)
    return _compiled(f"def impl(layers):\n    return ({per_field},)\n")


@overload(by_layer)
def _by_layer(fields):
    n = len(fields[0])
    layers = ", ".join("EngineLayer(" + ", ".join(f"fields[{f}][{l}]" for f in range(len(EngineLayer._fields))) + ")"
                       for l in range(n))
    return _compiled(f"def impl(fields):\n    return ({layers},)\n")


def _compiled(source: str):
    namespace = {"EngineLayer": EngineLayer}
    exec(source, namespace)
    return namespace["impl"]


@njit(fastmath=FASTMATH, cache=True)
def population_batches(x, targets, orders, members, first, stop, batch_size, sizes, layers, dense, uniforms, sgd,
                       wide, losses):
    """Batches ``first .. stop - 1`` of an epoch for every member row in ``members``, in parallel.

    ``orders[a]`` is member ``members[a]``'s permutation of the training rows, ``uniforms[a]``
    its dropout numbers from the start of batch ``first``, ``losses[a, step - first]`` receives
    its batch losses. ``uniforms`` is None when nothing drops, ``dense`` when no layer is held
    dense, ``wide`` when no batch is wider than ``BLOCK``: that code is then not compiled
    (:func:`~sparsetopo.engines.step.train_batches`, which also says what the other arguments
    hold). Members touch disjoint slices only, so the ``prange`` needs no synchronisation; each
    runs on its thread alone (``parallel`` None: no nested thread pool).
    """
    _members_batches(x, targets, orders, members, first, stop, batch_size, sizes, by_field(layers), dense, uniforms,
                     sgd, wide, losses)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _members_batches(x, targets, orders, members, first, stop, batch_size, sizes, fields, dense, uniforms, sgd,
                     wide, losses):
    """:func:`population_batches` on the layers regrouped by field (see :func:`by_field`)."""
    (values, value_bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm, offsets, dense_values,
     dense_masks, dense_bufs, dense_offsets, rate, scale) = fields
    for a in prange(members.shape[0]):
        layers = by_layer((values, value_bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                           offsets, dense_values, dense_masks, dense_bufs, dense_offsets, rate, scale))
        if uniforms is None:
            train_batches(x, targets, orders[a], first, stop, batch_size, sizes, layers, members[a], dense, None,
                          sgd, None, 1, wide, losses[a])
        else:
            train_batches(x, targets, orders[a], first, stop, batch_size, sizes, layers, members[a], dense,
                          uniforms[a], sgd, None, 1, wide, losses[a])


@njit(fastmath=FASTMATH, cache=True)
def population_correct(x, y, members, sizes, layers, dense, correct):
    """``correct[a]``: test examples member ``members[a]`` classifies right (no dropout), by
    :func:`sparsetopo.engines.predict.count_correct`, the sequential fused engine's evaluation."""
    _members_correct(x, y, members, sizes, by_field(layers), dense, correct)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def _members_correct(x, y, members, sizes, fields, dense, correct):
    """:func:`population_correct` on the layers regrouped by field (see :func:`by_field`)."""
    (values, value_bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm, offsets, dense_values,
     dense_masks, dense_bufs, dense_offsets, rate, scale) = fields
    for a in prange(members.shape[0]):
        layers = by_layer((values, value_bufs, biases, bias_bufs, indptr, indices, col_ptr, col_rows, col_perm,
                           offsets, dense_values, dense_masks, dense_bufs, dense_offsets, rate, scale))
        correct[a] = count_correct(x, y, sizes, layers, members[a], dense)
