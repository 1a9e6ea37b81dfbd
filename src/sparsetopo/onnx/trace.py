"""Tracing: torch's exporter writes the model with every sparse layer as one opaque node.

Each place that holds a sparse layer is replaced by a :class:`_Placeholder` whose forward
records the call and runs :class:`_Marker`, an autograd ``Function`` whose ONNX symbolic is one
``sparsetopo::Layer`` node carrying the call's number. :mod:`sparsetopo.onnx.sparse` then
replaces each such node by standard operators.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import SparseConv2d, SparseConvNd
from sparsetopo.nn.sparsify import MADE_LAYERS

#: The ONNX domain of the opaque nodes; none is left in a written file.
DOMAIN = "sparsetopo"


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
        if not isinstance(layer, SparseConv2d):   # a linear layer, of single connections or of tiles
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


def has_sparse_form(layer: nn.Module) -> bool:
    """Whether the sparse export writes ``layer`` in a sparse form. The convolution forms are
    written for 2-d convolutions without groups; other convolutions (1-d, 3-d, grouped) go
    through torch's exporter as the dense layer computing the same function."""
    return not isinstance(layer, SparseConvNd) or (isinstance(layer, SparseConv2d) and layer.groups == 1)


def with_placeholders(model: nn.Module) -> tuple[nn.Module, list[_Call], list[str]]:
    """A CPU eval-mode copy of ``model`` with every place that holds a sparse layer replaced by
    a :class:`_Placeholder`; the list the placeholders record their calls in (filled by the
    trace); and the sparse layers' names in module order.

    A layer held in two places (``nn.Sequential(lin, act, lin)``) gets one placeholder per
    place, and every call its own node: torch's tracer fails on one autograd Function node
    traced twice from the same module.
    """
    copied = copy.deepcopy(model).cpu().eval()
    names = {id(module): name for name, module in copied.named_modules() if isinstance(module, MADE_LAYERS)}
    calls: list[_Call] = []
    densified: dict[int, nn.Module] = {}
    for path, module in list(copied.named_modules(remove_duplicate=False)):
        if not isinstance(module, MADE_LAYERS):
            continue
        if has_sparse_form(module):
            holder = _Placeholder(module, names[id(module)], path, calls)
        else:   # written as torch's dense layer, pruned kernels as zeros; listed with form "dense"
            holder = densified.setdefault(id(module), module.to_dense())
        if path == "":
            copied = holder
            break
        parent, _, attr = path.rpartition(".")
        setattr(copied.get_submodule(parent) if parent else copied, attr, holder)
    return copied, calls, list(names.values())


def holds_placeholders(model: nn.Module) -> bool:
    """Whether :func:`with_placeholders` left any layer to be written in a sparse form."""
    return any(isinstance(module, _Placeholder) for module in model.modules())


def trace_to_onnx(model: nn.Module, example_input: torch.Tensor, opset: int, **extra):
    """torch's TorchScript exporter into memory: an ``onnx.ModelProto`` with a dynamic batch."""
    import onnx

    buffer = io.BytesIO()
    kwargs = dict(input_names=["input"], output_names=["output"], opset_version=opset,
                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **extra)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, same graph every time
    unsupported = getattr(getattr(torch.onnx, "errors", None), "UnsupportedOperatorError", ())
    try:
        with warnings.catch_warnings(), _no_fused_attention():
            warnings.simplefilter("ignore")  # torch announces its newer exporter; the library never prints
            torch.onnx.export(model, (example_input.cpu(),), buffer, **kwargs)
    except unsupported as exc:  # an operator of the model's own code: sparse layers are sparsetopo's nodes
        reason = str(exc).strip().splitlines()[0]
        raise SparsetopoError(f"torch's ONNX exporter cannot write this model at opset {opset}: {reason}. The "
                              "operator comes from the model's own forward, so dense=True fails alike: change "
                              "the forward to avoid it, or try another opset") from None
    return onnx.load_from_string(buffer.getvalue())


@contextlib.contextmanager
def _no_fused_attention():
    """torch's fused inference kernels of ``nn.TransformerEncoderLayer``, ``nn.TransformerEncoder``
    and ``nn.MultiheadAttention`` switched off for the trace, and back as they were after it.

    Without gradients (the sparse export traces under ``no_grad``) those modules call one fused
    operator that has no ONNX form, and they read ``linear1.weight`` directly, which a
    placeholder does not have; the module-by-module path they take instead is what ONNX writes.
    """
    mha = getattr(torch.backends, "mha", None)
    if mha is None or not hasattr(mha, "set_fastpath_enabled"):  # a torch without the switch
        yield
        return
    was = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(was)
