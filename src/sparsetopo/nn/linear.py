"""SparseLinear: a layer whose connections are fixed by a Topology.

The paper multiplies the weight by the 0/1 adjacency "at each update" so that pruned
connections stay exactly zero. The ``masked`` backend does this as a dense weight times a
fixed mask buffer in the forward pass: the gradient of a pruned weight is then exactly 0, so
no optimizer step (momentum included, no weight decay) ever moves it off 0.

The ``sparse`` backend stores only the connected weights, as a 1-D parameter ``values`` in the
topology's CSR order, and computes with the numba kernels of :mod:`sparsetopo.kernels.layer`
(through :mod:`sparsetopo.nn.sparse_autograd`): time and memory, parameters and optimizer
state included, grow with the number of connections, not with ``n_in x n_out``. Pruned
connections do not exist there, so they cannot move. ``auto`` picks one of the two by the rule
of :func:`sparsetopo.nn.plan.layer_backends` (decided per network; a lone layer is a network of
one). Which kernel each call of a sparse-backend layer runs is :func:`sparsetopo.nn.plan.call_path`'s
choice; the layer records it in :attr:`SparseLinear.last_path`. Both backends draw the same initial
weights from the same generator, so they train the same network up to float rounding.

The weight has ``nn.Linear``'s shape and meaning: ``weight[j, i]`` is the connection from
input ``i`` to output ``j``, ``(n_out, n_in)``, and ``y = x W^T + b``; the topology is the
paper's ``n_in x n_out`` adjacency, so connection ``(i, j)`` of the topology is ``weight[j, i]``.
Both backends offer ``nn.Linear``'s ``state_dict`` (``weight`` of shape ``(n_out, n_in)``, zeros at
pruned connections, and ``bias``), so a checkpoint moves between a sparsified model and its
dense twin either way; loading keeps only the connected entries (the others become exactly 0).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.init import initial_weights
from sparsetopo.nn.conv1d_layout import read_conv1d_layout
from sparsetopo.nn.masking import DerivedMask, dense_twin, fill_mask
from sparsetopo.nn.plan import call_path, layer_backends
from sparsetopo.nn.sparse_autograd import sparse_linear, vector_forward, vector_weights
from sparsetopo.nn.sparse_index import SparseIndex, check_sparse_inputs
from sparsetopo.topology import Topology


_F32 = torch.float32


class SparseLinear(DerivedMask, nn.Module):
    """``y = x @ (W * M).T + b``: ``W`` and the fixed 0/1 ``M`` are ``(n_out, n_in)``, ``M`` the
    topology's adjacency transposed.

    Parameters
    ----------
    topology : the layer's connectivity (n_in x n_out).
    init : "glorot" (the paper's, dense fan-in/out) or "glorot_sparse" (per-connection fans).
    gen : numpy Generator for the initial weights; the same generator gives the same weights
        on every backend.
    backend : "masked" (dense weight times mask; parameter ``weight``, buffer ``mask``),
        "sparse" (connected weights only; parameter ``values``) or "auto" (the one
        :func:`~sparsetopo.nn.plan.layer_backends` predicts faster for this layer's shape,
        density and ``device``). :attr:`backend` holds the one in use. :class:`SparseMLP`
        decides for all its layers at once and passes each a concrete backend.
    device : where the layer will compute; only informs "auto" (CUDA means masked).
    bias : whether the layer has a learnable bias (``nn.Linear(bias=False)`` has none).
    batch_size : the examples per training step the layer will see; only informs "auto" (None:
        the paper's 32). It is an argument, not learnt from the first forward, because the
        backend decides which parameters the layer has (``weight`` or ``values``), and an
        optimizer is built from them before any forward runs.

    Attributes
    ----------
    dense_when_faster : whether an inference call (no gradient wanted) of the sparse backend may
        run on the dense matrix of the connected weights where the cost model predicts it
        faster (same weights, the masked backend's numbers). True when built with "auto"; a
        layer asked for "sparse" always runs the sparse kernels. The dense matrix, and the
        CSC-ordered copy the one-example ("vector") kernel reads, are rebuilt when torch's
        version counter of ``values`` moves (optimizers, ``copy_``, loading, the fused engines);
        code writing ``values`` through numpy or ``values.data`` (which torch does not count)
        calls ``torch.autograd.graph.increment_version(layer.values)`` after.
    last_path : the path (a key of :data:`sparsetopo.nn.plan.PATHS`) the last call ran, None
        before the first.

    Notes
    -----
    ``state_dict`` is ``nn.Linear``'s on both backends: ``weight`` ``(n_out, n_in)`` and
    ``bias``. The sparse backend writes its ``values`` out as that dense matrix (zeros at pruned
    connections; the one place it allocates ``n_in x n_out``, as a checkpoint of the dense twin
    would) and reads back the connected entries of a ``weight``, or a ``values`` vector in CSR
    order. The masked backend zeroes the pruned entries of a loaded ``weight``. So a dense
    ``nn.Linear`` checkpoint loads into a sparsified model, and a sparsified model's checkpoint
    into the dense model, on either backend. :func:`sparsetopo.save` writes only the connected
    weights instead.

    ``mask`` (and the constant zero bias of a layer without bias) is derived state, not
    saved: it is rebuilt from the topology whenever the layer is moved or converted
    (``.to``, ``.to_empty``, ``.half``, ...), so a layer built on the ``meta`` device and
    materialised with ``to_empty`` computes with the right mask.
    """

    def __init__(self, topology: Topology, init: str = "glorot", gen: np.random.Generator | None = None,
                 backend: str = "masked", device=None, bias: bool = True, batch_size: int | None = None):
        super().__init__()
        self.topology = topology
        self.backend = layer_backends([topology], backend, device, batch_size=batch_size)[0]
        self.dense_when_faster = backend == "auto"
        self.last_path: str | None = None
        self._paths: dict = {}   # (batch, gradient wanted, dense_when_faster) -> path: the plan is fixed for both
        self._copies: dict = {}   # path -> (values' version and data pointer, the weights laid out for it); "bias" -> its numpy view
        self._values_in_state = False   # see connected_state()
        values = initial_weights(topology, init, gen if gen is not None else np.random.default_rng(0))
        self.bias = nn.Parameter(torch.zeros(topology.n_out)) if bias else None
        if not bias:  # the kernels always add a bias: a constant zero one, not trained, not saved
            self.register_buffer("_zero_bias", torch.zeros(topology.n_out), persistent=False)
        if self.backend == "sparse":
            self.values = nn.Parameter(torch.from_numpy(values))
            self.index = SparseIndex.from_topology(topology)  # built once; plain arrays, not state
            return
        self._edge_index = edge_index_of(topology)
        weight = torch.zeros(topology.n_out, topology.n_in)
        weight[self._edge_index] = torch.from_numpy(values)
        self.weight = nn.Parameter(weight)
        self.register_buffer("mask", torch.zeros(topology.n_out, topology.n_in), persistent=False)
        self.reset_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        if self.backend == "masked":
            record_path(self, "masked")
            bias = self.bias
            return F.linear(x, self.weight * self.mask, self._zero_bias if bias is None else bias)
        values, bias = self._sparse_parameters()
        if bias is None:
            bias = self._zero_bias
        grad = torch.is_grad_enabled() and (x.requires_grad or values.requires_grad or bias.requires_grad)
        shape = x.shape
        batch = shape[0] if len(shape) == 2 else x.numel() // max(shape[-1], 1)
        path = self._paths.get((batch, grad, self.dense_when_faster)) or self.path_for(batch, grad)
        record_path(self, path)
        if path == "dense":
            try:
                return F.linear(x, self._weights_for("dense", values), bias)
            except RuntimeError:  # name the problem as the sparse kernels would (costs nothing when it works)
                check_sparse_inputs(x.reshape(-1, x.shape[-1]), values, bias, self.index)
                raise
        if path == "vector":
            return self._vector_forward(x, values, bias)
        return sparse_linear(x, values, bias, self.index, path, grad)

    def _vector_forward(self, x: torch.Tensor, values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """One example on the "vector" path. The common case (one float32 CPU row of ``n_in``,
        no gradient, the weights float32 on CPU) goes straight to the kernel with the CSC weights
        and a numpy view of the bias kept between calls: at batch 1 the layer's Python is a
        visible share of the call. Anything else goes through ``sparse_linear``, which reshapes,
        checks and names what it cannot compute."""
        if (x.dim() == 2 and x.shape[1] == self.topology.n_in and x.dtype is _F32 and x.is_cpu
                and x.layout is torch.strided and not x.requires_grad and values.dtype is _F32 and values.is_cpu):
            b = self._bias_view(bias)
            if b is not None:
                return vector_forward(x.numpy(), self._weights_for("vector", values), b, self.index)
        return sparse_linear(x, values, bias, self.index, "vector", False, csc=self._weights_for("vector", values))

    def _bias_view(self, bias: torch.Tensor) -> np.ndarray | None:
        """A numpy view of ``bias`` (it follows in-place updates by itself), remade when its
        storage is replaced (a new Parameter, ``.data =``, ``.to``); None when the kernel cannot
        read it as it is. The view keeps its storage alive, so no other tensor can start at the
        address it holds: the data pointer alone tells (as for a block layer's views)."""
        held = self._copies.get("bias")
        if held is not None and held[0] == bias.data_ptr():
            return held[1]
        if bias.dtype is not _F32 or not bias.is_cpu or bias.shape != (self.topology.n_out,):
            return None
        view = bias.detach().numpy()
        self._copies["bias"] = (bias.data_ptr(), view)
        return view

    def _sparse_parameters(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(values, bias)``, read from the parameter table directly: nn.Module's attribute
        lookup (``self.values``) costs half a microsecond each, a tenth of a small layer's call
        at batch 1. A parametrization moves them out of the table; the lookup finds them then."""
        table = self._parameters
        try:
            return table["values"], table["bias"]
        except KeyError:
            return self.values, self.bias

    def path_for(self, batch: int, grad: bool) -> str:
        """The path (a key of :data:`sparsetopo.nn.plan.PATHS`) a call on ``batch`` examples runs,
        with a gradient wanted or not: :func:`sparsetopo.nn.plan.call_path`'s answer, remembered."""
        if self.backend == "masked":
            return "masked"
        key = (batch, grad, self.dense_when_faster)
        path = self._paths.get(key)
        if path is None:
            if len(self._paths) > 64:  # batch sizes come and go (a last partial batch): forget them all
                self._paths.clear()
            t = self.topology
            path = self._paths[key] = call_path(t.nnz, t.n_in, t.n_out, batch, grad, self.dense_when_faster)
        return path

    def _weights_for(self, path: str, v: torch.Tensor):
        """The connected weights ``v`` laid out for an inference ``path``: the dense ``(n_out,
        n_in)`` weight for "dense", a CSC-ordered numpy copy for "vector". Rebuilt only when they
        change (torch's version counter: optimizers, ``copy_``, loading; the fused engines, which
        write through numpy, bump it themselves)."""
        stamp = (v._version, v.data_ptr())
        held = self._copies.get(path)
        if held is None or held[0] != stamp:
            copy = (self.dense_weight() if path == "dense"
                    else vector_weights(v, self.index))
            held = self._copies[path] = (stamp, copy)
        return held[1]

    def _check_input(self, x) -> None:
        """Refuse an input this layer cannot read, naming it, so that both backends fail alike
        (the sparse kernels would otherwise read past a narrower input). The sparse backend's
        widths, dtypes and devices are checked where its autograd Function starts
        (:func:`~sparsetopo.nn.sparse_index.check_sparse_inputs`); the common case is one
        expression and the messages are worked out only when it fails."""
        if self.backend == "sparse":
            if isinstance(x, torch.Tensor) and x.dim() and not is_functorch_wrapped(x):
                return
        elif (isinstance(x, torch.Tensor) and x.dim() and x.shape[-1] == self.topology.n_in
              and x.dtype is self.weight.dtype and x.device == self.weight.device):
            return
        label = f"SparseLinear({self.topology.n_in}->{self.topology.n_out})"
        if not isinstance(x, torch.Tensor):
            raise SparsetopoError(f"{label} expects a torch.Tensor, got {type(x).__name__}")
        if self.backend == "sparse" and is_functorch_wrapped(x):
            raise SparsetopoError(f"{label} with backend='sparse' does not support torch.func transforms (vmap, "
                                  "grad, jacrev, ...): use backend='masked' for them")
        if x.dim() == 0 or x.shape[-1] != self.topology.n_in:
            raise SparsetopoError(f"input of shape {tuple(x.shape)} does not fit {label}: its last dimension "
                                  f"must be {self.topology.n_in}")
        if x.device != self.weight.device or not torch.is_autocast_enabled(x.device.type):  # autocast casts itself
            raise SparsetopoError(f"input is {x.dtype} on {x.device} but {label} is {self.weight.dtype} on "
                                  f"{self.weight.device}: convert one with .to()")

    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outputs, inputs)``: the output and input neuron of every connection (int64, in the
        topology's CSR order, i.e. by input), for indexing the ``(n_out, n_in)`` weight:
        ``weight[edge_index()]`` are the connected weights. Kept by the masked backend; the
        sparse one builds it on demand (its memory is meant to be its index arrays only)."""
        return self._edge_index if self.backend == "masked" else edge_index_of(self.topology)

    def connected_weights(self) -> torch.Tensor:
        """The weights of the existing connections, in the topology's CSR order (a copy)."""
        if self.backend == "sparse":
            return self.values.detach().clone()
        return self.weight.detach()[self._edge_index]

    @torch.no_grad()
    def set_connected_weights(self, values: torch.Tensor) -> None:
        """Replace the weights of the existing connections (length nnz, CSR order); on the
        masked backend every other entry of ``weight`` is set to exactly 0."""
        if tuple(values.shape) != (self.topology.nnz,):
            raise SparsetopoError(f"connected weights of shape {tuple(values.shape)} do not fit this layer: "
                                  f"expected ({self.topology.nnz},)")
        if self.backend == "sparse":
            self.values.copy_(values)
            return
        self.weight.zero_()
        self.weight[self._edge_index] = values.to(self.weight.dtype).to(self.weight.device)

    def to_dense(self) -> nn.Linear:
        """An ``nn.Linear`` computing the same function (pruned weights as zeros), e.g. for export."""
        return dense_twin(nn.Linear(self.topology.n_in, self.topology.n_out, bias=self.bias is not None,
                                    device="meta"), self)

    def dense_weight(self) -> torch.Tensor:
        """The effective weight, ``(n_out, n_in)`` as ``nn.Linear``'s (zeros where there is no
        connection)."""
        if self.backend == "sparse":
            dense = torch.zeros(self.topology.n_out, self.topology.n_in, dtype=self.values.dtype,
                                device=self.values.device)
            dense[self.edge_index()] = self.values.detach()
            return dense
        return (self.weight * self.mask).detach()

    # -- derived state and nn.Linear's state_dict ----------------------------------------------
    @torch.no_grad()
    def reset_mask(self) -> None:
        """Rebuild the derived buffers from the topology, on their current device and dtype:
        the masked backend's ``mask`` and the zero bias of a layer without bias."""
        if self.backend == "masked":
            fill_mask(self.mask, self._edge_index)
        if self.bias is None and self._zero_bias.device.type != "meta":
            self._zero_bias.zero_()

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if self.backend != "sparse" or self._values_in_state:
            return super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "weight"] = self.dense_weight()   # nn.Linear's view (class docstring)
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    #: The state_dict holds ``weight`` as ``(in, out)``, for a layer that replaced a Conv1D (nn.conv1d_layout).
    conv1d_layout = False

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if self.conv1d_layout:
            read_conv1d_layout(self, state_dict, prefix)
        key = prefix + "weight"
        weight = state_dict.get(key)
        if self.backend == "sparse" and isinstance(weight, torch.Tensor):   # masked: DerivedMask's
            shape = (self.topology.n_out, self.topology.n_in)
            state_dict.pop(key)
            if tuple(weight.shape) == shape:   # its connected entries, in CSR order
                state_dict[prefix + "values"] = weight[tuple(i.to(weight.device) for i in self.edge_index())]
            else:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)} from "
                                  f"checkpoint, the shape in current model is {shape} (out_features, in_features)")
                state_dict[prefix + "values"] = self.values.detach()   # already reported: no second error
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def parameter_bytes(self) -> int:
        """Bytes held by this layer's parameters (optimizer state costs as much again per slot)."""
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def structure_bytes(self) -> int:
        """Bytes describing the connectivity: the dense mask, or the sparse index arrays."""
        if self.backend == "sparse":
            return self.index.nbytes()
        return self.mask.numel() * self.mask.element_size()

    def state_bytes(self, optimizer_slots: int = 1) -> int:
        """Training memory of this layer: parameters, ``optimizer_slots`` copies of them (1 for
        SGD with momentum) and the connectivity. Grows with nnz on the sparse backend and with
        ``n_in x n_out`` on the masked one."""
        return self.parameter_bytes() * (1 + optimizer_slots) + self.structure_bytes()

    def extra_repr(self) -> str:
        t = self.topology
        return f"{t.construction}, {t.n_in}->{t.n_out}, k={t.k}, density={t.density:.4f}, backend={self.backend}"


@contextmanager
def connected_state(model: nn.Module):
    """Within it, ``model.state_dict()`` gives each sparse-backend :class:`SparseLinear`'s
    ``values`` vector instead of the dense ``(n_out, n_in)`` weight, allocating nothing: for
    writers that store the connected weights themselves, as :func:`sparsetopo.save` does."""
    layers = [m for m in model.modules() if isinstance(m, SparseLinear) and m.backend == "sparse"]
    for layer in layers:
        layer._values_in_state = True
    try:
        yield model
    finally:
        for layer in layers:
            layer._values_in_state = False


is_functorch_wrapped = torch._C._functorch.is_functorch_wrapped_tensor  # inside vmap, grad, ...


def record_path(layer: nn.Module, path: str) -> None:
    """Set ``layer.last_path``: a plain attribute, so nn.Module's ``__setattr__`` (which looks for
    parameters, buffers and submodules of that name first) is skipped: at batch 1 it cost as much
    as a tenth of the layer."""
    object.__setattr__(layer, "last_path", path)


def edge_index_of(topology: Topology) -> tuple[torch.Tensor, torch.Tensor]:
    """(output, input) of every connection in CSR order: indices into an (n_out, n_in) weight."""
    return torch.from_numpy(topology.indices.astype(np.int64)), torch.from_numpy(topology.rows.astype(np.int64))
