"""Sparse ONNX graphs: each sparse layer in a form whose size and work follow its connections.

:func:`sparsetopo.export_onnx` calls :func:`export_sparse` unless asked for the dense graph.
torch's exporter writes the model with every sparse layer as one opaque ``sparsetopo::Layer``
node (through :class:`_Marker`); each such node is then replaced by standard ONNX operators
(opset 13 or later) that onnxruntime and mobile runtimes execute. The forms, measured in
onnxruntime on one thread by ``benchmarks/bench_onnx.py`` (docs/benchmarks.md):

``ell`` (linear layers)
    The padded per-output index list (ELLPACK): output ``j`` reads the ``kmax`` inputs that
    feed it (its in-degree, padded to the largest one) with ``GatherElements``, multiplies by
    a ``[n_out, kmax]`` weight and sums (``Mul``, ``ReduceSum``). Work and bytes follow the
    connections. Padding slots point at inputs *not* connected to that output, with weight 0,
    so every (input, output) pair in the index is distinct. A gather costs about 10 times a
    dense multiply-add in onnxruntime, and the gathered tensor grows with the batch, so this
    form only pays at small batches: up to ``ell_max_batch = floor(ELL_BATCH_WORK * n_in /
    kmax)`` rows (:func:`ell_max_batch`; a smaller constant where the dense model's weights
    fit in the cache, which makes the dense MatMul faster). A larger batch takes the
    ``expanded`` path below, chosen inside the graph by an ``If`` on the batch size.
``gathered`` (convolutions)
    The input channels feeding each output channel are gathered (``Gather`` on the channel
    axis, whole feature maps at a time) and one grouped ``Conv`` (``group = out_channels``)
    applies only the connected kernels: only connected channel pairs are stored and computed.
    onnxruntime runs that fast only as a depthwise convolution (one input channel per output
    channel); with more, the dense convolution was faster, so such layers are ``expanded``.
``expanded``
    The connections are stored as above, and the dense weight is rebuilt from them inside the
    graph (``ScatterND`` into zeros). onnxruntime folds that constant subgraph once, when the
    session is created, so inference runs the dense ``MatMul`` / ``Conv``: the file stays as
    small as the connections, the work and the session's memory are the dense layer's (the
    same ``Gemm`` as the dense export). Chosen
    where the dense operator is faster (a layer too dense for ``ell``) and for the large
    batches of an ``ell`` layer.
``dense``
    The dense weight stored as it is, where storing the connections would not be smaller.

Indices are stored as int16 when the layer's width allows (int32 otherwise) and cast in the
graph; weights stay float32 (the export must match the model within 1e-4), so a connection
costs 6 bytes (8 above 32767 inputs) against 4 per possible connection in the dense file. The
cast, like the expansion, is folded by onnxruntime at load.

We tried and dropped: onnxruntime's ``SparseToDenseMatMul`` (com.microsoft) needs a sparse
tensor *input*, and onnxruntime turns sparse initializers into dense ones when it loads a
model, so a self-contained file cannot feed it; ``Gather`` on the feature axis (one
``memcpy`` per element) was 10 times slower than ``GatherElements``; ``ScatterElements`` with
``reduction="add"`` (the per-input form) was 3 times slower than ``ell``. For the rotating
constructions the inputs of output ``j`` are ``j - p (mod n_out)`` for the base vector's
positions ``p``, so the graph can take them as one ``Slice`` of the doubled input per position,
with no index stored at all (the paper's "handful of numbers"); one node per position made
that 3 (2%) to 6 (10%) times slower than ``ell`` on a 4096-wide layer, so it is not used.
Chunking ``ell`` by blocks of outputs (to keep the gathered tensor in cache) and a grouped
``Conv`` or ``Einsum`` in place of ``Mul`` + ``ReduceSum`` did not help either.
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.nn.sparsify import SPARSE_LAYERS

#: ``ell`` is used for a batch of B rows while ``B * kmax / n_in <= ELL_BATCH_WORK``: a gathered
#: connection costs about 1 ns in onnxruntime (one thread), a dense multiply-add about 0.2 ns
#: when the dense weight streams from memory, so at batch 1 the sparse form wins below about a
#: tenth of the dense work (bench_onnx.py: 784-4096-4096-10 MLP) ...
ELL_BATCH_WORK = 0.12
#: ... and below about a twentieth when the dense model's weights fit in the cache (under
#: ``DENSE_IN_CACHE_BYTES``), where a dense multiply-add costs about 0.1 ns (784-1024-1024-10).
ELL_BATCH_WORK_CACHED = 0.05
DENSE_IN_CACHE_BYTES = 16 * 2**20
#: A convolution is ``gathered`` only while each output channel reads at most this many input
#: channels (a depthwise convolution): onnxruntime's grouped ``Conv`` with 2 or more channels per
#: group ran 2 to 3 times slower than the dense convolution (bench_onnx.py, tutorial CNN).
CONV_GATHER_MAX_CHANNELS = 1
#: The lowest opset the sparse forms are written for (ReduceSum with axes as an input).
MIN_OPSET = 13
DOMAIN = "sparsetopo"


@dataclass(frozen=True)
class LayerExport:
    """How one sparse layer was written: its form, its bytes in the file and the dense layer's."""

    name: str
    kind: str              # "linear" or "conv2d"
    form: str              # "ell", "gathered", "expanded" or "dense" (module docstring)
    density: float
    bytes: int             # bytes of this layer's tensors in the ONNX file (weights, indices, bias, shapes)
    dense_bytes: int       # the same layer written dense
    ell_max_batch: int = 0  # "ell": the largest batch computed sparsely (larger ones run expanded)
    note: str = ""

    def describe(self) -> str:
        """One line for a table: the form, and when the form depends on the batch, how."""
        if self.form == "ell":
            return f"ell up to batch {self.ell_max_batch}, expanded above"
        return self.form + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`sparsetopo.export_onnx` wrote: the path and one :class:`LayerExport` per
    sparse layer. ``os.fspath(result)`` and ``str(result)`` give the path, so it stands where a
    path is expected (what ``export_onnx`` returned before it returned a summary)."""

    path: Path
    layers: tuple[LayerExport, ...]
    dense: bool

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def rows(self) -> list[dict]:
        """The layers as plain dicts (JSON)."""
        return [asdict(layer) for layer in self.layers]


# -- tracing: each sparse layer as one opaque node ------------------------------------------------
class _Marker(torch.autograd.Function):
    """Computes a sparse layer (densely: this runs only while tracing) and exports it as one
    ``sparsetopo::Layer`` node carrying the layer's number."""

    @staticmethod
    def forward(ctx, x, holder):
        # Computed with the tracer paused: the symbolic below replaces whatever this does, and
        # torch's tracer fails ("unordered_map::at") on the second call of a Function whose
        # forward reads a constant tensor (a layer called twice).
        state = torch._C._get_tracing_state()
        torch._C._set_tracing_state(None)
        try:
            return holder.compute(x)
        finally:
            torch._C._set_tracing_state(state)

    @staticmethod
    def symbolic(g, x, holder):
        out = g.op(f"{DOMAIN}::Layer", x, key_i=holder.key)
        out.setType(x.type().with_sizes([None, *holder.out_shape[1:]]))
        return out


class _Spec:
    """A sparse layer as :class:`_Marker` sees it: a plain object, not a module, so that torch's
    tracer records neither it nor the layer's parameters."""

    def __init__(self, layer):
        self.layer = layer
        with torch.no_grad():  # plain tensors: the tracer takes a parameter here for a constant
            self.weight = layer.dense_weight().detach().clone()
            self.bias = layer.bias.detach().clone() if layer.bias is not None else None

    def compute(self, x):
        layer = self.layer
        if isinstance(layer, SparseLinear):
            return F.linear(x, self.weight, self.bias)
        padding = 0 if layer.padding_mode != "zeros" else layer.padding
        return F.conv2d(x, self.weight, self.bias, layer.stride, padding, layer.dilation)


@dataclass(eq=False)  # hashed by identity, as torch's tracer keeps it
class _Call:
    """One call of a sparse layer during the trace: the node's number, where the layer sits
    (``name``, its first place in the model) and where this call came from (``place``, unique
    per call), and the input's rank and output's shape the graph builder needs."""

    spec: _Spec
    key: int
    name: str
    place: str
    rank: int = 0
    out_shape: tuple = ()

    @property
    def layer(self):
        return self.spec.layer

    def compute(self, x):
        return self.spec.compute(x)


class _Placeholder(nn.Module):
    """Stands in for a sparse layer during torch's export; pads the input itself for a
    convolution with a padding mode other than zeros (torch exports the padding). Every call
    becomes its own node: a layer held in two places, or called twice, computes twice."""

    def __init__(self, layer, name: str, place: str, calls: list):
        super().__init__()
        self.spec, self.name, self.place, self.calls = _Spec(layer), name, place, calls

    def forward(self, x):
        layer = self.spec.layer
        seen = sum(call.place.split("#")[0] == self.place for call in self.calls)
        call = _Call(self.spec, len(self.calls), self.name, self.place + (f"#{seen}" if seen else ""), x.dim())
        self.calls.append(call)
        if isinstance(layer, SparseConv2d) and layer.padding_mode != "zeros":
            x = F.pad(x, layer._pad_amounts(x), mode=layer.padding_mode)
        out = _Marker.apply(x, call)
        call.out_shape = tuple(out.shape)
        return out


def _with_placeholders(model: nn.Module) -> tuple[nn.Module, list[_Call], list[str]]:
    """A CPU eval-mode copy of ``model`` with every place that holds a sparse layer replaced by
    a :class:`_Placeholder`; the list the placeholders record their calls in (filled by the
    trace); and the sparse layers' names in module order.

    A layer held in two places (``nn.Sequential(lin, act, lin)``) gets one placeholder per
    place, and every call its own node: torch's tracer fails on one autograd Function node
    traced twice from the same module.
    """
    copied = copy.deepcopy(model).cpu().eval()
    names = {id(module): name for name, module in copied.named_modules() if isinstance(module, SPARSE_LAYERS)}
    calls: list[_Call] = []
    for path, module in list(copied.named_modules(remove_duplicate=False)):
        if not isinstance(module, SPARSE_LAYERS):
            continue
        holder = _Placeholder(module, names[id(module)], path, calls)
        if path == "":
            copied = holder
            break
        parent, _, attr = path.rpartition(".")
        setattr(copied.get_submodule(parent) if parent else copied, attr, holder)
    return copied, calls, list(names.values())


def trace_to_onnx(model: nn.Module, example_input: torch.Tensor, opset: int, **extra):
    """torch's TorchScript exporter into memory: an ``onnx.ModelProto`` with a dynamic batch."""
    import onnx

    buffer = io.BytesIO()
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=opset,
                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **extra)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, same graph every time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch announces its newer exporter; the library never prints
        torch.onnx.export(model, (example_input.cpu(),), buffer, **kwargs)
    return onnx.load_from_string(buffer.getvalue())


# -- the graph builder ------------------------------------------------------------------------------
class _Builder:
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


def _index_dtype(limit: int):
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


def _dense_weight_from(b: _Builder, positions: str, weights_name: str, cells: int, tail: tuple, shape) -> str:
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


# -- linear layers ------------------------------------------------------------------------------------
def ell_max_batch(n_in: int, kmax: int, cached: bool) -> int:
    """The largest batch for which the ``ell`` form is expected to beat the dense MatMul
    (0: none); ``kmax`` is the largest in-degree, ``cached`` whether the dense model's weights
    fit in the cache (:data:`DENSE_IN_CACHE_BYTES`)."""
    work = ELL_BATCH_WORK_CACHED if cached else ELL_BATCH_WORK
    return int(math.floor(work * n_in / kmax + 1e-9))


def dense_model_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s float32 weights with every sparse layer counted dense: what one
    inference of the dense export streams through the cache."""
    total, sparse_params = 0, set()
    for module in model.modules():
        if isinstance(module, SPARSE_LAYERS):
            t = module.topology
            kernel = module.kernel_size[0] * module.kernel_size[1] if isinstance(module, SparseConv2d) else 1
            total += 4 * (t.n_in * t.n_out * kernel + (t.n_out if module.bias is not None else 0))
            sparse_params |= {id(p) for p in module.parameters()}
    return total + sum(4 * p.numel() for p in model.parameters() if id(p) not in sparse_params)


def _linear(b: _Builder, layer: SparseLinear, x: str, y: str, rank: int, forced: str | None, cached: bool):
    from onnx import TensorProto, helper

    t = layer.topology
    n_in, m = t.n_in, t.n_out
    values = layer.connected_weights().cpu().numpy().astype(np.float32)
    index, weights = padded_by_output(t, values)
    kmax = index.shape[1]
    stored_index = b.const("index", index.astype(_index_dtype(n_in)))
    stored_weights = b.const("weights", weights)
    bias = b.const("bias", layer.bias.detach().cpu().numpy().astype(np.float32)) if layer.bias is not None else None
    sparse_bytes = b.stored_bytes()
    dense_bytes = 4 * (n_in * m + (m if bias else 0))
    limit = ell_max_batch(n_in, kmax, cached) if rank == 2 else 0
    note = "" if rank == 2 else f"input of rank {rank}"
    if forced == "ell" and rank != 2:
        raise SparsetopoError(f"the ell form takes a 2-D input (batch, features), not one of rank {rank}")
    form = forced or ("ell" if limit >= 1 else "expanded" if sparse_bytes < dense_bytes else "dense")

    def add_bias(nodes, value, out=None):
        return b.op("Add", [value, bias], nodes, out=out) if bias else b.op("Identity", [value], nodes, out=out)

    def dense_product(nodes, weight, out=None):
        """What torch exports for nn.Linear (weight ``[n_out, n_in]``): one Gemm on a 2-D input,
        else MatMul and Add; the dense paths thus run the same kernels as the dense export."""
        if rank == 2:
            return b.op("Gemm", [x, weight, *([bias] if bias else [])], nodes, out=out, transB=1)
        return add_bias(nodes, b.op("MatMul", [x, b.op("Transpose", [weight], nodes, perm=[1, 0])], nodes), out)

    if form == "dense":
        b.drop_constants()
        weight = b.const("weight", layer.dense_weight().cpu().numpy().astype(np.float32))
        bias = b.const("bias", layer.bias.detach().cpu().numpy().astype(np.float32)) if layer.bias is not None else None
        dense_product(None, weight, out=y)
        return LayerExport("", "linear", "dense", t.density, b.stored_bytes(), dense_bytes, note=note)

    # weight[j, i] sits at j * n_in + i of the flattened [n_out, n_in] weight (i = index[j, slot])
    position = b.op("Add", [b.op("Cast", [stored_index], to=TensorProto.INT64),
                            b.const("output_base", np.arange(m, dtype=np.int64)[:, None] * n_in)])
    dense_weight = _dense_weight_from(b, position, stored_weights, m * n_in, (), (m, n_in))
    if form == "expanded":
        dense_product(None, dense_weight, out=y)
        return LayerExport("", "linear", "expanded", t.density, b.stored_bytes(), dense_bytes, note=note)

    # ell: If(batch == 1) one gather; elif batch <= limit, a gather with per-row offsets; else expanded
    index32 = b.op("Reshape", [b.op("Cast", [stored_index], to=TensorProto.INT32),
                               b.const("to_row", np.array([1, -1], np.int64))])
    by_output = b.const("by_output", np.array([-1, m, kmax], np.int64))
    axis2 = b.const("slot_axis", np.array([2], np.int64))

    def ell_sum(nodes, gathered, out):
        products = b.op("Mul", [b.op("Reshape", [gathered, by_output], nodes), stored_weights], nodes)
        return add_bias(nodes, b.op("ReduceSum", [products, axis2], nodes, keepdims=0), out)

    def branch(label, build):
        nodes = []
        out = build(nodes, f"{b.prefix}/{label}_out")
        return helper.make_graph(nodes, f"{b.prefix}/{label}", [],
                                 [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", m])])

    def one_row(nodes, out):
        return ell_sum(nodes, b.op("GatherElements", [x, index32], nodes, axis=1), out)

    def few_rows(nodes, out):
        scalar_n_in = b.const("n_in", np.array(n_in, np.int64))
        stop = b.op("Mul", [batch, scalar_n_in], nodes)
        starts = b.op("Range", [b.const("zero", np.array(0, np.int64)), stop, scalar_n_in], nodes)
        offsets = b.op("Reshape", [b.op("Cast", [starts], nodes, to=TensorProto.INT32),
                                   b.const("to_column", np.array([-1, 1], np.int64))], nodes)
        flat_index = b.op("Reshape", [b.op("Add", [offsets, index32], nodes), b.const("to_row", np.array([1, -1],
                                                                                                        np.int64))],
                          nodes)
        flat_x = b.op("Reshape", [x, b.const("to_row", np.array([1, -1], np.int64))], nodes)
        return ell_sum(nodes, b.op("GatherElements", [flat_x, flat_index], nodes, axis=1), out)

    def expanded(nodes, out):
        return dense_product(nodes, dense_weight, out)

    batch = b.op("Gather", [b.op("Shape", [x]), b.const("batch_axis", np.array(0, np.int64))], axis=0)
    if limit > 1:
        def rest(nodes, out):
            small = b.op("Less", [batch, b.const("limit", np.array(limit + 1, np.int64))], nodes)
            return b.op("If", [small], nodes, out=out, then_branch=branch("few_rows", few_rows),
                        else_branch=branch("expanded", expanded))
    else:
        rest = expanded
    single = b.op("Equal", [batch, b.const("one", np.array(1, np.int64))])
    b.op("If", [single], out=y, then_branch=branch("one_row", one_row), else_branch=branch("rest", rest))
    return LayerExport("", "linear", "ell", t.density, b.stored_bytes(), dense_bytes, ell_max_batch=limit)


# -- convolutions ---------------------------------------------------------------------------------------
def _conv(b: _Builder, layer: SparseConv2d, x: str, y: str, forced: str | None, pads: list[int]):
    t = layer.topology
    kh, kw = layer.kernel_size
    kernels = layer.connected_weights().cpu().numpy().astype(np.float32)
    index, weights = padded_by_output(t, kernels)
    kmax = index.shape[1]
    bias = layer.bias.detach().cpu().numpy().astype(np.float32) if layer.bias is not None else None
    dense_bytes = 4 * (t.n_out * t.n_in * kh * kw + (t.n_out if bias is not None else 0))
    attrs = dict(strides=list(layer.stride), dilations=list(layer.dilation), pads=pads, kernel_shape=[kh, kw])
    stored_index = b.const("index", index.astype(_index_dtype(t.n_in)))
    stored_weights = b.const("weights", weights)
    bias_name = [b.const("bias", bias)] if bias is not None else []
    sparse_bytes = b.stored_bytes()
    form = forced or ("gathered" if kmax <= CONV_GATHER_MAX_CHANNELS else
                      "expanded" if sparse_bytes < dense_bytes else "dense")
    if form == "dense":
        b.drop_constants()
        weight = b.const("weight", layer.dense_weight().cpu().numpy().astype(np.float32))
        bias_name = [b.const("bias", bias)] if bias is not None else []
        b.op("Conv", [x, weight, *bias_name], out=y, **attrs)
    elif form == "expanded":
        from onnx import TensorProto

        # kernel (j, i) sits at j * n_in + i of the [n_out * n_in, kH, kW] stack (i = index[j, slot])
        position = b.op("Add", [b.op("Cast", [stored_index], to=TensorProto.INT64),
                                b.const("output_base", np.arange(t.n_out, dtype=np.int64)[:, None] * t.n_in)])
        weight = _dense_weight_from(b, position, stored_weights, t.n_out * t.n_in, (kh, kw),
                                    (t.n_out, t.n_in, kh, kw))
        b.op("Conv", [x, weight, *bias_name], out=y, **attrs)
    else:
        from onnx import TensorProto

        flat_index = b.op("Reshape", [b.op("Cast", [stored_index], to=TensorProto.INT64),
                                      b.const("flat", np.array([-1], np.int64))])
        channels = b.op("Gather", [x, flat_index], axis=1)
        b.op("Conv", [channels, stored_weights, *bias_name], out=y, group=t.n_out, **attrs)
    stored = b.stored_bytes()
    return LayerExport("", "conv2d", form, t.density, stored, dense_bytes)


def _conv_pads(layer: SparseConv2d) -> list[int]:
    """ONNX ``pads`` (top, left, bottom, right) for zero padding; other modes pad beforehand."""
    if layer.padding_mode != "zeros" or layer.padding == "valid":
        return [0, 0, 0, 0]
    if layer.padding == "same":
        begin, end = [], []
        for d, k in zip(layer.dilation, layer.kernel_size):
            total = d * (k - 1)
            begin.append(total // 2)
            end.append(total - total // 2)
        return begin + end
    ph, pw = layer.padding
    return [ph, pw, ph, pw]


# -- the export -----------------------------------------------------------------------------------------
def export_sparse(model: nn.Module, path, example_input: torch.Tensor, opset: int = 17,
                  forms: dict[str, str] | None = None) -> OnnxExport:
    """Write ``model`` to ``path`` as ONNX with each sparse layer in its sparse form (module
    docstring); atomic. ``forms`` maps layer names to a form to use instead of the chosen one
    (for measuring them). Returns the path and the per-layer summary."""
    import onnx

    if opset < MIN_OPSET:
        raise SparsetopoError(f"opset={opset}: the sparse ONNX forms need opset {MIN_OPSET} or later "
                              f"(or export dense, which takes any opset torch supports)")
    forms = dict(forms or {})
    traced_model, calls, names = _with_placeholders(model)
    unknown = set(forms) - set(names)
    if unknown:
        raise SparsetopoError(f"forms names {sorted(unknown)}, not sparse layers of the model "
                              f"({', '.join(names) or 'none'})")
    with torch.no_grad():
        # the domain only when used: torch's C++ side warns (on stderr) about an unused one
        extra = {"custom_opsets": {DOMAIN: 1}} if names else {}
        proto = trace_to_onnx(traced_model, example_input, opset, **extra)
    cached = dense_model_bytes(model) <= DENSE_IN_CACHE_BYTES
    graph = proto.graph
    nodes, summary = [], []
    for node in graph.node:
        if node.domain != DOMAIN:
            nodes.append(node)
            continue
        key = next(a.i for a in node.attribute if a.name == "key")
        call = calls[key]
        name = call.name
        builder = _Builder(f"sparse/{call.place or 'model'}")
        if isinstance(call.layer, SparseLinear):
            row = _linear(builder, call.layer, node.input[0], node.output[0], call.rank, forms.get(name), cached)
        else:
            row = _conv(builder, call.layer, node.input[0], node.output[0], forms.get(name),
                        _conv_pads(call.layer))
        if all(r.name != name for r in summary):  # a layer called twice is listed once
            summary.append(replace(row, name=name))
        nodes.extend(builder.nodes)
        graph.initializer.extend(builder.initializers)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [o for o in proto.opset_import if o.domain != DOMAIN]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)
    onnx.checker.check_model(proto)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    order = {name: i for i, name in enumerate(names)}
    return OnnxExport(Path(path), tuple(sorted(summary, key=lambda r: order[r.name])), dense=False)


def dense_summary(model: nn.Module, path) -> OnnxExport:
    """The summary of a dense export: every sparse layer written as the dense operator."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, SPARSE_LAYERS):
            t = module.topology
            size = t.n_in * t.n_out * (module.kernel_size[0] * module.kernel_size[1]
                                       if isinstance(module, SparseConv2d) else 1)
            nbytes = 4 * (size + (t.n_out if module.bias is not None else 0))
            rows.append(LayerExport(name, "linear" if isinstance(module, SparseLinear) else "conv2d", "dense",
                                    t.density, nbytes, nbytes))
    return OnnxExport(Path(path), tuple(rows), dense=True)
