"""Layer maths of the truly sparse backend (forward, backward, SDDMM): work and memory follow the
number of connections.

Why numba: it needs no compiler toolchain at install time (llvmlite ships as wheels on PyPI),
caches compiled kernels on disk (``cache=True``) so only the first process pays for
compilation, and parallelises over cores with ``prange``. ``torch.compile`` lowers to dense
kernels and would not give us a gather/scatter over a fixed edge list. Kernels compile with
the ``FASTMATH`` flags below (reassociation and FMA contraction only): the summation order is
fixed when a kernel is compiled, so a build gives the same bits run after run and whatever the
thread count; it may differ from masked-dense in the last bits, as any other order would.

Layout: activations are *feature-major* (``a[feature, example]``, C-contiguous float32), so
that for one connection ``(i, j)`` the batch of products ``w * x[i, :]`` is a contiguous,
vectorisable loop. A layer's connections are addressed two ways, both built once from the
Topology (the arrays of :class:`sparsetopo.nn.sparse_index.SparseIndex`):

* CSR by input: ``indptr``, ``indices``; the weights ``values`` are stored in this order.
* CSC by output: ``col_ptr``, ``col_rows`` and ``col_perm`` (the CSR position of each edge),
  so that each output's sum is owned by one thread (no atomics, no scratch per thread).

Each kernel is written once for a range of rows (``_*_rows``). Its parallel entry point splits
the rows into ``n_chunks`` contiguous ranges run with ``prange`` (a chunk allocates its scratch
once, not per row); its ``*_serial`` entry point runs them on the calling thread, for layers
too small to repay waking the thread pool.
"""

from __future__ import annotations

import numpy as np
from numba import carray, njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from sparsetopo.kernels.expf import sigmoid_into
from sparsetopo.kernels.options import BLOCK, FASTMATH, UNROLL
from sparsetopo.kernels.sgd import apply_update



@intrinsic
def _stack_f32(typingctx, n_ty):
    """A pointer to ``n`` float32 on the stack (``n`` a compile-time constant).

    Why not ``np.empty``: LLVM cannot tell that a heap array from numba's allocator does not
    alias the kernel's input rows, so it guards every vectorised update with runtime overlap
    checks; a stack slot it can prove private, and it costs no allocation per call.
    """
    if not isinstance(n_ty, types.IntegerLiteral):
        return None
    n = n_ty.literal_value

    def codegen(context, builder, signature, args):
        ptr = cgutils.alloca_once(builder, context.get_value_type(types.float32), size=n)
        ptr.align = 64
        return ptr

    return types.CPointer(types.float32)(n_ty), codegen


# The last argument ``wide`` of the kernels the training engines call: True (the default) when a
# call may be wider than BLOCK columns (such a batch runs block by block on strided views, its
# weight gradient's dot products over the whole batch); None when no call is, and numba then
# compiles no code for wider batches at all (it drops the code after a ``wide is None`` branch,
# which raises, for a ``wide`` typed None). The engines pass None whenever their batch fits
# (sparsetopo.nn.plan.wide_argument), which saves about a third of the layer kernels' compile time.


@njit(cache=True, inline="always")
def _bounds(chunk, n_chunks, n):
    return chunk * n // n_chunks, (chunk + 1) * n // n_chunks


# -- row kernels: one range of rows, serial; the entry points below run them in chunks ------------
# The forward and input-gradient kernels share one shape: for one row and a block of at most
# BLOCK batch columns, a private accumulator takes UNROLL connections per pass (a fixed tree of
# adds), so one load and one store of the accumulator serve four connections and the loop over
# the block's columns is contiguous and vectorised. A batch wider than BLOCK runs block by block
# on column views (a second, strided specialisation: slower, but the paper's batch is 32). The
# two accumulating kernels inline into their callers with the block's width, a constant for a
# full block of BLOCK columns: LLVM then unrolls the column loop and keeps the accumulator in
# registers (about a third faster). Each column's sum is the same sequence of operations
# either way, so the bits do not change; the dot products of the weight gradient, whose
# vectorised order follows the loop's shape, are left as they were for that reason.
@njit(fastmath=FASTMATH, cache=True, inline="always")
def _forward_block(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, m):
    # m = yt.shape[1] <= BLOCK, passed in so that a full block inlines with a constant width
    acc = carray(_stack_f32(BLOCK), (BLOCK,))
    for j in range(lo, hi):
        bj = bias[j]
        for t in range(m):
            acc[t] = bj
        e = col_ptr[j]
        end = col_ptr[j + 1]
        while e + UNROLL <= end:
            w0 = values[col_perm[e]]
            w1 = values[col_perm[e + 1]]
            w2 = values[col_perm[e + 2]]
            w3 = values[col_perm[e + 3]]
            x0 = xt[col_rows[e]]
            x1 = xt[col_rows[e + 1]]
            x2 = xt[col_rows[e + 2]]
            x3 = xt[col_rows[e + 3]]
            for t in range(m):
                acc[t] += (w0 * x0[t] + w1 * x1[t]) + (w2 * x2[t] + w3 * x3[t])
            e += UNROLL
        while e < end:
            w0 = values[col_perm[e]]
            x0 = xt[col_rows[e]]
            for t in range(m):
                acc[t] += w0 * x0[t]
            e += 1
        out = yt[j]
        if sigmoid:
            sigmoid_into(acc, out, m)
        else:
            for t in range(m):
                out[t] = acc[t]


@njit(fastmath=FASTMATH, cache=True)
def _forward_rows(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, wide):
    nb = yt.shape[1]
    if nb == BLOCK:   # the paper's batch: a constant trip count LLVM unrolls into registers
        _forward_block(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, BLOCK)
        return
    if nb < BLOCK:
        _forward_block(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, nb)
        return
    if wide is None:  # the caller said no call is wider (see the note above _bounds)
        raise ValueError("a batch wider than BLOCK columns with wide=None")
    for b0 in range(0, nb, BLOCK):
        _forward_block(lo, hi, xt[:, b0:b0 + BLOCK], values, bias, col_ptr, col_rows, col_perm,
                       yt[:, b0:b0 + BLOCK], sigmoid, min(BLOCK, nb - b0))


@njit(fastmath=FASTMATH, cache=True, inline="always")
def _backward_input_block(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad, m):
    # m = gxt.shape[1] <= BLOCK, passed in so that a full block inlines with a constant width
    acc = carray(_stack_f32(BLOCK), (BLOCK,))
    for i in range(lo, hi):
        for t in range(m):
            acc[t] = 0.0
        e = indptr[i]
        end = indptr[i + 1]
        while e + UNROLL <= end:
            w0 = values[e]
            w1 = values[e + 1]
            w2 = values[e + 2]
            w3 = values[e + 3]
            g0 = gyt[indices[e]]
            g1 = gyt[indices[e + 1]]
            g2 = gyt[indices[e + 2]]
            g3 = gyt[indices[e + 3]]
            for t in range(m):
                acc[t] += (w0 * g0[t] + w1 * g1[t]) + (w2 * g2[t] + w3 * g3[t])
            e += UNROLL
        while e < end:
            w0 = values[e]
            g0 = gyt[indices[e]]
            for t in range(m):
                acc[t] += w0 * g0[t]
            e += 1
        out = gxt[i]
        if sigmoid_grad:
            a = act[i]
            for t in range(m):
                out[t] = acc[t] * (a[t] * (np.float32(1.0) - a[t]))
        else:
            for t in range(m):
                out[t] = acc[t]


@njit(fastmath=FASTMATH, cache=True)
def _backward_input_rows(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad):
    nb = gxt.shape[1]
    if nb == BLOCK:   # see _forward_rows
        _backward_input_block(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad, BLOCK)
        return
    if nb < BLOCK:
        _backward_input_block(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad, nb)
        return
    for b0 in range(0, nb, BLOCK):
        _backward_input_block(lo, hi, gyt[:, b0:b0 + BLOCK], values, indptr, indices, gxt[:, b0:b0 + BLOCK],
                              act[:, b0:b0 + BLOCK], sigmoid_grad, min(BLOCK, nb - b0))


@njit(fastmath=FASTMATH, cache=True)
def _backward_values_rows(lo, hi, xt, gyt, indptr, indices, gv, values, buf, lr, momentum, nesterov, update):
    # UNROLL dot products at once against the same input row: x is loaded once per column for
    # four connections, and "reassoc" lets each dot run as SIMD partial sums over the batch.
    nb = xt.shape[1]
    for i in range(lo, hi):
        x = xt[i]
        e = indptr[i]
        end = indptr[i + 1]
        while e + UNROLL <= end:
            g0 = gyt[indices[e]]
            g1 = gyt[indices[e + 1]]
            g2 = gyt[indices[e + 2]]
            g3 = gyt[indices[e + 3]]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            for b in range(nb):
                xb = x[b]
                s0 += xb * g0[b]
                s1 += xb * g1[b]
                s2 += xb * g2[b]
                s3 += xb * g3[b]
            apply_update(e, s0, gv, values, buf, lr, momentum, nesterov, update)
            apply_update(e + 1, s1, gv, values, buf, lr, momentum, nesterov, update)
            apply_update(e + 2, s2, gv, values, buf, lr, momentum, nesterov, update)
            apply_update(e + 3, s3, gv, values, buf, lr, momentum, nesterov, update)
            e += UNROLL
        while e < end:
            g0 = gyt[indices[e]]
            s0 = np.float32(0.0)
            for b in range(nb):
                s0 += x[b] * g0[b]
            apply_update(e, s0, gv, values, buf, lr, momentum, nesterov, update)
            e += 1


@njit(fastmath=FASTMATH, cache=True)
def _backward_both_block(lo, hi, xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                         gv, buf, lr, momentum, nesterov, update):
    """Input gradient and weight gradient in one pass over the CSR rows (batch <= BLOCK).

    Both walk the same connections of input ``i`` and read the same rows ``gyt[j]``, so doing
    them together loads each gradient row and each index once instead of twice. The weight of a
    connection is read for the input gradient before the optional update replaces it, as
    autograd's order (gradients first, then the step) requires; every connection belongs to
    exactly one row, so no other row ever sees the updated value within the call.
    """
    m = gxt.shape[1]
    acc = carray(_stack_f32(BLOCK), (BLOCK,))
    for i in range(lo, hi):
        x = xt[i]
        for t in range(m):
            acc[t] = 0.0
        e = indptr[i]
        end = indptr[i + 1]
        while e + UNROLL <= end:
            w0 = values[e]
            w1 = values[e + 1]
            w2 = values[e + 2]
            w3 = values[e + 3]
            g0 = gyt[indices[e]]
            g1 = gyt[indices[e + 1]]
            g2 = gyt[indices[e + 2]]
            g3 = gyt[indices[e + 3]]
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            s2 = np.float32(0.0)
            s3 = np.float32(0.0)
            for t in range(m):
                xb = x[t]
                acc[t] += (w0 * g0[t] + w1 * g1[t]) + (w2 * g2[t] + w3 * g3[t])
                s0 += xb * g0[t]
                s1 += xb * g1[t]
                s2 += xb * g2[t]
                s3 += xb * g3[t]
            apply_update(e, s0, gv, values, buf, lr, momentum, nesterov, update)
            apply_update(e + 1, s1, gv, values, buf, lr, momentum, nesterov, update)
            apply_update(e + 2, s2, gv, values, buf, lr, momentum, nesterov, update)
            apply_update(e + 3, s3, gv, values, buf, lr, momentum, nesterov, update)
            e += UNROLL
        while e < end:
            w0 = values[e]
            g0 = gyt[indices[e]]
            s0 = np.float32(0.0)
            for t in range(m):
                acc[t] += w0 * g0[t]
                s0 += x[t] * g0[t]
            apply_update(e, s0, gv, values, buf, lr, momentum, nesterov, update)
            e += 1
        out = gxt[i]
        if sigmoid_grad:
            a = act[i]
            for t in range(m):
                out[t] = acc[t] * (a[t] * (np.float32(1.0) - a[t]))
        else:
            for t in range(m):
                out[t] = acc[t]


@njit(fastmath=FASTMATH, cache=True)
def _backward_both_rows(lo, hi, xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                        gv, buf, lr, momentum, nesterov, update, wide):
    if gxt.shape[1] <= BLOCK:
        _backward_both_block(lo, hi, xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                             gv, buf, lr, momentum, nesterov, update)
        return
    if wide is None:  # the caller said no call is wider (see the note above _bounds)
        raise ValueError("a batch wider than BLOCK columns with wide=None")
    # wider batches: the dot products span all blocks, so run the two kernels one after the
    # other (the input gradient first: it needs the weights before the update)
    _backward_input_rows(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad)
    _backward_values_rows(lo, hi, xt, gyt, indptr, indices, gv, values, buf, lr, momentum, nesterov, update)


# -- entry points -----------------------------------------------------------------------------
@njit(parallel=True, fastmath=FASTMATH, cache=True)
def forward(xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, n_chunks, wide=True):
    """``yt[j, :] = act(bias[j] + sum over edges (i, j) of values[e] * xt[i, :])``.

    Chunked over outputs (CSC order), so each output's sum belongs to one thread. ``sigmoid``
    applies the logistic function in place (the paper's activation), saving a pass in training.
    ``wide``: see the note above ``_bounds``.
    """
    n_out = yt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_out)
        _forward_rows(lo, hi, xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, wide)


@njit(fastmath=FASTMATH, cache=True)
def forward_serial(xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, wide=True):
    """:func:`forward` on the calling thread: for layers too small to repay a parallel launch."""
    _forward_rows(0, yt.shape[0], xt, values, bias, col_ptr, col_rows, col_perm, yt, sigmoid, wide)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def backward_input(gyt, values, indptr, indices, gxt, act, sigmoid_grad, n_chunks):
    """``gxt[i, :] = sum over edges (i, j) of values[e] * gyt[j, :]``, the gradient to the inputs.

    With ``sigmoid_grad`` the result is multiplied by ``act * (1 - act)``, where ``act`` holds
    the inputs (the previous layer's sigmoid outputs): the gradient to that layer's
    pre-activations, fused so that the training step makes one pass.
    """
    n_in = gxt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_input_rows(lo, hi, gyt, values, indptr, indices, gxt, act, sigmoid_grad)


@njit(fastmath=FASTMATH, cache=True)
def backward_input_serial(gyt, values, indptr, indices, gxt, act, sigmoid_grad):
    """:func:`backward_input` on the calling thread."""
    _backward_input_rows(0, gxt.shape[0], gyt, values, indptr, indices, gxt, act, sigmoid_grad)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def backward_values(xt, gyt, indptr, indices, gv, n_chunks):
    """SDDMM: ``gv[e] = sum_b xt[i, b] * gyt[j, b]`` for every edge ``e = (i, j)``, nothing else.

    This is the weight gradient sampled at the connections: never an ``n_in x n_out`` matrix.
    """
    n_in = xt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_values_rows(lo, hi, xt, gyt, indptr, indices, gv, gv, gv,
                              np.float32(0.0), np.float32(0.0), False, False)


@njit(fastmath=FASTMATH, cache=True)
def backward_values_serial(xt, gyt, indptr, indices, gv):
    """:func:`backward_values` on the calling thread."""
    _backward_values_rows(0, xt.shape[0], xt, gyt, indptr, indices, gv, gv, gv,
                          np.float32(0.0), np.float32(0.0), False, False)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def backward_values_sgd(xt, gyt, indptr, indices, values, buf, lr, momentum, nesterov, n_chunks):
    """The SDDMM gradient of every connection, applied at once by (Nesterov) momentum SGD.

    Exactly torch.optim.SGD's rule with dampening 0 and no weight decay (its first step, which
    sets ``buf = g``, is this rule with ``buf`` starting at zero):
    ``buf = momentum * buf + g``; ``w -= lr * (g + momentum * buf)`` (Nesterov) or ``lr * buf``.
    """
    n_in = xt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_values_rows(lo, hi, xt, gyt, indptr, indices, values, values, buf, lr, momentum, nesterov, True)


@njit(fastmath=FASTMATH, cache=True)
def backward_values_sgd_serial(xt, gyt, indptr, indices, values, buf, lr, momentum, nesterov):
    """:func:`backward_values_sgd` on the calling thread."""
    _backward_values_rows(0, xt.shape[0], xt, gyt, indptr, indices, values, values, buf, lr, momentum, nesterov, True)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def backward(xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad, gv, n_chunks):
    """:func:`backward_input` and :func:`backward_values` in one pass over the connections:
    ``gxt`` (times ``act * (1 - act)`` with ``sigmoid_grad``) and ``gv``, same numbers as the
    two kernels give up to the order of the sums, for about a third less time."""
    n_in = gxt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_both_rows(lo, hi, xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                            gv, gv, np.float32(0.0), np.float32(0.0), False, False, True)


@njit(fastmath=FASTMATH, cache=True)
def backward_serial(xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad, gv):
    """:func:`backward` on the calling thread."""
    _backward_both_rows(0, gxt.shape[0], xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                        gv, gv, np.float32(0.0), np.float32(0.0), False, False, True)


@njit(parallel=True, fastmath=FASTMATH, cache=True)
def backward_sgd(xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad, buf, lr, momentum, nesterov, n_chunks,
                 wide=True):
    """The input gradient (with the weights before the step) and the SGD step of the connected
    weights (as :func:`backward_values_sgd`), in one pass over the connections. ``wide``: see
    :func:`forward`."""
    n_in = gxt.shape[0]
    for c in prange(n_chunks):
        lo, hi = _bounds(c, n_chunks, n_in)
        _backward_both_rows(lo, hi, xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                            values, buf, lr, momentum, nesterov, True, wide)


@njit(fastmath=FASTMATH, cache=True)
def backward_sgd_serial(xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad, buf, lr, momentum, nesterov,
                        wide=True):
    """:func:`backward_sgd` on the calling thread."""
    _backward_both_rows(0, gxt.shape[0], xt, gyt, values, indptr, indices, gxt, act, sigmoid_grad,
                        values, buf, lr, momentum, nesterov, True, wide)
