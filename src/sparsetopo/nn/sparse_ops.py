"""Index structures and the autograd Function of the truly sparse backend.

:class:`SparseIndex` turns a Topology into the arrays the kernels in
:mod:`sparsetopo.kernels.layer` read, once per layer. :class:`SparseLinearFunction` wraps those
kernels for torch autograd: forward, gradient to the inputs, and the gradient to the connected
weights only (an SDDMM), so a layer's cost and memory follow its number of connections.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from sparsetopo.errors import SparsetopoError, interrupt_in
from sparsetopo.kernels import batch_major
from sparsetopo.nn import sparse_calls
from sparsetopo.kernels.threads import PARALLEL_MIN_WORK, n_chunks
from sparsetopo.topology import Topology


@dataclass(frozen=True, eq=False)
class SparseIndex:
    """A layer's connections addressed by input (CSR) and by output (CSC), all int32/int64.

    ``col_perm[e]`` is the CSR position (the position in ``values``) of the ``e``-th edge in
    output-major order, so both orders share one weight array and nothing is copied per step.
    """

    n_in: int
    n_out: int
    indptr: np.ndarray    # int64, n_in + 1
    indices: np.ndarray   # int32, nnz: output of each edge, CSR order
    col_ptr: np.ndarray   # int64, n_out + 1
    col_rows: np.ndarray  # int32, nnz: input of each edge, CSC order
    col_perm: np.ndarray  # int64, nnz: CSR position of each edge, CSC order

    @classmethod
    def from_topology(cls, topology: Topology) -> "SparseIndex":
        indices = np.ascontiguousarray(topology.indices, dtype=np.int32)
        # a stable sort keeps the inputs of each output ascending: a fixed summation order
        perm = np.argsort(indices, kind="stable").astype(np.int64)
        col_ptr = np.zeros(topology.n_out + 1, dtype=np.int64)
        np.cumsum(np.bincount(indices, minlength=topology.n_out), out=col_ptr[1:])
        return cls(
            n_in=topology.n_in,
            n_out=topology.n_out,
            indptr=np.ascontiguousarray(topology.indptr, dtype=np.int64),
            indices=indices,
            col_ptr=col_ptr,
            col_rows=np.ascontiguousarray(topology.rows[perm], dtype=np.int32),
            col_perm=perm,
        )

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def nbytes(self) -> int:
        """Bytes of the index arrays: grows with nnz (plus n_in + n_out pointers)."""
        return sum(a.nbytes for a in (self.indptr, self.indices, self.col_ptr, self.col_rows, self.col_perm))


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy view of a CPU tensor (copied only when not already contiguous float32)."""
    t = t.detach()
    return (t if t.is_contiguous() else t.contiguous()).numpy()


def _feature_major(t: torch.Tensor) -> bool:
    """Whether a 2-D tensor is laid out feature-major (its transpose contiguous, itself not):
    the activations of a previous sparse layer, passed on without a layout copy."""
    if t.is_contiguous() or t.dim() != 2:
        return False
    rows, cols = t.shape
    return rows > 1 and cols > 1 and t.stride() == (1, rows)


def _chunks(index: SparseIndex, batch: int) -> int:
    """Ranges for the thread pool, or 0 to stay on the calling thread (the rule of
    :func:`sparsetopo.kernels.threads.use_threads`)."""
    n = n_chunks()
    return n if n > 1 and index.nnz * batch >= PARALLEL_MIN_WORK else 0


def check_sparse_inputs(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index: SparseIndex) -> None:
    """Refuse, before any kernel reads memory, what the kernels cannot compute: they index
    ``x`` by ``index`` without bounds checks, on CPU, in float32. Raises SparsetopoError naming
    the bad value and the fix. The common case is one expression (a layer at batch 1 costs
    microseconds); the messages are worked out only when it fails."""
    f32 = torch.float32
    if (x.dtype is f32 and x.is_cpu and x.dim() == 2 and x.shape[1] == index.n_in and x.layout is torch.strided
            and values.dtype is f32 and values.is_cpu and bias.dtype is f32 and values.shape == (index.nnz,)
            and bias.shape == (index.n_out,)):
        return
    for name, t in (("input", x), ("values", values), ("bias", bias)):
        if t.device.type != "cpu" or t.dtype is not f32:
            raise SparsetopoError(
                f"the sparse backend computes on CPU in float32, got a {t.dtype} {name} on {t.device}: "
                "use backend='masked' (or 'auto', which picks it on CUDA) for other devices or dtypes")
        if t.layout is not torch.strided:
            raise SparsetopoError(f"the sparse backend reads dense (strided) tensors, got a {t.layout} {name}: "
                                  "convert it with .to_dense()")
    if x.dim() != 2 or x.shape[1] != index.n_in:
        raise SparsetopoError(f"input of shape {tuple(x.shape)} does not fit a sparse layer with {index.n_in} "
                              f"inputs: expected (batch, {index.n_in})")
    raise SparsetopoError(f"values of shape {tuple(values.shape)} and bias of shape {tuple(bias.shape)} do not "
                          f"fit a sparse layer with {index.nnz} connections and {index.n_out} outputs")


def sparse_forward(x: np.ndarray, values: np.ndarray, bias: np.ndarray, index: SparseIndex) -> tuple[np.ndarray, np.ndarray]:
    """``x @ W + b`` for a batch ``x`` (batch x n_in); returns ``(y, x feature-major)``."""
    return batch_major.forward(np.ascontiguousarray(x, dtype=np.float32), values, bias, index.col_ptr,
                               index.col_rows, index.col_perm, _chunks(index, x.shape[0]), True)


def interrupts_stay_interrupts(method):
    """Ctrl-C (or SIGTERM made KeyboardInterrupt) that lands while a numba kernel returns its
    arrays surfaces as ``SystemError: CPUDispatcher(...) returned a result with an exception
    set``; give callers the KeyboardInterrupt it is, so that they stop cleanly."""
    @functools.wraps(method)
    def wrapper(*args):
        try:
            return method(*args)
        except SystemError as exc:
            interrupt = interrupt_in(exc)
            if interrupt is None:
                raise
            raise KeyboardInterrupt(*interrupt.args) from None
    return wrapper


def refuse_double_backward() -> None:
    """The kernels' gradients carry no graph: with ``create_graph=True`` (a gradient penalty,
    Hessian-vector products) a second derivative through them would be silently wrong, so it
    is refused. Autograd runs a backward with grad mode on exactly when the graph is wanted."""
    if torch.is_grad_enabled():
        raise SparsetopoError("the sparse backend has no second-order gradients (backward or autograd.grad "
                              "with create_graph=True): use backend='masked' for gradient penalties and "
                              "higher derivatives")


class SparseLinearFunction(torch.autograd.Function):
    """``y = x @ W + b`` with ``W`` given by its connected weights ``values`` (CSR order).

    Each direction is a few numba calls over batch tiles (:mod:`sparsetopo.nn.sparse_calls`,
    :mod:`sparsetopo.kernels.tiled`), on the thread pool when the layer does enough work and
    the pool has lately paid (:class:`~sparsetopo.kernels.threads.AdaptiveThreads`). An input
    that is already feature-major (its transpose contiguous) is read in place, and its gradient
    is returned in the same layout. A small layer at a small batch takes the untiled kernels of
    :mod:`sparsetopo.kernels.batch_major` instead (``SMALL_BATCH``, ``SMALL_OUTPUTS``). The inputs
    are checked first (:func:`check_sparse_inputs`): the kernels index them without bounds checks.
    """

    @staticmethod
    @interrupts_stay_interrupts
    def forward(ctx, x, values, bias, index: SparseIndex):
        check_sparse_inputs(x, values, bias, index)
        x_fm = _feature_major(x)
        ctx.index, ctx.x_feature_major = index, x_fm
        ctx.small = x.shape[0] <= SMALL_BATCH and index.n_out < SMALL_OUTPUTS
        if ctx.small:
            return _small_forward(ctx, x, values, bias, index)
        # the tiles of x are kept only when the weight gradient will read them
        y, ctx.xtiles = sparse_calls.forward(x, values, bias, index, x_fm, ctx.needs_input_grad[1])
        ctx.save_for_backward(values, x) if x_fm else ctx.save_for_backward(values)
        return y

    @staticmethod
    @interrupts_stay_interrupts
    def backward(ctx, grad_y):
        refuse_double_backward()
        index: SparseIndex = ctx.index
        want_x, want_values, want_bias = ctx.needs_input_grad[:3]
        if ctx.small:
            return _small_backward(ctx, grad_y, index, want_x, want_values, want_bias) + (None,)
        return sparse_calls.backward(ctx.xtiles, grad_y, ctx.saved_tensors[0], index, want_x, want_values, want_bias,
                                     ctx.x_feature_major, _feature_major(grad_y)) + (None,)


# A small layer at a small batch (at most SMALL_BATCH rows, fewer than SMALL_OUTPUTS outputs: the
# paper's 784-300-10 at batch 32) trains on the untiled kernels of
# :mod:`sparsetopo.kernels.batch_major`, one numba call per direction with the layout copies
# inside: cutting 32 rows into tiles costs more there than it saves, while from 512 outputs the
# two are even or the tiles win (benchmarks/bench_small_batch.py times both, interleaved).
SMALL_BATCH = 32
SMALL_OUTPUTS = 512


def _small_forward(ctx, x, values, bias, index: SparseIndex) -> torch.Tensor:
    v, b = values.detach().numpy(), bias.detach().numpy()
    chunks = _chunks(index, x.shape[0])
    if ctx.x_feature_major:
        xt = x.detach().t().numpy()  # a view: x is saved below, so autograd notices an in-place change
        y = batch_major.forward_fm(xt, v, b, index.col_ptr, index.col_rows, index.col_perm, chunks)
        ctx.save_for_backward(values, x)
    else:  # the feature-major copy is kept only when the weight gradient will need it
        y, xt = batch_major.forward(_numpy(x), v, b, index.col_ptr, index.col_rows, index.col_perm,
                                    chunks, ctx.needs_input_grad[1])
        ctx.save_for_backward(values)
    ctx.xt, ctx.chunks = xt, chunks
    return torch.from_numpy(y)


def _small_backward(ctx, grad_y, index: SparseIndex, want_x, want_values, want_bias):
    v = ctx.saved_tensors[0].detach().numpy()
    # grad_y in place when it is already feature-major, else its batch-major array
    kernel, g = ((batch_major.backward_fm, grad_y.t().numpy()) if _feature_major(grad_y)
                 else (batch_major.backward, _numpy(grad_y)))
    gx, gv, gb = kernel(ctx.xt, g, v, index.indptr, index.indices, want_x, want_values, want_bias, ctx.chunks,
                        ctx.x_feature_major)
    grad_x = None
    if want_x:
        grad_x = torch.from_numpy(gx).t() if ctx.x_feature_major else torch.from_numpy(gx)
    return (grad_x, torch.from_numpy(gv) if want_values else None,
            torch.from_numpy(gb) if want_bias else None)


_inference = interrupts_stay_interrupts(sparse_calls.inference)


def sparse_linear(x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor, index: SparseIndex) -> torch.Tensor:
    """Differentiable sparse ``x @ W + b`` (any leading batch shape flattened to 2-D).

    When no gradient can be wanted (under ``torch.no_grad()`` or ``torch.inference_mode()``, or
    nothing involved requires one), the forward-only kernel runs without the autograd
    Function: nothing is saved for a backward, and a single example takes one dot product per
    output (:func:`sparsetopo.nn.sparse_calls.inference`)."""
    if x.dim() != 2:
        lead = x.shape[:-1]
        return sparse_linear(x.reshape(-1, x.shape[-1]), values, bias, index).reshape(*lead, index.n_out)
    if not (torch.is_grad_enabled() and (x.requires_grad or values.requires_grad or bias.requires_grad)):
        check_sparse_inputs(x, values, bias, index)
        return _inference(x, values, bias, index)
    return SparseLinearFunction.apply(x, values, bias, index)
