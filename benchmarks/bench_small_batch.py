"""The small-batch rule of the sparse layer's training step: untiled against tiled kernels.

At a batch of at most ``SMALL_BATCH`` rows and fewer than ``SMALL_OUTPUTS`` outputs,
the plan (``sparsetopo.nn.plan.call_path``) runs the untiled one-call kernels of ``kernels/batch_major.py``;
otherwise the batch-tiled kernels of ``kernels/tiled.py``. This times one training step
(forward, backward into the input, the weights and the bias) of a ``random_regular`` layer
both ways, in the same process and interleaved, by setting ``SMALL_BATCH`` for each side, and
prints untiled time / tiled time per shape (below 1: the untiled kernels are faster). It times
the layer alone, as ``bench_layers.py`` does, not a whole model.

    OMP_NUM_THREADS=1 python benchmarks/bench_small_batch.py --json --threads 1
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from _common import interleaved_medians, machine, set_threads, training_step

import sparsetopo.nn.plan as plan
from sparsetopo import build
from sparsetopo.nn import SparseLinear

SHAPES = ("784x300", "784x500", "500x300", "300x10", "784x1024", "1024x1024", "2048x512")
DENSITIES = (0.02, 0.1)


def side(layer, x, g, untiled: bool):
    """One step with the rule forced either way (restored by :func:`main`)."""
    step = training_step(layer, x, g)
    small = (x.shape[0], layer.topology.n_out + 1) if untiled else (0, 0)

    def run():
        plan.SMALL_BATCH, plan.SMALL_OUTPUTS = small
        layer._paths.clear()  # the layer remembers its plan per batch: ask again under this rule
        step()
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: theirs)")
    parser.add_argument("--batch", type=int, default=32, help="rows per step (at most SMALL_BATCH to compare)")
    parser.add_argument("--repeats", type=int, default=40, help="timed turns per side")
    args = parser.parse_args()
    set_threads(args.threads)
    default = plan.SMALL_BATCH, plan.SMALL_OUTPUTS
    gen = torch.Generator().manual_seed(0)
    points = []
    for shape in SHAPES:
        n, m = (int(s) for s in shape.split("x"))
        for density in DENSITIES if m > 10 else (1.0,):
            k = max(1, round(density * m))
            layer = SparseLinear(build("random_regular", n, m, k, seed=0), gen=np.random.default_rng(0),
                                 backend="sparse")
            x = torch.randn(args.batch, n, generator=gen, requires_grad=True)
            g = torch.randn(args.batch, m, generator=gen)
            med = interleaved_medians({"untiled": side(layer, x, g, True), "tiled": side(layer, x, g, False)},
                                      args.repeats, block=5)
            points.append({"shape": shape, "density": k / m, "batch": args.batch,
                           "rule": "untiled" if args.batch <= default[0] and m < default[1] else "tiled",
                           "seconds": med, "untiled_over_tiled": med["untiled"] / med["tiled"]})
    plan.SMALL_BATCH, plan.SMALL_OUTPUTS = default
    result = {"benchmark": "untiled against tiled sparse kernels for one training step at a small batch",
              "points": points, "machine": machine()}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    for p in points:
        print(f"{p['shape']:>10} density {p['density']:.3f} batch {p['batch']}: untiled / tiled "
              f"{p['untiled_over_tiled']:.2f} (the rule takes {p['rule']})")


if __name__ == "__main__":
    main()
