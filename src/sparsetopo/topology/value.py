"""The Topology value: one layer's fixed bipartite connectivity, with its provenance.

A layer with ``n_in`` inputs and ``n_out`` outputs is the ``n_in x n_out`` 0/1 adjacency of the
paper's eq. (1); we store it as CSR (row ``i`` lists the outputs input ``i`` feeds), never as a
dense matrix, so that layers far larger than MNIST's fit. A Topology is immutable, has no torch
and does no I/O except the explicit :meth:`Topology.save` / :meth:`Topology.load`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import blocks

FILE_FORMAT = 1  # version of the .npz layout written by Topology.save
_HASH_BLOCK_BYTES = 1 << 22  # packed-mask bytes per sha256 update in mask_sha256
_HASH_BLOCK_EDGES = 1 << 20  # edges set per block in mask_sha256 (bounds its index arrays)


def _frozen(array, dtype) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class Topology:
    """Fixed connectivity of one layer.

    Attributes
    ----------
    n_in, n_out : layer sizes (the paper's n and m).
    construction : registry name of the construction that made it.
    k : the degree parameter (out-degree of every input for the regular constructions).
    seed : the seed it was built with (deterministic constructions ignore it).
    indptr, indices : CSR arrays, read-only; ``indices[indptr[i]:indptr[i+1]]`` are the sorted
        outputs of input ``i``.
    version : the construction's version number; bumped whenever its output changes.
    block_in, block_out : neurons per input and per output block (1: an ordinary layer). Above
        1 the construction ran on the graph of blocks (:attr:`block_graph`, where ``k`` counts
        output blocks per input block) and ``indptr``/``indices`` hold its lift to neurons,
        every block edge a dense ``block_in x block_out`` tile, the last block of a side
        truncated when the block size does not divide the width (:mod:`sparsetopo.topology.blocks`).
        Everything else (masks, degrees, ``to_scipy``, hashes, density) reads the neuron level.
    """

    n_in: int
    n_out: int
    construction: str
    k: int
    seed: int | None
    indptr: np.ndarray
    indices: np.ndarray
    version: int = 1
    block_in: int = 1
    block_out: int = 1

    def __post_init__(self):
        object.__setattr__(self, "indptr", _frozen(self.indptr, np.int64))
        object.__setattr__(self, "indices", _frozen(self.indices, np.int32))
        if self.indptr.shape != (self.n_in + 1,) or self.indptr[-1] != self.indices.size:
            raise SparsetopoError(
                f"CSR indptr of shape {self.indptr.shape} does not describe {self.n_in} inputs "
                f"with {self.indices.size} edges"
            )
        if self.is_blocked:
            blocks.block_sizes((self.block_in, self.block_out), self.n_in, self.n_out)
            blocks.check_lift(self)

    @classmethod
    def from_rows(cls, n_in, n_out, rows, **provenance) -> "Topology":
        """Build from a list of per-input output index arrays (duplicates are an error)."""
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=n_in)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        indices = np.concatenate([np.sort(np.asarray(r, dtype=np.int64)) for r in rows]) if n_in else []
        return cls(n_in, n_out, indptr=indptr, indices=indices, **provenance)

    @classmethod
    def from_mask(cls, mask, **provenance) -> "Topology":
        """Build from a dense boolean ``n_in x n_out`` array."""
        csr = sp.csr_matrix(np.asarray(mask, dtype=bool))
        csr.sort_indices()
        n_in, n_out = csr.shape
        return cls(n_in, n_out, indptr=csr.indptr, indices=csr.indices, **provenance)

    # -- views -------------------------------------------------------------------------------
    @property
    def is_blocked(self) -> bool:
        """Whether the connections come in tiles of more than one neuron."""
        return self.block_in != 1 or self.block_out != 1

    @property
    def block(self) -> tuple[int, int]:
        """``(block_in, block_out)``: neurons per input block and per output block."""
        return (self.block_in, self.block_out)

    @cached_property
    def block_graph(self) -> "Topology":
        """The graph of blocks the construction ran on: ``ceil(n_in/block_in)`` inputs,
        ``ceil(n_out/block_out)`` outputs, one edge per tile, same construction, ``k``, seed and
        version, block sizes 1. For block sizes 1 it is this topology itself."""
        if not self.is_blocked:
            return self
        indptr, indices = blocks.coarsen(self.indptr, self.indices, self.n_in, self.block_in, self.block_out)
        return Topology(blocks.n_blocks(self.n_in, self.block_in), blocks.n_blocks(self.n_out, self.block_out),
                        self.construction, self.k, self.seed, indptr=indptr, indices=indices, version=self.version)

    @property
    def nnz(self) -> int:
        """Number of connections (edges)."""
        return int(self.indices.size)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_in, self.n_out)

    @property
    def density(self) -> float:
        """Fraction of the ``n_in * n_out`` possible connections that exist."""
        return self.nnz / (self.n_in * self.n_out)

    @cached_property
    def out_degrees(self) -> np.ndarray:
        """Per input neuron: how many outputs it feeds (the paper's degree k)."""
        return np.diff(self.indptr)

    @cached_property
    def in_degrees(self) -> np.ndarray:
        """Per output neuron: how many inputs feed it."""
        return np.bincount(self.indices, minlength=self.n_out)

    @cached_property
    def rows(self) -> np.ndarray:
        """Input index of every edge, aligned with :attr:`indices` (COO row array)."""
        return np.repeat(np.arange(self.n_in, dtype=np.int32), self.out_degrees)

    def to_scipy(self) -> sp.csr_matrix:
        """The biadjacency as a scipy CSR matrix of float64 ones, shape ``(n_in, n_out)``."""
        data = np.ones(self.nnz)
        return sp.csr_matrix((data, self.indices, self.indptr), shape=self.shape)

    def mask(self) -> np.ndarray:
        """The dense boolean ``n_in x n_out`` adjacency (allocates n_in*n_out bytes)."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.rows, self.indices] = True
        return out

    def mask_sha256(self) -> str:
        """sha256 hex of ``numpy.packbits(mask)`` of the row-major mask: a portable identity.

        The value is defined on the dense mask (``hashlib.sha256(np.packbits(t.mask()))``: its
        ``n_in * n_out`` bits in row-major order, eight to a byte, most significant bit first,
        zero-padded at the very end), so that anyone holding the mask can check it without
        sparsetopo. It is computed from the CSR arrays without the dense mask, block of rows by
        block of rows: a block starts at a row that is a multiple of 8, and 8 rows of ``n_out``
        bits are exactly ``n_out`` whole bytes, so every block starts on a byte boundary even
        when single rows end inside a byte; only the last block may end inside one, and it is
        padded there with zero bits, as packbits pads. Time is that of sha256 over
        ``n_in * n_out / 8`` bytes (the zeros are hashed too: 31 GB for 500,000 x 500,000)
        plus O(nnz); memory is a few MB besides the topology.
        """
        n, m = self.shape
        digest = hashlib.sha256()
        if n * m == 0:
            return digest.hexdigest()
        # rows per block: a multiple of 8, at most about _HASH_BLOCK_BYTES of packed mask and
        # _HASH_BLOCK_EDGES edges (a dense block would otherwise make large index arrays)
        by_bytes = 8 * max(1, _HASH_BLOCK_BYTES // m)
        buffer = np.zeros((by_bytes * m) // 8, dtype=np.uint8)
        view = memoryview(buffer)
        indptr, indices = self.indptr, self.indices
        r0 = 0
        while r0 < n:
            r1 = min(n, r0 + by_bytes)
            if indptr[r1] - indptr[r0] > _HASH_BLOCK_EDGES:
                last = int(np.searchsorted(indptr, indptr[r0] + _HASH_BLOCK_EDGES, side="right")) - 1
                r1 = min(r1, max(r0 + 8, r0 + (last - r0) // 8 * 8), n)
            lo, hi = int(indptr[r0]), int(indptr[r1])
            local_rows = np.repeat(np.arange(r1 - r0, dtype=np.int64), np.diff(indptr[r0:r1 + 1]))
            bits = local_rows * m + indices[lo:hi]
            where = bits >> 3
            # bitwise OR rather than assignment: several edges can share one byte
            np.bitwise_or.at(buffer, where, (np.uint8(0x80) >> (bits & 7).astype(np.uint8)))
            digest.update(view[: ((r1 - r0) * m + 7) // 8])
            buffer[where] = 0  # the buffer is all zeros again for the next block
            r0 = r1
        return digest.hexdigest()

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the edge set (sizes and CSR arrays): a cache key that never densifies."""
        h = hashlib.sha256(np.array([self.n_in, self.n_out], dtype=np.int64).tobytes())
        h.update(self.indptr.tobytes())
        h.update(self.indices.astype(np.int32).tobytes())
        return h.hexdigest()

    def provenance(self) -> dict:
        """How to rebuild this topology with :func:`sparsetopo.topology.build`. ``block`` is
        present only for block sizes other than 1, so an ordinary layer's record is unchanged."""
        record = {
            "construction": self.construction,
            "n_in": self.n_in,
            "n_out": self.n_out,
            "k": self.k,
            "seed": self.seed,
            "version": self.version,
        }
        if self.is_blocked:
            record["block"] = [self.block_in, self.block_out]
        return record

    def __repr__(self) -> str:
        block = f", block={self.block_in}x{self.block_out}" if self.is_blocked else ""
        return (
            f"Topology({self.construction}, {self.n_in}x{self.n_out}, k={self.k}{block}, "
            f"seed={self.seed}, nnz={self.nnz}, density={self.density:.4f}, v{self.version})"
        )

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write to ``path`` (.npz) atomically: a killed write never leaves a partial file.
        Block sizes are written only when they are not 1 (a file without them reads as 1)."""
        extra = {"block_in": self.block_in, "block_out": self.block_out} if self.is_blocked else {}
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(
                fh,
                **extra,
                file_format=FILE_FORMAT,
                n_in=self.n_in,
                n_out=self.n_out,
                construction=self.construction,
                k=self.k,
                seed=-1 if self.seed is None else self.seed,
                version=self.version,
                indptr=self.indptr,
                indices=self.indices,
            )
        return Path(path)

    @classmethod
    def load(cls, path) -> "Topology":
        """Read a file written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if int(z["file_format"]) != FILE_FORMAT:
                    raise SparsetopoError(
                        f"{path}: topology file format {int(z['file_format'])} is not supported "
                        f"(this version reads format {FILE_FORMAT})"
                    )
                seed = int(z["seed"])
                block = {name: int(z[name]) for name in ("block_in", "block_out") if name in z.files}
                return cls(
                    n_in=int(z["n_in"]),
                    n_out=int(z["n_out"]),
                    construction=str(z["construction"]),
                    k=int(z["k"]),
                    seed=None if seed < 0 else seed,
                    version=int(z["version"]),
                    indptr=z["indptr"],
                    indices=z["indices"],
                    **block,
                )
        except (OSError, KeyError, ValueError) as exc:
            if isinstance(exc, SparsetopoError):
                raise
            raise SparsetopoError(f"{path}: not a sparsetopo topology file ({exc})") from exc
