"""One training epoch of 784-300-10 under the paper's protocol: backend "auto" vs masked-dense.

Usage: ``python benchmarks/bench_epoch.py [--json] [--examples N] [--repeats R] [--threads T]``

The network is the paper's: input layer of density d (regular_rotating, k = d * 300), output
layer fully connected, sigmoid everywhere, MSE on one-hot targets, SGD lr 0.01 with Nesterov
momentum 0.9, batch 32. The data are synthetic and MNIST-shaped (uniform pixels in [0, 1],
random labels): an epoch here is "an epoch of N examples" (default 8000, 250 steps). Both
sides run :func:`sparsetopo.train.train` in this process with the same threads, alternating,
and report the median training seconds of an epoch (evaluation excluded, first epoch of each
run dropped as warm-up). ``ratios[d]`` = auto's seconds / masked's seconds; auto uses the
fused numba epoch when it makes every layer sparse.
"""

from __future__ import annotations

import argparse
import json
import statistics
from types import SimpleNamespace

import numpy as np

from _common import machine, set_threads
from sparsetopo.train import TrainConfig, train

DENSITIES = ("0.01", "0.03", "0.1", "0.3", "1")
TARGETS = {"0.01": 0.15, "0.1": 0.30, "1": 1.05}  # auto / masked, from the issue


def synthetic(n: int, seed: int = 0):
    gen = np.random.default_rng(seed)
    return SimpleNamespace(x_train=gen.random((n, 784), dtype=np.float32), y_train=gen.integers(0, 10, n),
                           x_test=gen.random((100, 784), dtype=np.float32), y_test=gen.integers(0, 10, 100),
                           n_classes=10)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--examples", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend (each 3 epochs, first dropped)")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: theirs)")
    args = parser.parse_args()
    set_threads(args.threads)
    data = synthetic(args.examples)
    ratios, seconds, backends = {}, {}, {}
    for d in DENSITIES:
        k = max(1, round(float(d) * 300))
        times = {"masked": [], "auto": []}
        for _ in range(args.repeats):
            for backend in times:
                config = TrainConfig(dataset="synthetic", hidden=(300,), degrees=(k, 10), epochs=3, backend=backend)
                result = train(config, dataset=data)
                times[backend] += [h.seconds for h in result.history[1:]]
                if backend == "auto":
                    backends[d] = [layer.backend for layer in result.model.layers]
        med = {b: statistics.median(ts) for b, ts in times.items()}
        ratios[d] = med["auto"] / med["masked"]
        seconds[d] = med
    result = {"benchmark": f"one epoch of {args.examples} examples, 784-300-10, batch 32, paper's protocol",
              "ratios": ratios, "targets": TARGETS, "threads": args.threads, "examples": args.examples,
              "repeats": args.repeats, "timing": "per backend: runs of 3 epochs, first dropped; median epoch seconds", "baseline": "masked-dense PyTorch training loop, median seconds per epoch",
              "masked_seconds": {d: seconds[d]["masked"] for d in DENSITIES},
              "auto_seconds": {d: seconds[d]["auto"] for d in DENSITIES},
              "auto_backends": backends, "machine": machine()}
    if args.json:
        print(json.dumps(result))
        return
    targets = TARGETS
    print(f"{result['benchmark']}; machine: {result['machine']}")
    for d in DENSITIES:
        target = f" target <= {targets[d]}" if d in targets else ""
        print(f"  density {d:>5}: masked {seconds[d]['masked']:.3f} s  auto {seconds[d]['auto']:.3f} s "
              f"{backends[d]}  ratio {ratios[d]:.3f}{target}")


if __name__ == "__main__":
    main()
