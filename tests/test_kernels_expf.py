"""The kernels' float32 exp and sigmoid: against float64 numpy, and bit for bit against glibc's expf."""

import platform

import numpy as np
import pytest
from numba import njit

from sparsetopo.kernels.expf import expf, sigmoid_into


@njit
def _ours(bits):
    out = np.empty(bits.size, np.float32)
    x = bits.view(np.float32)
    for i in range(bits.size):
        out[i] = expf(x[i])
    return out


@njit
def _libm(bits):
    """The C library's expf: numba compiles ``np.exp`` of a float32 scalar to a call of it."""
    out = np.empty(bits.size, np.float32)
    x = bits.view(np.float32)
    for i in range(bits.size):
        out[i] = np.exp(x[i])
    return out


@njit
def _count_differences(start, stop):
    """How many float32 bit patterns in ``[start, stop)`` give other bits than libm's expf."""
    one = np.empty(1, np.uint32)
    x = one.view(np.float32)
    bad = 0
    for u in range(start, stop):
        one[0] = u
        a = expf(x[0])
        b = np.exp(x[0])
        if a != b and not (a != a and b != b):   # NaN payloads aside
            bad += 1
    return bad


def _glibc_expf() -> bool:
    """glibc 2.28 and later computes expf by the method expf.py follows."""
    name, version = platform.libc_ver()
    if name != "glibc":
        return False
    major, minor = (int(p) for p in version.split(".")[:2])
    return (major, minor) >= (2, 28)


def _sample_bits(step: int) -> np.ndarray:
    """Every ``step``-th float32 bit pattern, both signs, plus the edges of expf's range."""
    bits = np.arange(0, 1 << 32, step, dtype=np.uint64).astype(np.uint32)
    edges = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 88.72283, 88.72284, -103.97207, -103.97208,
                      -87.33654, -87.33655, 1e-30, -1e-30, 0.5, -0.5], dtype=np.float32).view(np.uint32)
    return np.concatenate([bits, edges])


def test_expf_is_float64_exp_rounded_to_float32_within_one_ulp():
    bits = _sample_bits(65537)
    x = bits.view(np.float32)
    ours = _ours(bits)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        reference = np.exp(x.astype(np.float64)).astype(np.float32)
    assert np.array_equal(np.isnan(ours), np.isnan(x))
    finite = ~np.isnan(x)
    ulps = np.abs(ours[finite].view(np.int32).astype(np.int64) - reference[finite].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert (ulps == 0).mean() > 0.999   # the method's error is 0.502 ulp: a rare tie goes the other way
    assert ours[x == np.inf].tolist() == [np.inf] and ours[x == -np.inf].tolist() == [0.0]


@pytest.mark.skipif(not _glibc_expf(), reason="the bits are glibc's (2.28+) expf; this C library has its own")
def test_expf_equals_glibc_expf_bit_for_bit_on_a_sample_of_all_floats():
    bits = _sample_bits(4099)   # about a million patterns, every exponent
    ours, libm = _ours(bits), _libm(bits)
    same = (ours.view(np.uint32) == libm.view(np.uint32)) | (np.isnan(ours) & np.isnan(libm))
    assert same.all(), bits[~same][:5]


@pytest.mark.slow
@pytest.mark.skipif(not _glibc_expf(), reason="the bits are glibc's (2.28+) expf; this C library has its own")
def test_expf_equals_glibc_expf_on_every_float32():
    # the sigmoid's arguments range over all floats: every one of the 2^32 patterns
    assert _count_differences(0, 1 << 32) == 0


@njit(fastmath={"reassoc", "contract"})
def _sigmoid_with_libm(a, out):
    """The kernels' sigmoid as it was written before expf.py: libm's expf per element."""
    for t in range(a.size):
        out[t] = np.float32(1.0) / (np.float32(1.0) + np.exp(-a[t]))


def test_sigmoid_matches_float64_and_the_libm_form():
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(4099) * 12).astype(np.float32)
    a[:6] = [0.0, np.inf, -np.inf, 200.0, -200.0, np.nan]
    out = np.empty_like(a)
    sigmoid_into(a, out, a.size)
    with np.errstate(over="ignore"):
        reference = 1.0 / (1.0 + np.exp(-a.astype(np.float64)))
    ok = ~np.isnan(a)
    assert np.allclose(out[ok], reference[ok], rtol=3e-7, atol=1e-37) and np.isnan(out[5])
    assert out[1] == 1.0 and out[2] == 0.0 and out[0] == 0.5
    if _glibc_expf():
        libm = np.empty_like(a)
        _sigmoid_with_libm(a, libm)
        assert np.array_equal(out, libm, equal_nan=True)
    # in place, and only the first n entries
    b = a.copy()
    sigmoid_into(b, b, 10)
    assert np.array_equal(b[:10], out[:10], equal_nan=True) and np.array_equal(b[10:], a[10:])
