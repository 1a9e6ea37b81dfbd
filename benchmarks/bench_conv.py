"""Sparse convolutions against torch's: one layer, or a whole ResNet-18-like CNN training.

Usage:
``python benchmarks/bench_conv.py [--json] [--repeats N] [--threads N]`` (layers), or
``python benchmarks/bench_conv.py --model resnet18-like [--json] [--repeats N] [--threads N] [--clock C]
[--blocks 8,16,32 --densities 0.25,0.5]``.

Every baseline is torch's dense layer or model, timed in the same process, interleaved with
the other sides in turns of consecutive steps (so machine load hits all sides alike), median
over turns of the mean step, after warm-up.

**Layers** (forward + backward through autograd; 3x3 kernels, padding 1, ``random_regular``
channel topologies at several densities; the second convolution of the tutorial's CNN,
16 -> 32 channels at 14 x 14 and batch 64, and 64 -> 128 at 16 x 16 and batch 32):

* ``masked``: :class:`sparsetopo.nn.SparseConv2d` with ``backend="masked"``, the dense
  convolution with the weight gradient masked;
* ``grouped``: ``backend="grouped"`` on the same channel-level topology: the input channels
  of every output channel gathered and convolved as one grouped convolution with
  ``groups = out_channels`` (only the connected kernels are computed).

**Model** (``--model resnet18-like``): ResNet-18 as used on 32 x 32 images (3 x 3 stem, four
stages of two basic blocks, 64-128-256-512 channels, batch norm), batch 16, one training step
(forward, cross-entropy, backward, SGD with momentum). Sides:

* ``dense``: the model as torch builds it;
* ``auto``: ``sparsify(model, "random_regular", density=0.25)``, ``backend="auto"``;
* ``block16``: ``sparsify(..., density=0.25, block=16)``: channel blocks of 16, the
  convolutions run grouped over gathered channel blocks.

``--blocks`` adds sides ``grouped, block b, density d``: the model sparsified on each block
size at each density with every convolution forced onto the grouped backend (the evidence for
``sparsetopo.nn.conv.GROUPED_WHEN``, the rule of ``backend="auto"``).

Ratios are side seconds / dense seconds from the same run; the targets are ``auto <= 1.05``
and ``block16 <= 0.75`` (one thread). With one thread (the model's default) both modes time,
by default, CPU seconds of the thread that runs them (``--clock cpu``, ``time.thread_time``):
every side's computation runs on that thread, and time spent descheduled while other
processes use the cores, which inflates wall time unevenly on a shared machine, is not
counted. ``--clock wall`` times wall seconds.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import interleaved_medians, machine, set_threads, training_step
from sparsetopo import build
from sparsetopo.nn import CoverageWarning, SparseConv2d, sparsify, summary

SHAPES = {"16->32, 14x14, batch 64": (16, 32, 14, 64), "64->128, 16x16, batch 32": (64, 128, 16, 32)}
DENSITIES = ("0.1", "0.25", "0.5")
BLOCK = 5
MODEL_TARGETS = {"auto": 1.05, "block16": 0.75}
CLOCKS = {"cpu": time.thread_time, "wall": time.perf_counter}
CLOCK_TEXT = {"cpu": "CPU seconds of the timing thread", "wall": "wall seconds"}


def measure(c_in, c_out, side, batch, density, repeats, clock, seed=0):
    k = max(1, round(density * c_out))
    t = build("random_regular", c_in, c_out, k, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    sparse = SparseConv2d(t, 3, padding=1, gen=np.random.default_rng(seed), backend="masked")
    grouped = SparseConv2d(t, 3, padding=1, backend="grouped")
    grouped.load_state_dict(sparse.state_dict())
    dense = sparse.to_dense()
    x = torch.rand(batch, c_in, side, side, generator=gen).requires_grad_()
    g = torch.randn(batch, c_out, side, side, generator=gen)
    with torch.no_grad():  # the three compute one function
        assert float((grouped(x) - dense(x)).abs().max()) < 1e-4 and float((sparse(x) - dense(x)).abs().max()) < 1e-4
    return t, interleaved_medians({"dense": training_step(dense, x, g), "masked": training_step(sparse, x, g),
                                   "grouped": training_step(grouped, x, g)}, repeats, block=BLOCK, clock=clock)


def layers(args) -> dict:
    ratios, ratios_grouped, seconds = {}, {}, {}
    for name, (c_in, c_out, side, batch) in SHAPES.items():
        for d in DENSITIES:
            key = f"{name}, density {d}"
            t, med = measure(c_in, c_out, side, batch, float(d), args.repeats, CLOCKS[args.clock])
            ratios[key] = med["masked"] / med["dense"]
            ratios_grouped[key] = med["grouped"] / med["dense"]
            seconds[key] = {**med, "density": t.density}
    return {"benchmark": "3x3 convolution forward+backward: SparseConv2d, masked and grouped backends, against "
                         "nn.Conv2d (random_regular channel topologies)",
            "ratios": ratios, "ratios_gathered": ratios_grouped,
            "baseline": "nn.Conv2d through autograd, median seconds",
            "sides": {"ratios": "SparseConv2d(backend='masked'): conv2d(x, weight), weight gradient masked",
                      "ratios_gathered": "SparseConv2d(backend='grouped'): index_select of each output's input "
                                         "channels + grouped conv2d"},
            "threads": args.threads, "repeats": args.repeats, "clock": args.clock,
            "timing": f"turns of {BLOCK} consecutive steps per side, sides alternated; median over turns of the "
                      f"mean step, {CLOCK_TEXT[args.clock]}", "seconds": seconds}


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm, and a 1x1 projection
    shortcut where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))


def resnet18_like(classes: int = 10) -> nn.Sequential:
    """ResNet-18 for 32 x 32 images: a 3x3 stem, stages of 64, 128, 256 and 512 channels."""
    layers = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c_in = 64
    for c_out, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
        c_in = c_out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, classes))


def model_step(model, x, y):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def grouped(model: nn.Module) -> nn.Module:
    """``model`` with every sparse convolution whose channel blocks exceed 3 rebuilt on the
    grouped backend (same topology and weights)."""
    for name, layer in list(model.named_modules()):
        if isinstance(layer, SparseConv2d) and min(layer.topology.block_in, layer.topology.block_out) > 3:
            new = SparseConv2d(layer.topology, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                               layer.groups, bias=layer.bias is not None, backend="grouped")
            new.load_state_dict(layer.state_dict())
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, new)
    return model


def model_sides(dense: nn.Module, args) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoverageWarning)   # the summary below says what stays dense
        sides = {"dense": dense,
                 "auto": sparsify(copy.deepcopy(dense), "random_regular", density=0.25),
                 "block16": sparsify(copy.deepcopy(dense), "random_regular", density=0.25, block=16)}
        for b in args.blocks.split(",") if args.blocks else []:
            for d in args.densities.split(","):
                sides[f"grouped, block {b}, density {d}"] = grouped(
                    sparsify(copy.deepcopy(dense), "random_regular", density=float(d), block=int(b)))
    return sides


def model(args) -> dict:
    torch.manual_seed(0)
    sides = model_sides(resnet18_like(), args)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 3, 32, 32, generator=gen), torch.randint(0, 10, (16,), generator=gen)
    med = interleaved_medians({name: model_step(m, x, y) for name, m in sides.items()}, args.repeats, warmup=2,
                              block=2, clock=CLOCKS[args.clock])
    names = [name for name in sides if name != "dense"]
    backends = {name: sorted({m.backend for m in sides[name].modules() if hasattr(m, "topology")}) for name in names}
    ratios = {name: med[name] / med["dense"] for name in names}
    targets = {name: t for name, t in MODEL_TARGETS.items() if name in ratios}
    grid = (", and on each block size at each density with every convolution whose channel blocks exceed 3 "
            "on the grouped backend" if args.blocks else "")
    return {"benchmark": "ResNet-18-like CNN, one training step (forward, cross-entropy, backward, SGD momentum), "
                         "batch 16, 32x32 inputs: sparsify at density 0.25 (backend auto) and with channel blocks "
                         f"of 16{grid}, against the dense model",
            "ratios": ratios, "targets": targets, "met": {name: ratios[name] <= t for name, t in targets.items()},
            "seconds": med, "backends": backends,
            "sparse_share": {name: summary(sides[name]).sparse_share for name in names},
            "density": {name: _density(sides[name]) for name in names},
            "threads": args.threads, "repeats": args.repeats, "clock": args.clock,
            "timing": f"turns of 2 consecutive steps per side, sides alternated; median over turns of the mean step, "
                      f"{CLOCK_TEXT[args.clock]}"}


def _density(model: nn.Module) -> float:
    """Connections kept over the dense weights of the sparse layers."""
    rows = model.sparsetopo_summary
    return sum(r["connections"] for r in rows) / sum(r["dense_connections"] for r in rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["resnet18-like"], default=None,
                        help="time a whole model's training step instead of single layers")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=None, help="steps per side (default 60 for layers, 12 for "
                                                                  "the model)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch (default: its own for layers, 1 for the model)")
    parser.add_argument("--blocks", default=None, help="model: comma-separated block sizes, each run grouped")
    parser.add_argument("--densities", default="0.25,0.5", help="model, with --blocks: comma-separated densities")
    parser.add_argument("--clock", choices=["cpu", "wall"], default=None,
                        help="CPU seconds of the timing thread (the default with one thread) or wall seconds")
    args = parser.parse_args()
    if args.model and args.threads is None:
        args.threads = 1
    if args.clock is None:
        args.clock = "cpu" if args.threads == 1 else "wall"
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu counts one thread's time: use it with --threads 1")
    if args.repeats is None:
        args.repeats = 12 if args.model else 60
    set_threads(args.threads)
    result = {**(model(args) if args.model else layers(args)), "machine": machine()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['benchmark']}\nmachine: {result['machine']}")
    if args.model:
        s = result["seconds"]
        print(f"  dense {s['dense']:.3f} s per step ({result['clock']} clock)")
        for name, ratio in result["ratios"].items():
            target = result["targets"].get(name)
            aim = "" if target is None else f" (target <= {target}, {'met' if result['met'][name] else 'NOT met'})"
            print(f"  {name}: {s[name]:.3f} s per step, ratio {ratio:.3f}{aim}; backends "
                  f"{', '.join(result['backends'][name])}, "
                  f"{result['sparse_share'][name]:.1%} of weights in sparse layers, "
                  f"density {result['density'][name]:.3f}")
        return
    for key, ratio in result["ratios"].items():
        s = result["seconds"][key]
        print(f"  {key:>36}: nn.Conv2d {s['dense'] * 1e3:7.2f} ms  masked {s['masked'] * 1e3:7.2f} ms "
              f"(ratio {ratio:.2f})  grouped {s['grouped'] * 1e3:7.2f} ms "
              f"(ratio {result['ratios_gathered'][key]:.2f})")


if __name__ == "__main__":
    main()
