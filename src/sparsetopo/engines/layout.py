"""The arrays the training engines read: one packed structure per layer, and the SGD settings.

A layer of the engines (:class:`EngineLayer`) may hold several networks of one shape, the
members of a population: their connected weights (and momentum buffers, ``indices``,
``col_rows``, ``col_perm``) are concatenated, member ``p``'s slice being
``offsets[p]:offsets[p + 1]`` in its topology's CSR order, and its bias and CSR/CSC pointer
rows are ``biases[p]``, ``indptr[p]``, ``col_ptr[p]``. Members share layer sizes but not
connection counts, so one flat array with offsets holds them all without padding. One network
alone is member 0, with one row each. A member layer held dense (the engine's ``dense[l, p]``)
keeps its ``n_in x n_out`` weights, mask and momentum buffer, row-major, in the slice
``dense_offsets[p]:dense_offsets[p + 1]`` of ``dense_values``, ``dense_masks``, ``dense_bufs``
(its CSR slice is then empty) and runs as BLAS GEMMs (:mod:`sparsetopo.kernels.dense`).

A network is a tuple of these, indexed by layer. numba compiles a tuple whose items have one
type as an array it can index at run time, so every layer of a network must give each field
the same dtype and dimensions (the field comments below): the builders in
:mod:`sparsetopo.train` make them so, and a layer without dense members holds empty dense
arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class EngineLayer(NamedTuple):
    """One layer of every network an engine trains (module docstring for the layout)."""

    values: np.ndarray         # float32 (connections,): connected weights, members concatenated
    value_bufs: np.ndarray     # float32 (connections,): their momentum buffers
    biases: np.ndarray         # float32 (members, n_out)
    bias_bufs: np.ndarray      # float32 (members, n_out)
    indptr: np.ndarray         # int64 (members, n_in + 1): CSR row pointers
    indices: np.ndarray        # int32 (connections,): CSR output of each connection
    col_ptr: np.ndarray        # int64 (members, n_out + 1): CSC column pointers
    col_rows: np.ndarray       # int32 (connections,): CSC input of each connection
    col_perm: np.ndarray       # int64 (connections,): CSC position -> CSR position
    offsets: np.ndarray        # int64 (members + 1,): each member's slice of the connections
    dense_values: np.ndarray   # float32: the dense members' n_in x n_out weights, concatenated
    dense_masks: np.ndarray    # float32: their topologies' masks
    dense_bufs: np.ndarray     # float32: their momentum buffers
    dense_offsets: np.ndarray  # int64 (members + 1,): each member's slice of the dense arrays
    rate: np.float32           # dropout rate of the layer's inputs (0: none)
    scale: np.float32          # float32(1 - rate): torch divides a kept input by it


class SGD(NamedTuple):
    """torch.optim.SGD's settings as the engines apply them (:mod:`sparsetopo.kernels.sgd`)."""

    lr: np.float32
    momentum: np.float32
    nesterov: bool


def no_dense_members(members: int) -> dict[str, np.ndarray]:
    """The dense fields of a layer none of whose ``members`` is held dense."""
    empty = np.zeros(0, dtype=np.float32)
    return dict(dense_values=empty, dense_masks=empty, dense_bufs=empty,
                dense_offsets=np.zeros(members + 1, dtype=np.int64))


def no_dropout() -> dict[str, np.float32]:
    """The dropout fields of a layer whose inputs are never dropped."""
    return dict(rate=np.float32(0.0), scale=np.float32(1.0))
