"""The IDX file format of MNIST and Fashion-MNIST: a strict reader and a small writer.

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the values in C order. MNIST ships four of them, usually gzipped.

The reader checks everything it can (magic, dtype, number of dimensions, declared sizes
against the bytes actually present, label range) because a half-downloaded or mislabelled
file otherwise turns into a confusing shape error deep inside training. Every failure is a
:class:`~sparsetopo.errors.SparsetopoError` whose message starts with the file's name and
says what is wrong with it. Gzip is recognised by its magic bytes, not by the file name.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError

__all__ = ["read_idx", "read_images", "read_labels", "write_idx", "IDX_DTYPES"]

#: IDX dtype code -> numpy dtype (big-endian, as the format stores multi-byte values).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08


def _fail(path: Path, what: str, fix: str = "") -> SparsetopoError:
    hint = f"; {fix}" if fix else "; delete it and fetch a fresh copy"
    return SparsetopoError(f"{path}: {what}{hint}")


def _raw_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it starts with the gzip magic bytes."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SparsetopoError(f"{path}: no such file") from None
    except OSError as exc:
        raise SparsetopoError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise _fail(path, "truncated gzip stream (the download was probably cut short)") from None
    except (OSError, zlib.error) as exc:
        raise _fail(path, f"corrupt gzip data ({exc})") from None


def read_idx(path, expect_ndim: int | None = None, expect_dtype: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped or plain) into a native-endian numpy array.

    Parameters
    ----------
    path : the file.
    expect_ndim : if given, the number of dimensions the header must declare.
    expect_dtype : if given, the IDX dtype code the header must declare (0x08 = ubyte).

    Raises
    ------
    SparsetopoError naming the file when it is not IDX, declares an unexpected dtype or
    number of dimensions, or holds fewer (truncated) or more (trailing garbage) value bytes
    than its header declares.
    """
    path = Path(path)
    data = _raw_bytes(path)
    if len(data) < 4:
        raise _fail(path, f"too short for an IDX header: {len(data)} bytes")
    zero, code, ndim = data[:2], data[2], data[3]
    magic = int.from_bytes(data[:4], "big")
    if zero != b"\x00\x00" or code not in IDX_DTYPES:
        raise _fail(path, f"not an IDX file: bad magic number 0x{magic:08x}",
                    "expected 0x00000803 (images) or 0x00000801 (labels)")
    if expect_dtype is not None and code != expect_dtype:
        raise _fail(path, f"IDX dtype code 0x{code:02x} ({IDX_DTYPES[code]}) where "
                    f"0x{expect_dtype:02x} ({IDX_DTYPES[expect_dtype]}) is expected")
    if expect_ndim is not None and ndim != expect_ndim:
        raise _fail(path, f"magic number 0x{magic:08x} declares {ndim} dimensions where "
                    f"{expect_ndim} are expected (0x{(code << 8) | expect_ndim:08x})",
                    "check that images and labels files are not swapped")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise _fail(path, f"truncated: header declares {ndim} dimensions but the file ends "
                    f"after {len(data)} bytes")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header
    dims = "x".join(map(str, shape)) or "scalar"
    if actual < expected:
        raise _fail(path, f"truncated: header declares {dims} = {expected} bytes of values "
                    f"but the file holds {actual}")
    if actual > expected:
        raise _fail(path, f"trailing garbage: header declares {dims} = {expected} bytes of "
                    f"values but the file holds {actual} ({actual - expected} extra)")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)


def read_images(path) -> np.ndarray:
    """Read an IDX images file: ubyte, 3 dimensions (count, rows, cols). Returns uint8."""
    return read_idx(path, expect_ndim=3, expect_dtype=_UBYTE)


def read_labels(path, n_classes: int = 10) -> np.ndarray:
    """Read an IDX labels file: ubyte, 1 dimension, every label in ``0..n_classes-1``.

    Returns uint8 of shape (count,). An out-of-range label names its index and value.
    """
    path = Path(path)
    labels = read_idx(path, expect_ndim=1, expect_dtype=_UBYTE)
    bad = np.flatnonzero(labels >= n_classes)
    if bad.size:
        i = int(bad[0])
        raise _fail(path, f"label {int(labels[i])} at index {i} is outside 0..{n_classes - 1} "
                    f"({bad.size} labels out of range)")
    return labels


def write_idx(path, array, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file, atomically; gzip it when ``compress`` (default: the
    name ends in ``.gz``). The gzip header carries no timestamp, so equal arrays give equal
    bytes (and equal md5s). Supported dtypes: those in :data:`IDX_DTYPES`.
    """
    path = Path(path)
    array = np.asarray(array)
    codes = {dt.newbyteorder("="): code for code, dt in IDX_DTYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None:
        raise SparsetopoError(f"cannot write dtype {array.dtype} to IDX file {path}: "
                              f"convert to one of {', '.join(str(d) for d in codes)}")
    if array.ndim > 255 or any(s >= 2**32 for s in array.shape):
        raise SparsetopoError(f"array of shape {array.shape} does not fit IDX file {path}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[code]).tobytes()
    if compress if compress is not None else path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path
