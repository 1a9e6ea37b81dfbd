"""Sparse recurrent layers against torch's dense ones: one training step (forward + backward).

Usage: ``python benchmarks/bench_recurrent.py [--json] [--repeats N] [--threads N]``

The baseline is the dense ``nn.LSTM`` / ``nn.GRU`` (torch's fused kernel, through autograd),
timed in the same process, interleaved with the sparse side in turns of ``BLOCK`` consecutive
steps, median over turns of the mean step, after warm-up. The sparse side is the same layer
after :func:`sparsetopo.sparsify` (``random_regular``, shared gate topologies): torch's fused
kernel on ``weight * mask``, so its cost is the dense step plus one pass over the weights
(forward and backward); the ratio says what masking costs, not what sparsity saves.

Shapes: a 2-layer LSTM 64 -> 128 and a bidirectional GRU 64 -> 128 (sequence 32, batch 16),
at density 0.25.
"""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from _common import interleaved_medians, timing_arguments, timing_record
from sparsetopo.nn import sparsify

SHAPES = {"LSTM 64->128, 2 layers, seq 32, batch 16": (nn.LSTM, 64, 128, dict(num_layers=2), 32, 16),
          "GRU 64->128, bidirectional, seq 32, batch 16": (nn.GRU, 64, 128, dict(bidirectional=True), 32, 16)}
DENSITY = 0.25
BLOCK = 5


def step(layer, x):
    """One training step as a user's loop runs it: clear gradients, forward, backward."""
    def run():
        layer.zero_grad(set_to_none=True)
        out, _ = layer(x)
        out.pow(2).mean().backward()
    return run


def measure(kind, n_in, hidden, extra, seq, batch, repeats, seed=0):
    torch.manual_seed(seed)
    dense = kind(n_in, hidden, batch_first=True, **extra)
    sparse = sparsify(copy.deepcopy(dense), "random_regular", density=DENSITY, seed=seed)
    x = torch.randn(batch, seq, n_in, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():  # the same function as the dense layer with the pruned weights zeroed
        assert float((sparse(x)[0] - sparse.to_dense()(x)[0]).abs().max()) < 1e-5
    return interleaved_medians({"dense": step(dense, x), "masked": step(sparse, x)}, repeats, block=BLOCK)


def main():
    args = timing_arguments(__doc__, repeats=40)
    ratios, seconds = {}, {}
    for name, (kind, n_in, hidden, extra, seq, batch) in SHAPES.items():
        med = measure(kind, n_in, hidden, extra, seq, batch, args.repeats)
        ratios[name] = med["masked"] / med["dense"]
        seconds[name] = med
    result = timing_record(args, BLOCK, ratios=ratios, seconds=seconds, baseline="nn.LSTM / nn.GRU through autograd",
                           benchmark=f"recurrent training step (forward+backward), sparsify(density={DENSITY}) "
                                     "against torch's dense layer")
    if not args.json:
        print(f"recurrent training step, density {DENSITY}; machine: {result['machine']}")
        print("\n".join(f"  {name:>46}: dense {s['dense'] * 1e3:7.2f} ms  masked {s['masked'] * 1e3:7.2f} ms "
                        f"(ratio {ratios[name]:.2f})" for name, s in seconds.items()))
        return
    print(json.dumps(result))


if __name__ == "__main__":
    main()
