"""The grouped form of a sparse convolution: only the connected channel blocks are convolved.

A channel topology on blocks (:mod:`sparsetopo.topology.blocks`) connects input block ``I``
(``b_in`` channels) to output block ``J`` (``b_out`` channels) by a dense tile of kernels.
Output block ``J`` then reads only its ``D`` input blocks, so the layer is one *grouped*
convolution: the input blocks of every output block are gathered side by side
(``index_select`` of channels; none when the gather is the identity, as for ``k = 1`` on a
square regular rotating graph), and ``conv(gathered, tiles, groups = q)`` computes every
output block from its own ``D * b_in`` channels. The tiles are gathered from the layer's
dense ``weight`` (torch's layout, ``(out_channels, in_channels / groups, *kernel)``) on each
call, so the weight keeps torch's shape and state_dict, and its gradient is exactly 0 off
the tiles (the gather's backward writes only the gathered entries).

Padding. An output block with fewer than ``D`` input blocks (random constructions, or ``k``
output blocks per input block with ``p != q``), and the missing channels of a ragged last
input block, are *padded slots*: they read channel 0 and weight entry 0, and a 0/1 slot mask
multiplies those tile entries by 0, so they add nothing and send no gradient. A ragged last
output block is padded with output channels that are cut off afterwards. A grouped layer
(``groups`` > 1 in torch's sense) repeats its per-group graph in every group: the plan
lays the groups' blocks side by side.

Pure index arithmetic in numpy, applied by torch ops: the same code runs on any device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sparsetopo.topology import Topology
from sparsetopo.topology.blocks import n_blocks


@dataclass(frozen=True)
class ConvPlan:
    """Index tensors of one grouped-form convolution (module docstring).

    ``channels``: the input channel of every gathered slot, ``(groups * q * D * b_in,)``, or
    None where the gather is the identity; ``weights``: the flat ``(out, in/groups)`` position
    of every tile entry, ``(groups * q * b_out * D * b_in,)``; ``slot_mask``: 1 at real tile
    entries and 0 at padded ones (None without padding), shaped like the gathered tiles;
    ``outputs``: the padded output channels to keep (None when none are padded);
    ``conv_groups``: groups of the grouped convolution, ``groups * q``; ``slot_width``:
    ``D * b_in``; ``out_width``: ``q * b_out`` padded output channels per group.
    """

    channels: torch.Tensor | None
    weights: torch.Tensor
    slot_mask: torch.Tensor | None
    outputs: torch.Tensor | None
    conv_groups: int
    slot_width: int
    out_width: int

    def to(self, device) -> "ConvPlan":
        move = (lambda t: None if t is None else t.to(device))
        return ConvPlan(move(self.channels), move(self.weights), move(self.slot_mask), move(self.outputs),
                        self.conv_groups, self.slot_width, self.out_width)

    @classmethod
    def from_topology(cls, t: Topology, groups: int, n_kernel_dims: int) -> "ConvPlan":
        b_in, b_out = t.block_in, t.block_out
        p, q = n_blocks(t.n_in, b_in), n_blocks(t.n_out, b_out)
        graph = t.block_graph
        heads = graph.indices.astype(np.int64)            # output block of each block edge
        tails = graph.rows.astype(np.int64)               # its input block
        order = np.lexsort((tails, heads))
        degree = np.bincount(heads, minlength=q)
        width = max(int(degree.max()), 1)
        slots = np.full((q, width), -1, dtype=np.int64)   # input block of each (output block, slot); -1 padded
        position = np.arange(order.size) - np.repeat(np.cumsum(degree) - degree, degree)
        slots[heads[order], position] = tails[order]
        # per group: the channel (within the group) of every (J, slot, c) and whether it is real
        channel = slots[:, :, None] * b_in + np.arange(b_in)[None, None, :]           # (q, D, b_in)
        real_in = (slots[:, :, None] >= 0) & (channel < t.n_in)
        out_channel = np.arange(q)[:, None] * b_out + np.arange(b_out)[None, :]       # (q, b_out)
        real_out = out_channel < t.n_out
        # tile entry (J, r, s, c): weight row J*b_out + r, column channel[J, s, c]
        real = real_out[:, :, None, None] & real_in[:, None, :, :]                    # (q, b_out, D, b_in)
        rows = np.broadcast_to(out_channel[:, :, None, None], real.shape)
        cols = np.broadcast_to(channel[:, None, :, :], real.shape)
        flat = np.where(real, rows * t.n_in + cols, 0)
        group = np.arange(groups)
        weights = (group[:, None] * t.n_out * t.n_in + flat.reshape(1, -1)).reshape(-1)
        gathered = (group[:, None] * t.n_in + np.where(real_in, channel, 0).reshape(1, -1)).reshape(-1)
        identity = bool(real_in.all()) and np.array_equal(gathered, np.arange(groups * t.n_in))
        kept = (group[:, None] * q * b_out + out_channel[real_out].reshape(1, -1)).reshape(-1)
        kernel_ones = (1,) * n_kernel_dims
        slot_mask = None
        if not real.all():
            mask = np.broadcast_to(real.reshape(1, q * b_out, width * b_in), (groups, q * b_out, width * b_in))
            slot_mask = torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32)).reshape(
                groups * q * b_out, width * b_in, *kernel_ones)
        return cls(channels=None if identity else torch.from_numpy(gathered),
                   weights=torch.from_numpy(weights), slot_mask=slot_mask,
                   outputs=None if bool(real_out.all()) else torch.from_numpy(kept),
                   conv_groups=groups * q, slot_width=width * b_in, out_width=q * b_out)

    def tiles(self, weight: torch.Tensor) -> torch.Tensor:
        """The grouped convolution's weight, ``(groups * q * b_out, D * b_in, *kernel)``, gathered
        from the layer's dense ``weight`` (its gradient flows back to the gathered entries only)."""
        kernel = weight.shape[2:]
        tiles = weight.reshape(-1, *kernel).index_select(0, self.weights).reshape(-1, self.slot_width, *kernel)
        return tiles if self.slot_mask is None else tiles * self.slot_mask.to(tiles.dtype)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The input channels of every slot, side by side (``x`` itself when that is the identity)."""
        return x if self.channels is None else x.index_select(1, self.channels)

    def keep_outputs(self, y: torch.Tensor) -> torch.Tensor:
        """The real output channels of the grouped convolution's padded output."""
        return y if self.outputs is None else y.index_select(1, self.outputs)
