"""CSR against dense (GEMM) kernels for one training step of one layer: the population engine's cost model.

The population engine computes each member layer either over its connections (the CSR kernels
of ``sparsetopo.kernels.layer``) or as the whole ``n_in x n_out`` matrix times the mask (BLAS
GEMMs, ``sparsetopo.kernels.dense``), whichever ``sparsetopo.nn.plan.member_prefers_dense``
says is cheaper. This script times both on one core, batch 32 (the paper's), for the paper
grid's layer shapes at several densities, each in the two forms a layer takes in training: the
first layer (forward, weight gradient and SGD step) and a later layer (also the gradient to
its inputs). It prints the seconds per connection (CSR) and per matrix entry (GEMM) of one
example, their medians (the constants in ``kernels/options.py``), the density where the two
meet, and for every case the ratio dense / CSR and the form the cost model picks, so a wrong
pick shows.

Subnormal floats: sigmoid and MSE gradients can get very small, and x86 cores slow down on
subnormal operands. ``subnormal`` times the backward kernels (784-300 at 20%, later-layer form)
with output gradients scaled to 1e-3 (normal) and to 1e-39 (mostly subnormal) and prints the
slow-down: what flushing them to zero could win, were they to occur.

Run: ``python benchmarks/bench_layer_kernels.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numba
import numpy as np

from sparsetopo.kernels.dense import dense_backward_input, dense_forward, dense_values_sgd
from sparsetopo.kernels.layer import backward_sgd_serial, backward_values_sgd_serial, forward_serial
from sparsetopo.kernels.threads import member_threads
from sparsetopo.nn.plan import CSR_SECONDS_PER_CONNECTION, GEMM_SECONDS_PER_ENTRY
from sparsetopo.nn.plan import member_prefers_dense as prefers_dense
from sparsetopo.nn.sparse_index import SparseIndex
from sparsetopo.topology import build

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from _common import machine  # noqa: E402

BATCH = 32
SHAPES = ((784, 100), (784, 300), (784, 1000), (300, 300), (300, 10))
DENSITIES = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)


def _time(step, seconds: float) -> float:
    step()  # compile or load, and warm the caches
    calls, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        calls += 1
    return (time.perf_counter() - started) / calls


def case(n_in: int, n_out: int, density: float, later: bool, seconds: float) -> dict:
    """Seconds of one step of one layer in both forms."""
    k = max(1, round(density * n_out))
    topology = build("random_regular" if k < n_out else "fully_connected", n_in, n_out, k=k, seed=0)
    index = SparseIndex.from_topology(topology)
    rng = np.random.default_rng(0)
    x = rng.random((n_in, BATCH), dtype=np.float32)
    d_out = (rng.random((n_out, BATCH), dtype=np.float32) - 0.5) * 1e-3
    y = np.empty((n_out, BATCH), dtype=np.float32)
    d_in = np.empty((n_in, BATCH), dtype=np.float32)
    values = (rng.random(index.nnz, dtype=np.float32) - 0.5) * 0.1
    bias = np.zeros(n_out, dtype=np.float32)
    buf = np.zeros_like(values)
    mask = topology.mask().astype(np.float32).ravel()
    w = np.zeros(n_in * n_out, dtype=np.float32)
    w[mask > 0] = values   # row-major positions of the connections are CSR order
    dense_buf = np.zeros_like(w)
    grad = np.empty_like(w)
    lr, momentum = np.float32(1e-6), np.float32(0.9)

    def csr():
        forward_serial(x, values, bias, index.col_ptr, index.col_rows, index.col_perm, y, True)
        if later:
            backward_sgd_serial(x, d_out, values, index.indptr, index.indices, d_in, x, True, buf, lr, momentum, True)
        else:
            backward_values_sgd_serial(x, d_out, index.indptr, index.indices, values, buf, lr, momentum, True)

    def dense():
        dense_forward(x, w.reshape(n_in, n_out), bias, y, True)
        if later:
            dense_backward_input(d_out, w.reshape(n_in, n_out), d_in, x)
        dense_values_sgd(x, d_out, w, mask, dense_buf, grad, lr, momentum, True)

    with member_threads(1):
        csr_s, dense_s = _time(csr, seconds), _time(dense, seconds)
    return {"n_in": n_in, "n_out": n_out, "density": index.nnz / (n_in * n_out), "later_layer": later,
            "csr_step_s": csr_s, "dense_step_s": dense_s,
            "csr_s_per_connection_example": csr_s / (index.nnz * BATCH),
            "gemm_s_per_entry_example": dense_s / (n_in * n_out * BATCH),
            "dense_over_csr": dense_s / csr_s,
            "model_picks": "dense" if prefers_dense(index.nnz, n_in, n_out) else "csr",
            "faster": "dense" if dense_s < csr_s else "csr"}


def subnormal(seconds: float) -> dict:
    """Seconds of the 784-300 (20%) backward kernels on normal against subnormal gradients."""
    out = {}
    for scale in (1e-3, 1e-39):
        case_ = _backward_case(784, 300, 0.2, np.float32(scale))
        with member_threads(1):
            out[f"{scale:g}"] = {name: _time(step, seconds) for name, step in case_.items()}
    normal, tiny = out["0.001"], out["1e-39"]
    return {"seconds": out, "slowdown": {name: tiny[name] / normal[name] for name in normal},
            "fraction_in_training": subnormal_fraction()}


def subnormal_fraction() -> dict:
    """Share of subnormal numbers among the sigmoid outputs and their derivatives ``a (1 - a)``
    of a 784-300-10 network after 2 epochs of the paper's protocol (lr 0.01, and a hot lr 1.0),
    on 8000 synthetic MNIST-shaped examples: do they occur at all where the kernels run?"""
    import torch

    from sparsetopo.data import load_dataset
    from sparsetopo.train import TrainConfig, train

    data = load_dataset("synthetic")
    tiny = float(np.finfo(np.float32).tiny)
    out = {}
    for lr in (0.01, 1.0):
        config = TrainConfig(dataset="synthetic", hidden=(300,), construction="fully_connected", epochs=2, lr=lr)
        model = train(config, dataset=data).model.eval()
        counts, total = 0, 0
        with torch.no_grad():
            a = torch.as_tensor(np.asarray(data.x_test, dtype=np.float32))
            for layer in model.layers:
                a = torch.sigmoid(layer(a))
                for t in (a, a * (1 - a)):
                    counts += int(((t.abs() < tiny) & (t != 0)).sum())
                    total += t.numel()
        out[f"lr={lr:g}"] = counts / total
    return out


def _backward_case(n_in, n_out, density, scale):
    topology = build("random_regular", n_in, n_out, k=max(1, round(density * n_out)), seed=0)
    index = SparseIndex.from_topology(topology)
    rng = np.random.default_rng(0)
    x = rng.random((n_in, BATCH), dtype=np.float32)
    d_out = ((rng.random((n_out, BATCH), dtype=np.float32) - 0.5) * scale).astype(np.float32)
    d_in = np.empty_like(x)
    values = (rng.random(index.nnz, dtype=np.float32) - 0.5) * 0.1
    buf = np.zeros_like(values)
    mask = topology.mask().astype(np.float32).ravel()
    w = np.zeros(n_in * n_out, dtype=np.float32)
    w[mask > 0] = values
    dense_buf, grad = np.zeros_like(w), np.empty_like(w)
    lr, momentum = np.float32(0.0), np.float32(0.9)   # lr 0: the weights stay as drawn
    return {
        "csr": lambda: backward_sgd_serial(x, d_out, values, index.indptr, index.indices, d_in, x, True, buf, lr,
                                           momentum, True),
        "dense": lambda: (dense_backward_input(d_out, w.reshape(n_in, n_out), d_in, x),
                          dense_values_sgd(x, d_out, w, mask, dense_buf, grad, lr, momentum, True)),
    }


def run(seconds: float) -> dict:
    numba.set_num_threads(1)
    cases = [case(n_in, n_out, d, later, seconds) for n_in, n_out in SHAPES for d in DENSITIES
             for later in (False, True)]
    wide = [c for c in cases if c["n_out"] >= 32]
    csr = statistics.median(c["csr_s_per_connection_example"] for c in wide)
    gemm = statistics.median(c["gemm_s_per_entry_example"] for c in wide)
    wrong = [c for c in cases if c["model_picks"] != c["faster"]]
    return {
        "batch": BATCH,
        "csr_s_per_connection_example_median": csr,
        "gemm_s_per_entry_example_median": gemm,
        "crossover_density": gemm / csr,
        "constants_in_options": {"CSR_SECONDS_PER_CONNECTION": CSR_SECONDS_PER_CONNECTION,
                                 "GEMM_SECONDS_PER_ENTRY": GEMM_SECONDS_PER_ENTRY},
        "model_picks_slower_form": len(wrong),
        "worst_wrong_pick_slowdown": max((min(c["dense_over_csr"], 1 / c["dense_over_csr"]) ** -1
                                          for c in wrong), default=1.0),
        "subnormal": subnormal(seconds),
        "cases": cases,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seconds", type=float, default=0.3, help="timing per case and form")
    args = parser.parse_args(argv)
    result = {"machine": machine(), **run(args.seconds)}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    for c in result["cases"]:
        print(f"{c['n_in']:5d}x{c['n_out']:<5d} density {c['density']:.2f} {'later' if c['later_layer'] else 'first'}: "
              f"csr {c['csr_step_s'] * 1e6:8.1f} us  dense {c['dense_step_s'] * 1e6:8.1f} us  "
              f"dense/csr {c['dense_over_csr']:.2f}  picks {c['model_picks']}")
    print(f"median s per connection-example (csr) {result['csr_s_per_connection_example_median']:.3g}, "
          f"per entry-example (gemm) {result['gemm_s_per_entry_example_median']:.3g}, crossover density "
          f"{result['crossover_density']:.2f}; slower form picked in {result['model_picks_slower_form']} cases")
    print("subnormal gradients slow the backward kernels by " + ", ".join(
        f"{name} x{ratio:.2f}" for name, ratio in result["subnormal"]["slowdown"].items())
          + "; their share in training: " + ", ".join(
        f"{k} {v:.2g}" for k, v in result["subnormal"]["fraction_in_training"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
