"""SparseConv2d against nn.Conv2d: forward + backward, and a gathered grouped form as a candidate.

Usage: ``python benchmarks/bench_conv.py [--json] [--repeats N] [--threads N]``

The baseline is ``nn.Conv2d`` (dense, through autograd: output, input gradient and weight
gradient), timed in the same process, interleaved with the other sides in turns of ``BLOCK``
consecutive steps, median over turns of the mean step, after warm-up. Sides:

* ``masked``: :class:`sparsetopo.nn.SparseConv2d`, ``conv2d(x, weight * mask)``: the dense
  convolution plus one pass over the weight (the library's form);
* ``gathered``: a cheaper form a channel topology allows: the input channels each output
  needs are gathered (``index_select``, padded to the largest in-degree with zero-weight
  channels) and convolved as one grouped convolution, ``groups = out_channels``, so only the
  connected kernels are computed. It is measured here to decide whether the library should
  use it (``ratios_gathered``); the library uses it only where it is faster.

Shapes: the second convolution of the tutorial's CNN (16 -> 32 channels, 14 x 14, batch 64)
and a wider one (64 -> 128 channels, 16 x 16, batch 32), 3 x 3 kernels, padding 1,
``random_regular`` topologies at several densities.
"""

from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import interleaved_medians, timing_arguments, timing_record, training_step
from sparsetopo import build
from sparsetopo.nn import SparseConv2d

SHAPES = {"16->32, 14x14, batch 64": (16, 32, 14, 64), "64->128, 16x16, batch 32": (64, 128, 16, 32)}
DENSITIES = ("0.1", "0.25", "0.5")
BLOCK = 5


class Gathered(nn.Module):
    """The gathered grouped form of a SparseConv2d (same function, connected kernels only)."""

    def __init__(self, layer: SparseConv2d):
        super().__init__()
        t = layer.topology
        d_max = int(t.in_degrees.max())
        index = np.zeros((t.n_out, d_max), dtype=np.int64)
        mask = np.zeros((t.n_out, d_max), dtype=np.float32)
        weight = torch.zeros(t.n_out, d_max, *layer.kernel_size)
        dense = layer.dense_weight()
        for j in range(t.n_out):
            inputs = np.sort(t.rows[t.indices == j])
            index[j, :inputs.size] = inputs
            mask[j, :inputs.size] = 1.0
            weight[j, :inputs.size] = dense[j, inputs]
        self.register_buffer("index", torch.from_numpy(index.reshape(-1)))
        self.register_buffer("mask", torch.from_numpy(mask)[:, :, None, None])
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.padding, self.groups = layer.padding, t.n_out

    def forward(self, x):
        return F.conv2d(x.index_select(1, self.index), self.weight * self.mask, self.bias,
                        padding=self.padding, groups=self.groups)


def measure(c_in, c_out, side, batch, density, repeats, seed=0):
    k = max(1, round(density * c_out))
    t = build("random_regular", c_in, c_out, k, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    sparse = SparseConv2d(t, 3, padding=1, gen=np.random.default_rng(seed))
    dense = sparse.to_dense()
    gathered = Gathered(sparse)
    x = torch.rand(batch, c_in, side, side, generator=gen).requires_grad_()
    g = torch.randn(batch, c_out, side, side, generator=gen)
    with torch.no_grad():  # the three compute one function
        assert float((gathered(x) - dense(x)).abs().max()) < 1e-4 and float((sparse(x) - dense(x)).abs().max()) < 1e-4
    return t, interleaved_medians({"dense": training_step(dense, x, g), "masked": training_step(sparse, x, g),
                                   "gathered": training_step(gathered, x, g)}, repeats, block=BLOCK)


def main():
    args = timing_arguments(__doc__, repeats=60)
    ratios, ratios_gathered, seconds = {}, {}, {}
    for name, (c_in, c_out, side, batch) in SHAPES.items():
        for d in DENSITIES:
            key = f"{name}, density {d}"
            t, med = measure(c_in, c_out, side, batch, float(d), args.repeats)
            ratios[key] = med["masked"] / med["dense"]
            ratios_gathered[key] = med["gathered"] / med["dense"]
            seconds[key] = {**med, "density": t.density}
    result = timing_record(args, BLOCK, benchmark="3x3 convolution forward+backward: SparseConv2d (masked) and a "
                           "gathered grouped form against nn.Conv2d (random_regular channel topologies)",
                           ratios=ratios, ratios_gathered=ratios_gathered,
                           baseline="nn.Conv2d through autograd, median seconds",
                           sides={"ratios": "SparseConv2d: conv2d(x, weight * mask)",
                                  "ratios_gathered": "index_select of each output's input channels + grouped conv2d"},
                           seconds=seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"3x3 convolution, forward+backward; machine: {result['machine']}")
    for key in ratios:
        s = seconds[key]
        print(f"  {key:>36}: nn.Conv2d {s['dense'] * 1e3:7.2f} ms  masked {s['masked'] * 1e3:7.2f} ms "
              f"(ratio {ratios[key]:.2f})  gathered {s['gathered'] * 1e3:7.2f} ms (ratio {ratios_gathered[key]:.2f})")


if __name__ == "__main__":
    main()
