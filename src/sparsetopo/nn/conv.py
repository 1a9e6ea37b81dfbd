"""Sparse convolutions (1-d, 2-d, 3-d, grouped): channel connectivity from a sparsetopo topology.

The paper fixes the connectivity of fully connected layers and names "other neural network
architectures (i.e. CNN, LSTM)" as the next step. For a convolution, sparsetopo reads the
topology over *channels*: a layer with ``in_channels`` inputs and ``out_channels`` outputs has
an ``in_channels x out_channels`` bipartite graph (the paper's ``n x m`` adjacency, with
channels for neurons), and every connected channel pair ``(i, j)`` holds a full kernel, while
an unconnected pair holds none. This is the expander convolution of X-Nets (Prabhu, Varma,
Namboodiri, 2018) with this paper's constructions: output channel ``j`` sums the convolutions
of the input channels that feed it. Degree ``k`` is the out-degree of every input *channel*,
so the density is ``k / out_channels``, as for :class:`~sparsetopo.nn.SparseLinear`.

**Grouped convolutions** (torch's ``groups = g``) already cut the channels into ``g``
independent groups of ``in_channels / g`` inputs and ``out_channels / g`` outputs. The topology
is then the graph *within* a group (``n_in = in_channels / g``, ``n_out = out_channels / g``),
and the same graph connects every group: the layer's channel graph is block diagonal, ``g``
copies of it. A depthwise convolution (one input channel per group) has no channel graph to
thin; :func:`sparsify` leaves it dense and says so.

**Weight.** ``weight`` has torch's shape, ``(out_channels, in_channels / groups, *kernel)``,
and the state_dict keys of torch's layer, so a dense checkpoint loads into a sparse layer
(masked on load: only its connected kernels are kept) and :meth:`to_dense` gives torch's layer
back. Pruned kernels are exactly 0 and stay 0: they start at 0, ``load_state_dict`` and
:meth:`set_connected_weights` write 0 there, and their gradient is exactly 0, so no optimizer
step moves them (weight decay and momentum of a 0 are 0). A ``mask`` buffer
``(out_channels, in_channels / groups, 1, ...)`` marks the connections; it is derived from the
topology on every move, ``to_empty`` included (:mod:`sparsetopo.nn.masking`).

**Backends** (``backend``):

* ``"masked"``: the dense convolution on ``weight``, whose gradient is multiplied by the mask
  in the backward pass. The forward pass reads ``weight`` as it is (pruned kernels are 0, see
  above), so it costs what torch's dense layer costs plus one pass over the weight gradient;
  multiplying the weight by the mask in the forward pass too would cost a second pass and a
  weight-sized allocation per step. Writing into ``weight`` directly (``weight.data``)
  bypasses the rule; :meth:`set_connected_weights` or ``load_state_dict`` keep it.
* ``"grouped"``: one grouped convolution over the gathered input channels of every output
  block (:mod:`sparsetopo.nn.conv_plan`), computing only the connected kernels. On a topology
  built on channel blocks it does ``density`` of the dense work.
* ``"auto"`` (the default): :func:`conv_backend` decides: grouped on channel blocks wide
  enough for their density (:data:`GROUPED_WHEN`), masked otherwise.
  ``benchmarks/bench_conv.py --model resnet18-like`` measures both against torch's layers, and
  ``--blocks`` the grouped form at other block sizes and densities, from which the rule comes.

Initial weights follow :mod:`sparsetopo.nn.init` with the kernel's receptive field ``r`` (the
product of ``kernel_size``) folded in as Keras does for convolutions: fans are ``n_in * r`` and
``n_out * r`` ("glorot"), or each connection's in-degree and out-degree times ``r``
("glorot_sparse"); biases start at zero.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo.errors import SparsetopoError, check_int
from sparsetopo.nn.conv_plan import ConvPlan
from sparsetopo.nn.init import connection_std, truncated_normal
from sparsetopo.nn.masking import DerivedMask, dense_twin, fill_mask
from sparsetopo.topology import Topology

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
CONV_BACKENDS = ("auto", "masked", "grouped")
#: ``backend="auto"`` runs a convolution grouped when its channel blocks hold at least
#: ``block`` channels on both sides and its density is at most ``density``, for one of these
#: ``(block, density)`` pairs. Narrow groups make the grouped kernels slow, and the gather
#: copies the input once per output block an input block feeds, so wider blocks pay at higher
#: densities (``bench_conv.py --model resnet18-like --blocks``).
GROUPED_WHEN = ((16, 0.5), (8, 0.25))


def conv_backend(topology: Topology, backend: str = "auto") -> str:
    """The backend a convolution on ``topology`` computes with: ``backend`` unless it is
    "auto", which is "grouped" on channel blocks wide enough for the density
    (:data:`GROUPED_WHEN`) and "masked" otherwise."""
    if backend not in CONV_BACKENDS:
        raise SparsetopoError(f"unknown convolution backend {backend!r}: choose one of {', '.join(CONV_BACKENDS)}")
    if backend != "auto":
        return backend
    block = min(topology.block_in, topology.block_out)
    fits = any(block >= b and topology.density <= d for b, d in GROUPED_WHEN)
    return "grouped" if fits else "masked"


class _MaskedGradient(torch.autograd.Function):
    """``weight`` unchanged in the forward pass; its gradient times ``mask`` in the backward."""

    @staticmethod
    def forward(ctx, weight, mask):
        ctx.save_for_backward(mask)
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None


def _ints(value, name: str, dims: int, low: int) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims
    if len(values) != dims:
        raise SparsetopoError(f"{name}={value!r} must be an int or {dims} ints")
    return tuple(check_int(name, v, low) for v in values)


class SparseConvNd(DerivedMask, nn.Module):
    """``convNd(x, weight) + bias`` where output channel ``j`` sees input channel ``i`` only
    when the topology connects ``i`` to ``j`` (module docstring). Use :class:`SparseConv1d`,
    :class:`SparseConv2d` or :class:`SparseConv3d`.

    Parameters
    ----------
    topology : channel connectivity within a group: ``n_in = in_channels / groups`` x
        ``n_out = out_channels / groups`` (the whole layer for ``groups=1``).
    kernel_size, stride, padding, dilation, padding_mode : as torch's layer (``padding`` may
        be an int, a tuple, "same" or "valid").
    groups : torch's channel groups; the topology connects the channels within each group.
    bias : whether the layer has a learnable bias.
    init : "glorot" or "glorot_sparse" (module docstring).
    gen : numpy Generator for the initial weights.
    backend : "auto", "masked" or "grouped" (module docstring); :attr:`backend` holds the one chosen.
    """

    dims: int = 0

    def __init__(self, topology: Topology, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros", init: str = "glorot",
                 gen: np.random.Generator | None = None, backend: str = "auto"):
        super().__init__()
        if padding_mode not in PADDING_MODES:
            raise SparsetopoError(f"unknown padding_mode {padding_mode!r}: choose one of {', '.join(PADDING_MODES)}")
        d = self.dims
        self.topology = topology
        self.backend = conv_backend(topology, backend)
        self.groups = check_int("groups", groups, 1)
        self.in_channels, self.out_channels = topology.n_in * self.groups, topology.n_out * self.groups
        self.kernel_size = _ints(kernel_size, "kernel_size", d, 1)
        self.stride = _ints(stride, "stride", d, 1)
        self.dilation = _ints(dilation, "dilation", d, 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise SparsetopoError(f"padding={padding!r} must be an int, a tuple, 'same' or 'valid'")
            if padding == "same" and set(self.stride) != {1}:
                raise SparsetopoError(f"padding='same' needs stride 1 (as torch's Conv{d}d), not {self.stride}")
            self.padding = padding
        else:
            self.padding = _ints(padding, "padding", d, 0)
        self.padding_mode = padding_mode
        self._edge_index = _edge_index(topology, self.groups)
        values = initial_kernels(topology, init, gen if gen is not None else np.random.default_rng(0),
                                 math.prod(self.kernel_size), self.groups)
        weight = torch.zeros(self.out_channels, topology.n_in, *self.kernel_size)
        weight[self._edge_index] = torch.from_numpy(values).reshape(-1, *self.kernel_size)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(self.out_channels)) if bias else None
        self.register_buffer("mask", torch.zeros(self.out_channels, topology.n_in, *(1,) * d), persistent=False)
        self._plan = ConvPlan.from_topology(topology, self.groups, d) if self.backend == "grouped" else None
        self.reset_mask()

    @property
    def kind(self) -> str:
        """"conv1d", "conv2d" or "conv3d": the layer's kind in summaries and files."""
        return f"conv{self.dims}d"

    def _conv(self, x, weight, bias, padding, groups):
        return getattr(F, self.kind)(x, weight, bias, self.stride, padding, self.dilation, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        padding = self.padding
        if self.padding_mode != "zeros":
            x, padding = F.pad(x, self._pad_amounts(), mode=self.padding_mode), 0
        if self.backend == "masked":
            weight = _MaskedGradient.apply(self.weight, self.mask) if self.weight.requires_grad else self.weight
            return self._conv(x, weight, self.bias, padding, self.groups)
        unbatched = x.dim() == self.dims + 1
        plan = self._device_plan()
        y = self._conv(plan.gather(x.unsqueeze(0) if unbatched else x), plan.tiles(self.weight),
                       self.bias if plan.outputs is None else None, padding, plan.conv_groups)
        if plan.outputs is not None:
            y = plan.keep_outputs(y)
            if self.bias is not None:
                y = y + self.bias.view(-1, *(1,) * self.dims)
        return y.squeeze(0) if unbatched else y

    def _device_plan(self) -> ConvPlan:
        if self._plan.weights.device != self.weight.device:
            self._plan = self._plan.to(self.weight.device)
        return self._plan

    def _check_input(self, x) -> None:
        """Refuse an input this layer cannot read, naming its shape, dtype or device."""
        label = f"{type(self).__name__}({self.in_channels}->{self.out_channels})"
        if not isinstance(x, torch.Tensor):
            raise SparsetopoError(f"{label} expects a torch.Tensor, got {type(x).__name__}")
        d = self.dims
        if x.dim() not in (d + 1, d + 2) or x.shape[-d - 1] != self.in_channels:
            spatial = ", ".join(("depth", "height", "width")[3 - d:] if d > 1 else ("length",))
            raise SparsetopoError(f"input of shape {tuple(x.shape)} does not fit {label}: expected (batch, "
                                  f"{self.in_channels}, {spatial}) or ({self.in_channels}, {spatial})")
        mixed = x.dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type)
        if mixed or x.device != self.weight.device:
            raise SparsetopoError(f"input is {x.dtype} on {x.device} but {label} is {self.weight.dtype} on "
                                  f"{self.weight.device}: convert one with .to()")

    def _pad_amounts(self, x=None) -> list[int]:
        """F.pad's amounts (last dimension first) for a non-zero padding mode, as torch pads
        (``x`` is not read: the amounts depend on the layer alone)."""
        if self.padding == "valid":
            return [0, 0] * self.dims
        out = []
        for i in reversed(range(self.dims)):
            if self.padding == "same":
                total = self.dilation[i] * (self.kernel_size[i] - 1)
                out += [total // 2, total - total // 2]
            else:
                out += [self.padding[i]] * 2
        return out

    # -- the connected kernels ---------------------------------------------------------------
    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(output channel, input channel within its group)`` of every connection, group by
        group, each in the topology's CSR order: ``weight[edge_index()]`` is the
        ``(groups * nnz, *kernel)`` stack of connected kernels."""
        return self._edge_index

    def reset_mask(self) -> None:
        """Rebuild ``mask`` from the topology, on its current device and dtype (it is derived
        state, not saved: :mod:`sparsetopo.nn.masking`)."""
        fill_mask(self.mask, self._edge_index)

    def connected_weights(self) -> torch.Tensor:
        """The kernels of the existing connections, ``(groups * nnz, *kernel)`` (:meth:`edge_index` order)."""
        return self.weight.detach()[self._edge_index]

    @torch.no_grad()
    def set_connected_weights(self, values: torch.Tensor) -> None:
        """Replace the connected kernels (``(groups * nnz, *kernel)``); the others become exactly 0."""
        expected = (self.groups * self.topology.nnz, *self.kernel_size)
        if tuple(values.shape) != expected:
            raise SparsetopoError(f"connected weights of shape {tuple(values.shape)} do not fit this layer: "
                                  f"expected {expected}")
        self.weight.zero_()
        self.weight[self._edge_index] = values.to(self.weight.dtype).to(self.weight.device)

    def dense_weight(self) -> torch.Tensor:
        """The effective weight of torch's layer (zero kernels where there is no connection)."""
        return (self.weight * self.mask).detach()

    def conv_kwargs(self) -> dict:
        """Torch's layer's arguments besides the channel counts (plain values)."""
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "padding_mode": self.padding_mode, "bias": self.bias is not None,
                "groups": self.groups}

    def to_dense(self) -> nn.Module:
        """Torch's layer (``nn.Conv1d`` / ``2d`` / ``3d``) computing the same function (pruned
        kernels as zeros), e.g. for export."""
        conv = getattr(nn, f"Conv{self.dims}d")
        return dense_twin(conv(self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
                               self.dilation, self.groups, bias=self.bias is not None,
                               padding_mode=self.padding_mode, device="meta"), self)

    def extra_repr(self) -> str:
        t = self.topology
        blocks = f", block={t.block_in}x{t.block_out}" if t.is_blocked else ""
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{t.construction}, {self.in_channels}->{self.out_channels} channels{groups}, "
                f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, k={t.k}{blocks}, density={t.density:.4f}, backend={self.backend}")


class SparseConv1d(SparseConvNd):
    """A sparse ``nn.Conv1d`` (:class:`SparseConvNd`); input ``(batch, channels, length)``."""

    dims = 1


class SparseConv2d(SparseConvNd):
    """A sparse ``nn.Conv2d`` (:class:`SparseConvNd`); input ``(batch, channels, height, width)``."""

    dims = 2


class SparseConv3d(SparseConvNd):
    """A sparse ``nn.Conv3d`` (:class:`SparseConvNd`); input ``(batch, channels, depth, height, width)``."""

    dims = 3


SPARSE_CONVS = {1: SparseConv1d, 2: SparseConv2d, 3: SparseConv3d}


def _edge_index(topology: Topology, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(output channel, input channel within its group) of every connection, group by group."""
    outputs = topology.indices.astype(np.int64)[None, :] + topology.n_out * np.arange(groups)[:, None]
    inputs = np.tile(topology.rows.astype(np.int64), groups)
    return torch.from_numpy(outputs.reshape(-1)), torch.from_numpy(inputs)


def initial_kernels(topology: Topology, init: str, gen: np.random.Generator, receptive_field: int,
                    groups: int = 1) -> np.ndarray:
    """Initial kernels of every connection, ``(groups * nnz, r)`` float32, group by group in CSR
    order (``r``: the kernel's receptive field).

    The per-connection standard deviation of :func:`sparsetopo.nn.init.connection_std` divided
    by ``sqrt(r)``: Keras' Glorot fans for a convolution are the channel fans times ``r``.
    """
    std = np.asarray(connection_std(topology, init), dtype=np.float64) / math.sqrt(receptive_field)
    z = truncated_normal(gen, groups * topology.nnz * receptive_field).reshape(groups, topology.nnz, receptive_field)
    return (z * (std[:, None] if std.ndim else std)).astype(np.float32).reshape(-1, receptive_field)


def depthwise_reason(module: nn.Module) -> str | None:
    """Why a torch convolution has no channel graph to sparsify (one input channel per group:
    a depthwise convolution), or None for any other layer."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.in_channels == module.groups:
        return (f"depthwise (groups={module.groups} = in_channels): each output channel reads one input "
                "channel, so there is no channel graph to sparsify")
    return None


def sparse_conv_like(conv: nn.Module, topology: Topology, *, backend: str = "auto", **kwargs) -> SparseConvNd:
    """The sparse layer replacing torch's convolution ``conv`` (same arguments, the topology
    within each group). ``backend`` is sparsify's: "masked" is kept, any other means "auto"."""
    return SPARSE_CONVS[len(conv.kernel_size)](topology, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                                               conv.groups, bias=conv.bias is not None, padding_mode=conv.padding_mode,
                                               backend="masked" if backend == "masked" else "auto", **kwargs)
