"""The logistic sigmoid of a row in compiled code, with a float32 ``exp`` the loop can vectorise.

Why: the sigmoid's ``np.exp`` on float32 compiles to one call of the C library's ``expf`` per
element, which no loop vectorises. In a 784-300-10 training step at batch 32 that is 9600
calls, about as long as the whole forward pass of a 10%-dense first layer, and the same in a
sparse and in a fully connected network, so it blurs what the topology saves.

What: :func:`expf` evaluates ``exp(x)`` for a float32 ``x`` by the table method of Arm's
optimized-routines (the ``expf`` of glibc 2.28 and later, musl and LLVM's libc):
``x / ln 2 = (k + r) / 32`` with integer ``k`` and ``|r| <= 1/2``; ``exp(x) = 2^(k/32) 2^(r/32)``,
``2^(k/32)`` from a 32-entry table scaled by the exponent bits, ``2^(r/32)`` a cubic in ``r``,
all in float64, rounded once to float32. The reduction and the cubic use fused multiply-adds
in the order glibc's FMA build (the one it picks on x86-64 CPUs with FMA) computes them, so the
result is bit for bit glibc's ``expf`` for every one of the 2^32 float32 bit patterns
(``tests/test_kernels_expf.py`` checks them all), so the kernels compute the numbers they
computed with the C library's ``expf``. On another C library they give glibc's bits, not that
library's: the same numbers on every platform.

:func:`sigmoid_into` compiles with numpy's error model (a division by zero is IEEE, not a
raised ZeroDivisionError, whose check stops vectorisation; ``1 + exp(-x)`` is never 0 anyway)
and without fast-math flags (``reassoc`` would fold ``(z + shift) - shift`` to ``z``, which is
the rounding step).

References
----------
.. [1] S. Nagy, "expf, exp2f: new implementations", Arm optimized-routines (2017); the method
   and its float64 error bound of 1.69 * 2^-34 before rounding.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_N = 32  # table entries: 2^(i/32), i = 0..31


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (LLVM's ``llvm.fma.f64``): the contraction glibc's FMA build makes."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.DoubleType(), [ir.DoubleType()] * 3),
                                            "llvm.fma.f64")
        return builder.call(fn, args)
    return types.float64(types.float64, types.float64, types.float64), codegen


@intrinsic
def _bits(typingctx, x):
    """The IEEE bits of a float64 as a uint64."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))
    return types.uint64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, u):
    """The float64 whose IEEE bits are the uint64 ``u``."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())
    return types.float64(types.uint64), codegen


def _table() -> np.ndarray:
    """``bits(2^(i/32)) - i * 2^47``: adding ``k * 2^47`` back (``k``'s low 5 bits select the
    entry, the rest land in the exponent field) gives the bits of ``2^(k/32)``. The powers are
    rounded to nearest from 40-digit values."""
    from decimal import Decimal, localcontext

    with localcontext() as ctx:
        ctx.prec = 40
        powers = [float((Decimal(2).ln() * i / _N).exp()) for i in range(_N)]
    bits = np.array(powers, dtype=np.float64).view(np.uint64)
    return bits - (np.arange(_N, dtype=np.uint64) << np.uint64(47))


_TABLE = _table()
_SHIFT = float.fromhex("0x1.8p+52")                       # adding it rounds to an integer in the low bits
_INV_LN2_N = float.fromhex("0x1.71547652b82fep+0") * _N  # 32 / ln 2
# the cubic 1 + c2 r + c1 r^2 + c0 r^3 ~= 2^(r/32) on |r| <= 1/2 (minimax, Arm's coefficients)
_C0 = float.fromhex("0x1.c6af84b912394p-5") / _N ** 3
_C1 = float.fromhex("0x1.ebfce50fac4f3p-3") / _N ** 2
_C2 = float.fromhex("0x1.62e42ff0c52d6p-1") / _N
_OVERFLOW = np.float32(float.fromhex("0x1.62e42ep6"))     # above: exp(x) > FLT_MAX, +inf
_UNDERFLOW = np.float32(-float.fromhex("0x1.9fe368p6"))   # below: exp(x) < 2^-150, 0


@njit(inline="always")
def expf(x):
    """``exp(x)`` for a float32 ``x``, as glibc's ``expf`` (module docstring). NaN stays NaN."""
    xd = np.float64(x)
    kd = _fma(_INV_LN2_N, xd, _SHIFT)    # k + shift: k sits in the low bits of its mantissa
    ki = _bits(kd)
    kd -= _SHIFT
    r = _fma(_INV_LN2_N, xd, -kd)
    scale = _from_bits(_TABLE[ki & np.uint64(_N - 1)] + (ki << np.uint64(47)))
    poly = _fma(_fma(_C0, r, _C1), r * r, _fma(_C2, r, 1.0))
    e = np.float32(poly * scale)
    e = np.float32(np.inf) if x > _OVERFLOW else e
    return np.float32(0.0) if x < _UNDERFLOW else e


@njit(error_model="numpy", cache=True)
def sigmoid_into(src, out, n):
    """``out[t] = 1 / (1 + exp(-src[t]))`` for ``t < n``, in float32 (``out`` may be ``src``)."""
    for t in range(n):
        out[t] = np.float32(1.0) / (np.float32(1.0) + expf(-src[t]))
