"""Graph pieces shared by the sparse forms: a builder of nodes and initializers, the
connections grouped by output, and the nodes that rebuild a dense weight from them."""

from __future__ import annotations

import numpy as np


class Builder:
    """Nodes and initializers of one replaced layer, every name under the layer's prefix."""

    def __init__(self, prefix: str):
        self.prefix, self.nodes, self.initializers, self._count = prefix, [], [], 0
        self._names: set[str] = set()

    def const(self, label: str, array) -> str:
        from onnx import numpy_helper

        name = f"{self.prefix}/{label}"
        if name in self._names:  # one initializer per label (the same constant used twice)
            return name
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs, nodes=None, out: str | None = None, **attrs) -> str:
        from onnx import helper

        self._count += 1
        out = out or f"{self.prefix}/{op_type}_{self._count}"
        (self.nodes if nodes is None else nodes).append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def drop_constants(self) -> None:
        """Forget every initializer made so far (the layer is written in another form)."""
        self.initializers.clear()
        self._names.clear()

    def stored_bytes(self) -> int:
        return sum(len(t.raw_data) for t in self.initializers)


def index_dtype(limit: int):
    return np.int16 if limit <= np.iinfo(np.int16).max else np.int32


def padded_by_output(topology, values: np.ndarray):
    """The layer's connections grouped by output: ``index [n_out, kmax]`` (the inputs feeding
    each output, sorted) and ``weights [n_out, kmax, ...]`` (``values`` in the topology's CSR
    order, trailing kernel axes kept). Padding slots hold distinct inputs *not* connected to
    that output, with zero weight."""
    rows = np.repeat(np.arange(topology.n_in), np.diff(topology.indptr))
    cols = topology.indices.astype(np.int64)
    order = np.lexsort((rows, cols))
    degree = np.bincount(cols, minlength=topology.n_out)
    kmax = max(int(degree.max()), 1) if degree.size else 1
    start = np.concatenate([[0], np.cumsum(degree)[:-1]])
    slot = np.arange(cols.size) - start[cols[order]]
    index = np.zeros((topology.n_out, kmax), dtype=np.int64)
    weights = np.zeros((topology.n_out, kmax, *values.shape[1:]), dtype=values.dtype)
    index[cols[order], slot] = rows[order]
    weights[cols[order], slot] = values[order]
    for j in np.flatnonzero(degree < kmax):  # regular topologies have none
        free = np.setdiff1d(np.arange(topology.n_in), index[j, :degree[j]], assume_unique=True)
        index[j, degree[j]:] = free[:kmax - degree[j]]
    return index, weights


def dense_weight_from(b: Builder, positions: str, weights_name: str, cells: int, tail: tuple, shape) -> str:
    """Graph nodes rebuilding a dense weight from the stored connections: ``ScatterND`` of the
    weights (one per position, each of shape ``tail``) into zeros ``[cells, *tail]`` at the
    int64 ``positions``, reshaped to ``shape``. All constant, so onnxruntime folds it at load."""
    from onnx import TensorProto, numpy_helper

    zeros = b.op("ConstantOfShape", [b.const("dense_cells", np.array([cells, *tail], np.int64))],
                 value=numpy_helper.from_array(np.zeros(1, np.float32)))
    column = b.op("Reshape", [b.op("Cast", [positions], to=TensorProto.INT64),
                              b.const("to_column", np.array([-1, 1], np.int64))])
    updates = b.op("Reshape", [weights_name, b.const("updates_shape", np.array([-1, *tail], np.int64))])
    return b.op("Reshape", [b.op("ScatterND", [zeros, column, updates]),
                            b.const("dense_shape", np.array(shape, np.int64))])
