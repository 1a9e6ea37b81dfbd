"""One layer 784 -> 300 at batch 32: forward + backward, sparse backend vs masked-dense PyTorch.

Usage: ``python benchmarks/bench_layers.py [--json] [--repeats N]``

The baseline is the masked backend through autograd (``addmm(b, x, W * mask)``, then
``backward``: the input gradient and the dense weight gradient), timed in the same process
with the same threads, interleaved with the sparse side in turns of ``BLOCK`` consecutive
steps (as training runs a layer: one side's data do not evict the other's between steps),
median over turns of the mean step, after warm-up.
The sparse side is reported two ways:

* ``ratios`` (sparse_time / masked_time): the sparse kernels a training step runs (forward,
  then gradient to the inputs and SDDMM gradient of the connected weights in one pass over
  the connections) inside one numba call, as the fused epoch runs them;
* ``ratios_python_calls``: the same two kernels, one Python call each (adds numba's
  dispatch, a few microseconds a call: what matters at 1% density);
* ``ratios_autograd``: the same through ``SparseLinear.forward`` and ``backward``: what a layer
  inside someone else's network (or a model with dropout) pays. Each direction is one numba call
  (``sparsetopo.kernels.batch_major``: layout copies, kernels and bias gradient); the rest is
  torch's cost of a custom autograd Function;
* ``ratios_autograd_numpy_layout``: the autograd Function as it was before those entry points
  (layout copies and the bias sum in numpy, one numba call per kernel), the "before" of
  ``ratios_autograd`` measured in the same run (``_variants.py``);
* ``ratios_custom_op``: the library's two numba calls registered as ``torch.library`` custom ops
  with an autograd formula (what ``torch.compile`` could keep in a graph), called eagerly
  (absent when this torch has no ``torch.library.custom_op``);
* ``ratios_autograd_floor``: the same step through an autograd Function that computes nothing
  (``_variants.floor_step``): torch's own charge for a Python autograd layer, the floor under
  ``ratios_autograd`` on this machine. ``ratios_autograd`` minus it is the library's part
  (its kernels, layout copies and glue).

It also fits the constants of :class:`sparsetopo.nn.backend.CostModel` (printed as
``cost_model``) from these timings plus a small 64 -> 10 layer; ``CPU_COST_MODEL`` holds them.
"""

from __future__ import annotations

import argparse
import json

from numba import njit

import numpy as np
import torch

from _common import interleaved_medians, machine, set_threads, training_step
from _variants import custom_op_step, floor_step, numpy_layout_step
from sparsetopo import build
from sparsetopo.nn import SparseLinear
from sparsetopo.kernels import layer as kernels
from sparsetopo.kernels.threads import n_chunks, use_threads

DENSITIES = ("0.01", "0.03", "0.1", "0.3")
N_IN, N_OUT, BATCH = 784, 300, 32


@njit
def _serial_step(xt, values, bias, col_ptr, col_rows, col_perm, yt, gyt, indptr, indices, gxt, gv):
    kernels.forward_serial(xt, values, bias, col_ptr, col_rows, col_perm, yt, False)
    kernels.backward_serial(xt, gyt, values, indptr, indices, gxt, gxt, False, gv)


@njit
def _parallel_step(xt, values, bias, col_ptr, col_rows, col_perm, yt, gyt, indptr, indices, gxt, gv, chunks):
    kernels.forward(xt, values, bias, col_ptr, col_rows, col_perm, yt, False, chunks)
    kernels.backward(xt, gyt, values, indptr, indices, gxt, gxt, False, gv, chunks)


def kernel_step(layer, x, g, one_call=True):
    """Forward, input gradient and SDDMM on feature-major buffers: in one numba call, as the
    fused epoch runs them, or (``one_call=False``) one Python call per kernel."""
    idx, batch = layer.index, x.shape[0]
    xt = np.ascontiguousarray(x.detach().numpy().T)
    gyt = np.ascontiguousarray(g.numpy().T)
    yt = np.empty((idx.n_out, batch), np.float32)
    gxt = np.empty((idx.n_in, batch), np.float32)
    gv = np.empty(idx.nnz, np.float32)
    values, bias = layer.values.detach().numpy(), layer.bias.detach().numpy()
    threads, chunks = use_threads(idx.nnz, batch), n_chunks()

    args = (xt, values, bias, idx.col_ptr, idx.col_rows, idx.col_perm, yt, gyt, idx.indptr, idx.indices, gxt, gv)
    if one_call:
        if threads:
            return lambda: _parallel_step(*args, chunks)
        return lambda: _serial_step(*args)

    def step():
        if threads:
            kernels.forward(xt, values, bias, idx.col_ptr, idx.col_rows, idx.col_perm, yt, False, chunks)
            kernels.backward(xt, gyt, values, idx.indptr, idx.indices, gxt, gxt, False, gv, chunks)
        else:
            kernels.forward_serial(xt, values, bias, idx.col_ptr, idx.col_rows, idx.col_perm, yt, False)
            kernels.backward_serial(xt, gyt, values, idx.indptr, idx.indices, gxt, gxt, False, gv)
    return step


BLOCK = 10  # consecutive steps per timed turn (see _common.interleaved_medians)


def measure(n_in, n_out, k, repeats, seed=0):
    t = build("random_regular", n_in, n_out, k, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, n_in, generator=gen).requires_grad_()
    g = torch.randn(BATCH, n_out, generator=gen)
    masked = SparseLinear(t, backend="masked")
    sparse = SparseLinear(t, backend="sparse")
    sides = {"masked": training_step(masked, x, g), "kernels": kernel_step(sparse, x, g),
             "python_calls": kernel_step(sparse, x, g, one_call=False),
             "autograd": training_step(sparse, x, g), "autograd_numpy_layout": numpy_layout_step(sparse, x, g),
             "autograd_floor": floor_step(sparse, x, g)}
    custom = custom_op_step(sparse, x, g)
    if custom is not None:
        sides["custom_op"] = custom
    return t, interleaved_medians(sides, repeats, block=BLOCK)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: theirs)")
    args = parser.parse_args()
    set_threads(args.threads)
    ratios, ratios_calls, ratios_autograd, seconds, points = {}, {}, {}, {}, []
    ratios_before, ratios_custom, ratios_floor = {}, {}, {}
    for d in DENSITIES:
        k = max(1, round(float(d) * N_OUT))
        t, med = measure(N_IN, N_OUT, k, args.repeats)
        ratios[d] = med["kernels"] / med["masked"]
        ratios_calls[d] = med["python_calls"] / med["masked"]
        ratios_autograd[d] = med["autograd"] / med["masked"]
        ratios_before[d] = med["autograd_numpy_layout"] / med["masked"]
        ratios_floor[d] = med["autograd_floor"] / med["masked"]
        if "custom_op" in med:
            ratios_custom[d] = med["custom_op"] / med["masked"]
        seconds[d] = {"masked": med["masked"], "sparse_kernels": med["kernels"], "sparse_python_calls": med["python_calls"],
                      "sparse_autograd": med["autograd"], "sparse_autograd_numpy_layout": med["autograd_numpy_layout"],
                      "sparse_custom_op": med.get("custom_op"), "autograd_floor": med["autograd_floor"],
                      "density": t.density}
        points.append((t.nnz * BATCH, med["kernels"], N_IN * N_OUT * BATCH, med["masked"]))
    _, small = measure(64, 10, 3, args.repeats)
    # least squares line through the sparse kernel times against connections x batch
    work = np.array([p[0] for p in points], dtype=float)
    slope, intercept = np.polyfit(work, [p[1] for p in points], 1)
    dense_big = float(np.median([p[3] for p in points]))
    dense_slope = (dense_big - small["masked"]) / (N_IN * N_OUT * BATCH - 64 * 10 * BATCH)
    cost_model = {"dense_overhead_s": small["masked"] - dense_slope * 64 * 10 * BATCH, "dense_per_mac_s": dense_slope,
                  "sparse_overhead_s": max(float(intercept), 0.0), "sparse_per_mac_s": float(slope)}
    result = {"benchmark": "layer 784->300, batch 32, forward+backward (random_regular)",
              "ratios": ratios, "ratios_python_calls": ratios_calls, "ratios_autograd": ratios_autograd,
              "ratios_autograd_numpy_layout": ratios_before, "ratios_custom_op": ratios_custom,
              "ratios_autograd_floor": ratios_floor,
              "targets": {d: 0.04 if d == "0.01" else 2 * float(d) for d in DENSITIES},
              "targets_autograd": {"0.01": 0.10, "0.1": 0.25},
              "baseline": "masked-dense PyTorch autograd, median seconds",
              "sparse_sides": {"ratios": "forward, then input gradient + SDDMM in one pass, in one numba call (as the fused epoch)",
                               "ratios_python_calls": "the same two kernels, one Python call each",
                               "ratios_autograd": "SparseLinear forward + backward through torch autograd",
                               "ratios_autograd_numpy_layout": "the same Function with the layout work in numpy "
                                                               "(before the batch-major entry points)",
                               "ratios_custom_op": "the two numba calls as torch.library custom ops",
                               "ratios_autograd_floor": "an autograd Function that computes nothing: torch's "
                                                        "charge for any Python autograd layer"},
              "threads": args.threads, "repeats": args.repeats,
              "timing": f"turns of {BLOCK} consecutive steps per side, sides alternated; median over turns of the mean step",
              "masked_seconds": {d: seconds[d]["masked"] for d in DENSITIES}, "seconds": seconds,
              "cost_model": cost_model, "machine": machine()}
    if args.json:
        print(json.dumps(result))
        return
    print(f"layer {N_IN}->{N_OUT}, batch {BATCH}, forward+backward; machine: {result['machine']}")
    for d in DENSITIES:
        s = seconds[d]
        print(f"  density {d:>5}: masked {s['masked'] * 1e6:8.1f} us  sparse kernels {s['sparse_kernels'] * 1e6:8.1f} us"
              f" (ratio {ratios[d]:.3f}, target {'<= 0.04' if d == '0.01' else f'<= {2 * float(d):.2f}'})"
              f"  2 calls {s['sparse_python_calls'] * 1e6:8.1f} us  via autograd {s['sparse_autograd'] * 1e6:8.1f} us (ratio {ratios_autograd[d]:.3f}, "
              f"numpy layout {ratios_before[d]:.3f}, custom op {ratios_custom.get(d, float('nan')):.3f}, "
              f"floor {ratios_floor[d]:.3f})")
    print(f"  cost model: {cost_model}")


if __name__ == "__main__":
    main()
