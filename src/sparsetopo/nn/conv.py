"""SparseConv2d: a convolution whose channel connectivity is a sparsetopo topology.

The paper fixes the connectivity of fully connected layers and names "other neural network
architectures (i.e. CNN, LSTM)" as the next step. For a convolution, sparsetopo reads the
topology over *channels*: a layer with ``in_channels`` inputs and ``out_channels`` outputs has
an ``in_channels x out_channels`` bipartite graph (the paper's ``n x m`` adjacency, with
channels for neurons), and every connected channel pair ``(i, j)`` holds a full
``kernel_size`` kernel, while an unconnected pair holds none. This is the expander
convolution of X-Nets (Prabhu, Varma, Namboodiri, 2018) with this paper's constructions:
output channel ``j`` sums the convolutions of the input channels that feed it. Degree ``k``
is the out-degree of every input *channel*, so the density is ``k / out_channels``, as for
:class:`~sparsetopo.nn.SparseLinear`.

The computation is the masked one: ``conv2d(x, weight * mask)`` with ``weight`` shaped like
``nn.Conv2d``'s ``(out_channels, in_channels, kH, kW)`` and a fixed 0/1 ``mask`` of shape
``(out_channels, in_channels, 1, 1)``. As for the masked linear layer, the gradient of a
pruned kernel is exactly 0, so no optimizer step without weight decay moves it off 0, and a
``weight`` loaded by ``load_state_dict`` (a dense ``nn.Conv2d`` checkpoint, say) keeps only its
connected kernels; the mask is rebuilt from the topology on every move, ``to_empty`` included
(:mod:`sparsetopo.nn.masking`). The
cost is that of the dense convolution (the mask multiply is one pass over the weight):
``benchmarks/bench_conv.py`` measures it against ``nn.Conv2d`` and against a gathered,
grouped form that does only the connected work (slower on CPU at the densities measured; see
docs/benchmarks.md), so masked is the only backend.

Initial weights follow :mod:`sparsetopo.nn.init` with the kernel's receptive field
``r = kH * kW`` folded in as Keras does for convolutions: fans are ``n_in * r`` and
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
from sparsetopo.nn.init import connection_std, truncated_normal
from sparsetopo.nn.masking import DerivedMask, dense_twin, fill_mask
from sparsetopo.topology import Topology

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value, name: str) -> tuple[int, int]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise SparsetopoError(f"{name}={value!r} must be an int or a pair of ints")
    return tuple(check_int(name, v, 0) for v in pair)


class SparseConv2d(DerivedMask, nn.Module):
    """``conv2d(x, weight * mask) + bias``: output channel ``j`` sees input channel ``i`` only
    when the topology connects ``i`` to ``j``.

    Parameters
    ----------
    topology : channel connectivity, ``n_in = in_channels`` x ``n_out = out_channels``.
    kernel_size, stride, padding, dilation, padding_mode : as ``nn.Conv2d`` (``padding`` may be
        an int, a pair, "same" or "valid"). ``groups`` is not offered: the topology is the
        channel grouping.
    bias : whether the layer has a learnable bias.
    init : "glorot" or "glorot_sparse" (module docstring).
    gen : numpy Generator for the initial weights.
    backend : "masked" or "auto" (which means masked); see the module docstring.
    """

    def __init__(self, topology: Topology, kernel_size, stride=1, padding=0, dilation=1, bias: bool = True,
                 padding_mode: str = "zeros", init: str = "glorot", gen: np.random.Generator | None = None,
                 backend: str = "masked"):
        super().__init__()
        if backend not in ("auto", "masked"):
            raise SparsetopoError(f"SparseConv2d computes with backend='masked' (or 'auto'), not {backend!r}: "
                                  "the gathered sparse form measured slower on CPU (docs/benchmarks.md)")
        if padding_mode not in PADDING_MODES:
            raise SparsetopoError(f"unknown padding_mode {padding_mode!r}: choose one of {', '.join(PADDING_MODES)}")
        self.topology = topology
        self.backend = "masked"
        self.in_channels, self.out_channels = topology.n_in, topology.n_out
        self.kernel_size = _pair(kernel_size, "kernel_size")
        if min(self.kernel_size) < 1:
            raise SparsetopoError(f"kernel_size={kernel_size!r} must be at least 1")
        self.stride = _pair(stride, "stride")
        if min(self.stride) < 1:
            raise SparsetopoError(f"stride={stride!r} must be at least 1")
        self.dilation = _pair(dilation, "dilation")
        if min(self.dilation) < 1:
            raise SparsetopoError(f"dilation={dilation!r} must be at least 1")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise SparsetopoError(f"padding={padding!r} must be an int, a pair, 'same' or 'valid'")
            if padding == "same" and self.stride != (1, 1):
                raise SparsetopoError("padding='same' needs stride 1 (as nn.Conv2d)")
            self.padding = padding
        else:
            self.padding = _pair(padding, "padding")
        self.padding_mode = padding_mode
        self._edge_index = (torch.from_numpy(topology.indices.astype(np.int64)),  # output channel of each edge
                            torch.from_numpy(topology.rows.astype(np.int64)))     # input channel, CSR order
        kh, kw = self.kernel_size
        values = initial_kernels(topology, init, gen if gen is not None else np.random.default_rng(0), kh * kw)
        weight = torch.zeros(topology.n_out, topology.n_in, kh, kw)
        weight[self._edge_index] = torch.from_numpy(values).reshape(-1, kh, kw)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(torch.zeros(topology.n_out)) if bias else None
        self.register_buffer("mask", torch.zeros(topology.n_out, topology.n_in, 1, 1), persistent=False)
        self.reset_mask()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        weight = self.weight * self.mask
        if self.padding_mode != "zeros":
            return F.conv2d(F.pad(x, self._pad_amounts(x), mode=self.padding_mode), weight, self.bias,
                            self.stride, 0, self.dilation)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation)

    def _check_input(self, x) -> None:
        """Refuse an input this layer cannot read, naming its shape, dtype or device."""
        label = f"SparseConv2d({self.in_channels}->{self.out_channels})"
        if not isinstance(x, torch.Tensor):
            raise SparsetopoError(f"{label} expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() not in (3, 4) or x.shape[-3] != self.in_channels:
            raise SparsetopoError(f"input of shape {tuple(x.shape)} does not fit {label}: expected (batch, "
                                  f"{self.in_channels}, height, width) or ({self.in_channels}, height, width)")
        mixed = x.dtype != self.weight.dtype and not torch.is_autocast_enabled(x.device.type)
        if mixed or x.device != self.weight.device:
            raise SparsetopoError(f"input is {x.dtype} on {x.device} but {label} is {self.weight.dtype} on "
                                  f"{self.weight.device}: convert one with .to()")

    def _pad_amounts(self, x) -> list[int]:
        """F.pad's (left, right, top, bottom) for a non-zero padding mode, as nn.Conv2d pads."""
        if self.padding == "valid":
            return [0, 0, 0, 0]
        if self.padding == "same":
            out = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):
                total = d * (k - 1)
                out += [total // 2, total - total // 2]
            return out
        ph, pw = self.padding
        return [pw, pw, ph, ph]

    # -- the connected kernels ---------------------------------------------------------------
    def edge_index(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(out_channels, in_channels)`` of every connection, CSR order (by input channel):
        ``weight[edge_index()]`` is the ``(nnz, kH, kW)`` stack of connected kernels."""
        return self._edge_index

    def reset_mask(self) -> None:
        """Rebuild ``mask`` from the topology, on its current device and dtype (it is derived
        state, not saved: :mod:`sparsetopo.nn.masking`)."""
        fill_mask(self.mask, self._edge_index)

    def connected_weights(self) -> torch.Tensor:
        """The kernels of the existing connections, ``(nnz, kH, kW)`` in the topology's CSR order."""
        return self.weight.detach()[self._edge_index]

    @torch.no_grad()
    def set_connected_weights(self, values: torch.Tensor) -> None:
        """Replace the connected kernels (``(nnz, kH, kW)``, CSR order); the others stay exactly 0."""
        expected = (self.topology.nnz, *self.kernel_size)
        if tuple(values.shape) != expected:
            raise SparsetopoError(f"connected weights of shape {tuple(values.shape)} do not fit this layer: "
                                  f"expected {expected}")
        self.weight.zero_()
        self.weight[self._edge_index] = values.to(self.weight.dtype).to(self.weight.device)

    def dense_weight(self) -> torch.Tensor:
        """The effective ``nn.Conv2d`` weight (zero kernels where there is no connection)."""
        return (self.weight * self.mask).detach()

    def conv_kwargs(self) -> dict:
        """The ``nn.Conv2d`` arguments of this layer besides the channel counts (plain values)."""
        return {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str) else list(self.padding),
                "dilation": list(self.dilation), "padding_mode": self.padding_mode, "bias": self.bias is not None}

    def to_dense(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` computing the same function (pruned kernels as zeros), e.g. for export."""
        return dense_twin(nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                                    self.padding, self.dilation, bias=self.bias is not None,
                                    padding_mode=self.padding_mode, device="meta"), self)

    def extra_repr(self) -> str:
        t = self.topology
        return (f"{t.construction}, {t.n_in}->{t.n_out} channels, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, k={t.k}, "
                f"density={t.density:.4f}, backend={self.backend}")


def initial_kernels(topology: Topology, init: str, gen: np.random.Generator, receptive_field: int) -> np.ndarray:
    """Initial kernels of every connection, ``(nnz, r)`` float32 in CSR order (``r = kH * kW``).

    The per-connection standard deviation of :func:`sparsetopo.nn.init.connection_std` divided
    by ``sqrt(r)``: Keras' Glorot fans for a convolution are the channel fans times ``r``.
    """
    std = np.asarray(connection_std(topology, init), dtype=np.float64) / math.sqrt(receptive_field)
    z = truncated_normal(gen, topology.nnz * receptive_field).reshape(topology.nnz, receptive_field)
    return (z * (std[:, None] if std.ndim else std)).astype(np.float32)
