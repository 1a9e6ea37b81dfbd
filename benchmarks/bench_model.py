"""Whole training steps of two models a user would sparsify: dense against sparsified.

Usage: ``python benchmarks/bench_model.py [--json] [--threads 1,2] [--batch 128,512]
[--density 0.1,0.02] [--model mlp,cnn] [--accuracy-train N]``

* **mlp**: 784-1024-1024-10 with ReLU, LayerNorm after each hidden layer, dropout 0.1,
  cross-entropy, Adam (lr 1e-3); the two hidden layers (784->1024, 1024->1024) sparsified by
  :func:`sparsetopo.sparsify` with ``random_regular`` on the sparse backend; the output layer
  stays dense.
* **cnn**: the tutorial's network (``examples/cnn_fashion.py``: two 3x3 convolutions 1->16 and
  16->32 with ReLU and 2x2 max pooling, then 1568->128, ReLU, 128->10), Adam, cross-entropy;
  sparsified as the tutorial does (the second convolution, masked, and both linear layers,
  sparse backend; below density 0.05 the 128->10 layer, which would keep no connection, stays
  dense).

A step is what a training loop runs: ``zero_grad``, forward, loss, ``backward``, ``step``, on
Fashion-MNIST images (Debian's ``dataset-fashion-mnist``; random images of that shape when it
is missing, which the JSON says). Dense and sparsified models of one configuration are timed
interleaved in the same process with the same threads (torch and numba alike), in turns of
consecutive steps; ``ratios`` are sparsified seconds / dense seconds, medians over turns.

With ``--accuracy-train N`` (0 to skip) the MLP at each density is also trained for one epoch on
the first N training images with the sparse and with the masked backend from the same
weights, and both are tested on the test set: the two backends compute the same network up
to float rounding, so their accuracies should agree.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _common import interleaved_medians, machine, set_threads
from sparsetopo import sparsify
from sparsetopo.errors import SparsetopoError
from sparsetopo.data import load_dataset


def make_mlp(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.LayerNorm(1024), nn.Dropout(0.1),
                             nn.Linear(1024, 1024), nn.ReLU(), nn.LayerNorm(1024), nn.Dropout(0.1),
                             nn.Linear(1024, 10))


def make_cnn(seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def sparsified(name: str, density: float, backend: str = "sparse") -> nn.Module:
    """The model ``name`` with its large layers sparsified at ``density`` (see the module doc)."""
    if name == "mlp":
        return sparsify(make_mlp(), "random_regular", density=density, include=["0", "4"], backend=backend)
    linear = ["7", "9"] if round(density * 10) >= 1 else ["7"]  # 128->10 keeps one output per input at least
    model = sparsify(make_cnn(), "random_regular", density=density, include=linear, backend=backend)
    return sparsify(model, "random_regular", density=density, include=["3"], backend="masked")


def data(n_train: int | None = None):
    """Fashion-MNIST as float tensors (N, 784), or random images when it is not installed."""
    try:
        d = load_dataset("fashion-mnist", download=False, limit_train=n_train)
        return (torch.from_numpy(d.x_train), torch.from_numpy(d.y_train).long(),
                torch.from_numpy(d.x_test), torch.from_numpy(d.y_test).long(), "fashion-mnist")
    except SparsetopoError:
        gen = torch.Generator().manual_seed(0)
        n = n_train or 6000
        return (torch.rand(n, 784, generator=gen), torch.randint(0, 10, (n,), generator=gen),
                torch.rand(1000, 784, generator=gen), torch.randint(0, 10, (1000,), generator=gen), "random images")


def step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return step


def time_steps(name, densities, batch, x_all, y_all, seconds):
    shape = (-1, 784) if name == "mlp" else (-1, 1, 28, 28)
    x, y = x_all[:batch].reshape(shape), y_all[:batch]
    sides = {"dense": step_fn(make_mlp() if name == "mlp" else make_cnn(), x, y)}
    for d in densities:
        sides[str(d)] = step_fn(sparsified(name, d), x, y)
    tick = time.perf_counter()
    sides["dense"]()
    once = time.perf_counter() - tick
    block = max(1, min(5, int(0.05 / once)))
    med = interleaved_medians(sides, max(5 * block, int(seconds / once)), warmup=3, block=block)
    return {"seconds": med, "ratios": {str(d): med[str(d)] / med["dense"] for d in densities}}


def accuracy_pair(density, x, y, x_test, y_test, batch=128):
    """Test accuracy after one epoch of the MLP on the sparse and on the masked backend."""
    out = {}
    for backend in ("sparse", "masked"):
        torch.manual_seed(0)  # dropout masks: the same draws for both backends
        model = sparsified("mlp", density, backend)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for i in range(0, len(x) - batch + 1, batch):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x[i:i + batch]), y[i:i + batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            out[backend] = float((model(x_test).argmax(1) == y_test).float().mean())
    return out


TARGETS = {"mlp": {"128": {"0.1": 0.40, "0.02": 0.22}}}  # one thread (the acceptance)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--threads", default="1,2", help="thread counts to run (torch and numba alike)")
    parser.add_argument("--batch", default="128,512")
    parser.add_argument("--density", default="0.1,0.02")
    parser.add_argument("--model", default="mlp,cnn")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per side and configuration")
    parser.add_argument("--accuracy-train", type=int, default=10000, help="training images for the accuracy check")
    args = parser.parse_args()
    densities = [float(d) for d in args.density.split(",")]
    x, y, x_test, y_test, source = data()
    runs = []
    for threads in (int(t) for t in args.threads.split(",")):
        set_threads(threads)
        for name in args.model.split(","):
            for batch in (int(b) for b in args.batch.split(",")):
                r = time_steps(name, densities, batch, x, y, args.seconds)
                runs.append({"model": name, "threads": threads, "batch": batch, **r})
                if not args.json:
                    print(f"  {name} threads {threads} batch {batch}: dense {r['seconds']['dense'] * 1e3:.1f} ms; "
                          + ", ".join(f"{d}: {v:.3f}" for d, v in r["ratios"].items()), flush=True)
    result = {"benchmark": "whole training steps (Adam, cross-entropy): dense vs sparsified (random_regular)",
              "data": source, "runs": runs, "targets": TARGETS}
    if args.accuracy_train:
        set_threads(1)
        n = args.accuracy_train
        result["accuracy"] = {str(d): accuracy_pair(d, x[:n], y[:n], x_test, y_test) for d in densities}
        result["accuracy_setup"] = f"MLP, one epoch on the first {n} training images, batch 128, test set"
    result["machine"] = machine()
    if args.json:
        print(json.dumps(result))
    elif "accuracy" in result:
        print(f"  accuracy after one epoch (sparse / masked): {result['accuracy']}")


if __name__ == "__main__":
    main()
