"""One sparse layer against nn.Linear over a grid of shapes, densities and batch sizes, and the
paper's layer (784 -> 300, batch 32) against masked-dense PyTorch in detail.

Usage: ``python benchmarks/bench_layers.py [--json] [--threads N] [--batch 1,32,128,512,2048]
[--shape 784x300,784x1024,1024x1024,4096x4096] [--density 0.01,0.02,0.1,0.3] [--no-paper]
[--block 1,4,8,16,32,64] [--under-load]``

**Block layers** (``--block``, ``block_grid`` in the JSON; replaces the grid and the paper's
layer): for every shape (default 1024x1024, 4096x4096), density (default 0.1, 0.05) and block
size, a ``random_regular`` graph of blocks with ``k = round(density * output blocks)`` (at
least 1), as :class:`~sparsetopo.nn.BlockSparseLinear` against ``nn.Linear``, interleaved in
one process: a training step (forward and backward) at batch 32 and above, the inference
forward at batch 1. Each point reports block seconds / ``nn.Linear`` seconds
(``ratio_linear``) and the exact density of the lifted layer; a point whose gathered inputs
would exceed ``BLOCK_GATHER_LIMIT`` bytes (blocks of 1 at large batches) is listed as skipped.
A training point also times the step's three batched matmuls alone on operands gathered
beforehand (:func:`block_matmuls`; ``matmuls_ratio_linear``): the floor under the layer's ratio
when gathers, copies and Python would cost nothing.

**The grid** (``grid`` in the JSON): for every shape, density (``random_regular``) and batch,
what a user compares: a training step (zero_grad, forward, backward) of ``nn.Linear``, of the
masked backend and of ``SparseLinear(backend="sparse")``, interleaved in one process with the
same threads; at batch 1 instead the inference forward (``eval()`` under ``torch.no_grad()``),
the latency case. Each point reports sparse seconds / ``nn.Linear`` seconds
(``ratio_linear``), / masked seconds (``ratio_masked``), and the GFLOP/s of the sparse and the
``nn.Linear`` side (2 flops per multiply-add on the connections that exist, three products per
training step, one per inference). Repeats per point are set so that each side runs about
``--seconds`` in all (at least 5 turns). The cost model of ``backend="auto"`` is fitted from
these points (``cost_model``), and ``auto_check`` says, for every training point, how much
slower the backend the shipped ``CPU_COST_MODEL`` picks is than the faster of masked and
sparse (``auto_check_refit``: the same with the constants fitted here). The grid also times
``SparseLinear(backend="auto", batch_size=batch)`` as a user gets it (backend and per-call path
by :mod:`sparsetopo.nn.plan`): ``auto_path`` is the path it ran, ``auto_over_best`` its time over
the faster of ``nn.Linear`` and the sparse kernels, and ``auto_choice_over_best`` the time of the
side that runs the same path (nn.Linear for "dense", the sparse layer for its kernels) over that
faster one: the cost of the plan's choice alone. Where the two differ, the auto layer and that
side ran the same code, and the difference is the noise of the measurement.

**Under load** (``--under-load``, ``under_load`` in the JSON; replaces the grid and the paper's
layer; shapes default to ``LOAD_SHAPES``, densities to 2% and 10%): what a busy core costs a
layer. For every point, the layer as a user gets it (``SparseLinear(backend="auto",
batch_size=batch)``: a training step, at batch 1 the inference forward) is timed twice in one
process: first on the idle machine with torch and numba on one thread, then with a busy Python
loop in a second process (one core held) and torch and numba back on their default threads.
``ratio`` is the loaded time over the idle one-thread time (target: at most
``LOAD_TARGET``); ``control_ratio`` the same for a fixed numpy gather timed in the same turns
(``_common.control_step``), what the machine itself charges one thread when the other core is busy. The fused epoch at batch 32 is measured the same way by ``bench_epoch.py
--under-load``.

**The paper's layer** (top-level ``ratios*``; skipped by ``--no-paper``):

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

"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from numba import njit

import numpy as np
import torch

from _common import (control_step, default_threads, idle_then_loaded, inference_step, interleaved_medians, load_average,
                     machine, set_threads, training_step)
from _variants import custom_op_step, floor_step, numpy_layout_step
from sparsetopo import build
from sparsetopo.nn import BlockSparseLinear, CostModel, SparseLinear
from sparsetopo.nn.calibration import alternating_medians, fit_line
from sparsetopo.nn.plan import CPU_COST_MODEL
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


DEFAULT_BATCHES = "1,32,128,512,2048"
DEFAULT_SHAPES = "784x300,784x1024,1024x1024,4096x4096"
DEFAULT_GRID_DENSITIES = "0.01,0.02,0.1,0.3"
# the acceptance: sparse / nn.Linear at one thread, batch 32..2048 on shapes from
# 784x1024 up, and at batch 1 (inference) for widths 1024 and 4096
TARGETS_LINEAR = {"0.1": 0.30, "0.02": 0.10}


def grid_point(n_in, n_out, density, batch, seconds, seed=0):
    """One point of the grid: nn.Linear, masked and sparse side by side (see the module doc)."""
    k = max(1, round(density * n_out))
    t = build("random_regular", n_in, n_out, k, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    linear = torch.nn.Linear(n_in, n_out)
    masked = SparseLinear(t, backend="masked")
    sparse = SparseLinear(t, backend="sparse")
    auto = SparseLinear(t, backend="auto", batch_size=batch)  # what a user gets: backend and path by the plan
    g = torch.randn(batch, n_out, generator=gen)
    if batch == 1:  # inference: the latency of one example
        x = torch.rand(batch, n_in, generator=gen)
        for m in (linear, masked, sparse, auto):
            m.eval()
        sides = {"linear": inference_step(linear, x), "masked": inference_step(masked, x),
                 "sparse": inference_step(sparse, x), "auto": inference_step(auto, x)}
        products = 1
    else:
        x = torch.rand(batch, n_in, generator=gen).requires_grad_()
        sides = {"linear": training_step(linear, x, g), "masked": training_step(masked, x, g),
                 "sparse": training_step(sparse, x, g), "auto": training_step(auto, x, g)}
        products = 3
    med, turns, block = _timed(sides, seconds)
    best = min(med["linear"], med["sparse"])
    flops_sparse = 2.0 * products * t.nnz * batch
    flops_dense = 2.0 * products * n_in * n_out * batch
    return {"shape": f"{n_in}x{n_out}", "n_in": n_in, "n_out": n_out, "density": density, "nnz": t.nnz,
            "batch": batch, "mode": "inference" if batch == 1 else "train", "seconds": med,
            "ratio_linear": med["sparse"] / med["linear"], "ratio_masked": med["sparse"] / med["masked"],
            "auto_path": auto.last_path, "auto_over_best": med["auto"] / best,
            "auto_choice_over_best": med[_side_of(auto.last_path)] / best,
            "gflops": {"sparse": flops_sparse / med["sparse"] / 1e9, "linear": flops_dense / med["linear"] / 1e9},
            "turns": turns, "steps_per_turn": block}


BLOCK_SHAPES, BLOCK_DENSITIES = "1024x1024,4096x4096", "0.1,0.05"
BLOCK_BATCH1_SECONDS = 1.5  # the least time per side of a batch-1 point (see block_point)
BLOCK_GATHER_LIMIT = 2 << 30  # bytes of gathered input blocks a point may need (D times the input)
# the targets for blocks of 32 (block / nn.Linear, one thread): training at batch 32..2048
# per density, and batch-1 inference at 10% per width
BLOCK_TARGETS = {"train": {"0.1": 0.20, "0.05": 0.12}, "inference_0.1": {"1024": 0.35, "4096": 0.15}}


def _side_of(path: str) -> str:
    """The side of the grid that runs ``path``: "dense" is nn.Linear's matmul, "masked" the
    masked layer, any other path the sparse layer's."""
    return {"dense": "linear", "masked": "masked"}.get(path, "sparse")


def _timed(sides, seconds):
    """Interleaved medians of ``sides`` (a new order each round), each side timed over a few
    consecutive calls per round, as many as fit in 5 ms (at most 10), so that its own data is
    warm as in a run of steps and no side's first call pays for the caches the one before it
    emptied (a 4096-wide dense layer empties them for whatever follows). Rounds are set so the
    whole takes about ``seconds`` per side; the call times come from a call after a first one,
    which may load compiled kernels. Returns the medians, the rounds and each side's calls per
    round."""
    once = {}
    for name, f in sides.items():
        f()
        tick = time.perf_counter()
        f()
        once[name] = max(time.perf_counter() - tick, 1e-9)
    block = {name: max(1, min(10, int(0.005 / t))) for name, t in once.items()}
    turns = max(5, int(seconds * len(sides) / sum(once[n] * block[n] for n in sides)))
    return alternating_medians(sides, turns, warmup=2, block=block), turns, block


def block_point(n_in, n_out, density, block, batch, seconds, seed=0):
    """One point of the block grid: nn.Linear and BlockSparseLinear side by side."""
    cols = -(-n_out // block)
    t = build("random_regular", n_in, n_out, max(1, round(density * cols)), seed=seed, block=block)
    point = {"shape": f"{n_in}x{n_out}", "n_in": n_in, "n_out": n_out, "density": density, "block": block,
             "k_blocks": t.k, "lifted_density": t.density, "batch": batch,
             "mode": "inference" if batch == 1 else "train"}
    gathered = 4 * batch * -(-t.nnz // block)
    if gathered > BLOCK_GATHER_LIMIT:
        return {**point, "skipped": f"gathered inputs need {gathered / 2**30:.1f} GiB"}
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    linear, layer = torch.nn.Linear(n_in, n_out), BlockSparseLinear(t)
    if batch == 1:
        x = torch.rand(1, n_in, generator=gen)
        sides = {"linear": inference_step(linear, x), "block": inference_step(layer, x)}
    else:
        x = torch.rand(batch, n_in, generator=gen).requires_grad_()
        g = torch.randn(batch, n_out, generator=gen)
        sides = {"linear": training_step(linear, x, g), "block": training_step(layer, x, g),
                 "matmuls": block_matmuls(layer.plan, batch, gen)}
    # batch-1 calls take microseconds, so a passing disturbance of the machine covers many turns
    # of them: they are timed longer, which costs little
    med, turns, per_turn = _timed(sides, max(seconds, BLOCK_BATCH1_SECONDS) if batch == 1 else seconds)
    floor = {"matmuls_ratio_linear": med["matmuls"] / med["linear"]} if "matmuls" in med else {}
    return {**point, "seconds": med, "ratio_linear": med["block"] / med["linear"], **floor, "turns": turns,
            "steps_per_turn": per_turn}


def block_matmuls(plan, batch, gen):
    """A callable running the three ``torch.bmm`` of a block layer's training step alone, on
    operands gathered beforehand, contiguous: forward products, input gradient, tile gradient
    (``nn/block_ops.py``). Its time over ``nn.Linear``'s is the layer's floor on this machine
    with gathers, copies and Python for free: what the small matrices of the tiles cost."""
    (q, width_in), (p, width_out) = plan.fwd_blocks.shape, plan.bwd_blocks.shape
    b_in, b_out = plan.block_in, plan.block_out
    inputs = torch.randn(q, batch, width_in * b_in, generator=gen)
    stacked = torch.randn(q, width_in * b_in, b_out, generator=gen)
    grads = torch.randn(p, batch, width_out * b_out, generator=gen)
    stacked_t = torch.randn(p, width_out * b_out, b_in, generator=gen)
    grad_out = torch.randn(q, batch, b_out, generator=gen)
    inputs_t = inputs.transpose(1, 2).contiguous()

    def step():
        torch.bmm(inputs, stacked)
        torch.bmm(grads, stacked_t)
        torch.bmm(inputs_t, grad_out)
    return step


def block_grid(shapes, densities, blocks, batches, seconds, report=None) -> list[dict]:
    points = []
    for n_in, n_out in shapes:
        for d in densities:
            for blk in blocks:
                for b in batches:
                    points.append(block_point(n_in, n_out, d, blk, b, seconds))
                    if report:
                        report(points[-1])
    return points


def _print_block_point(p):
    head = (f"  {p['shape']:>9} density {p['density']:<5} block {p['block']:>3} (lifted {p['lifted_density']:.3f}) "
            f"batch {p['batch']:>4} {p['mode']:>9}: ")
    if "skipped" in p:
        print(head + "skipped, " + p["skipped"], flush=True)
    else:
        print(head + f"block/linear {p['ratio_linear']:.3f}  (linear {p['seconds']['linear'] * 1e3:.2f} ms)", flush=True)


def fit_cost_model(points) -> dict:
    """Straight lines (:class:`CostModel`) through the points by :func:`fit_line` (the fit
    ``sparsetopo calibrate`` uses: relative error, so small layers count as much as large ones):
    the training lines from the training points, the ``infer_*`` lines from the batch-1
    inference points (each set only where the points hold at least two layer sizes)."""
    def lines(group, dense_work, dense_side, sparse_work, names):
        dense, sparse = [dense_work(p) for p in group], [sparse_work(p) for p in group]
        if len(set(dense)) < 2 or len(set(sparse)) < 2:
            return {}   # one layer size (a narrow --shape/--batch run): no line to fit
        return dict(zip(names, fit_line(dense, [p["seconds"][dense_side] for p in group])
                        + fit_line(sparse, [p["seconds"]["sparse"] for p in group])))

    train = [p for p in points if p["mode"] == "train"]
    infer = [p for p in points if p["mode"] == "inference"]
    # batch 1: what the "dense" path (a torch matmul, as nn.Linear's) costs against "vector"
    return {**lines(train, lambda p: p["n_in"] * p["n_out"] * p["batch"], "masked", lambda p: p["nnz"] * p["batch"],
                    ("dense_overhead_s", "dense_per_mac_s", "sparse_overhead_s", "sparse_per_mac_s")),
            **lines(infer, lambda p: p["n_in"] * p["n_out"], "linear", lambda p: p["nnz"],
                    ("infer_dense_overhead_s", "infer_dense_per_mac_s", "infer_sparse_overhead_s",
                     "infer_sparse_per_mac_s"))}


def auto_check(points, model: CostModel) -> list[dict]:
    """For each training point: the backend the cost model picks, and its time over the faster one's."""
    rows = []
    for p in points:
        if p["mode"] != "train":
            continue
        pick = ("sparse" if model.sparse_seconds(p["nnz"], p["batch"]) < model.dense_seconds(p["n_in"], p["n_out"], p["batch"])
                else "masked")
        best = min(p["seconds"]["sparse"], p["seconds"]["masked"])
        rows.append({"shape": p["shape"], "density": p["density"], "batch": p["batch"], "auto": pick,
                     "slowdown": p["seconds"][pick] / best})
    return rows


def paper_layer(repeats) -> dict:
    """The paper's layer in detail (the ``ratios*`` keys; see the module doc)."""
    ratios, ratios_calls, ratios_autograd, seconds = {}, {}, {}, {}
    ratios_before, ratios_custom, ratios_floor = {}, {}, {}
    for d in DENSITIES:
        k = max(1, round(float(d) * N_OUT))
        t, med = measure(N_IN, N_OUT, k, repeats)
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
    return {"ratios": ratios, "ratios_python_calls": ratios_calls, "ratios_autograd": ratios_autograd,
            "ratios_autograd_numpy_layout": ratios_before, "ratios_custom_op": ratios_custom,
            "ratios_autograd_floor": ratios_floor,
            "targets": {d: 0.04 if d == "0.01" else 2 * float(d) for d in DENSITIES},
            "targets_autograd": {"0.01": 0.10, "0.1": 0.25},
            "baseline": "masked-dense PyTorch autograd, median seconds",
            "sparse_sides": {"ratios": "forward, then input gradient + SDDMM in one pass, in one numba call (as the fused epoch)",
                             "ratios_python_calls": "the same two kernels, one Python call each",
                             "ratios_autograd": "SparseLinear forward + backward through torch autograd",
                             "ratios_autograd_numpy_layout": "the Function of an earlier version, with the layout work "
                                                             "in numpy and the untiled kernels",
                             "ratios_custom_op": "the two numba calls as torch.library custom ops",
                             "ratios_autograd_floor": "an autograd Function that computes nothing: torch's "
                                                      "charge for any Python autograd layer"},
            "repeats": repeats,
            "timing": f"turns of {BLOCK} consecutive steps per side, sides alternated; median over turns of the mean step",
            "masked_seconds": {d: seconds[d]["masked"] for d in DENSITIES}, "seconds": seconds}


def run_blocks(args):
    """The ``--block`` mode: the block grid, printed as it runs, or one JSON object."""
    shape = args.shape if args.shape != DEFAULT_SHAPES else BLOCK_SHAPES
    density = args.density if args.density != DEFAULT_GRID_DENSITIES else BLOCK_DENSITIES
    points = block_grid(_shapes(shape), [float(v) for v in density.split(",")], [int(v) for v in args.block.split(",")],
                        [int(v) for v in args.batch.split(",")], args.seconds,
                        report=None if args.json else _print_block_point)
    result = {"benchmark": "BlockSparseLinear against nn.Linear, forward+backward (batch 1: inference), "
                           "random_regular graph of blocks",
              "block_grid": points, "block_targets": BLOCK_TARGETS, "threads": args.threads,
              "grid_seconds_per_side": args.seconds, "machine": machine()}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"  machine: {result['machine']}")


LOAD_SHAPES = "784x1024,1024x1024,4096x4096"
LOAD_DENSITIES = "0.02,0.1"
LOAD_TARGET = 1.3  # the acceptance: loaded time / idle one-thread time at every point


def _auto_side(n_in, n_out, density, batch, seed=0):
    """The layer as a user gets it at one grid point, and a callable timing its step."""
    t = build("random_regular", n_in, n_out, max(1, round(density * n_out)), seed=seed)
    gen = torch.Generator().manual_seed(seed)
    layer = SparseLinear(t, backend="auto", batch_size=batch)
    if batch == 1:
        return layer.eval(), inference_step(layer, torch.rand(1, n_in, generator=gen))
    x = torch.rand(batch, n_in, generator=gen).requires_grad_()
    return layer, training_step(layer, x, torch.randn(batch, n_out, generator=gen))


def under_load(shapes, densities, batches, seconds, rounds=5, report=None) -> list[dict]:
    """The ``--under-load`` points: for each, ``rounds`` alternations of the idle one-thread time
    and the loaded default-thread time (medians of each), so that drift hits both alike, with
    the machine's own charge (:func:`_common.control_step`) timed in the same turns."""
    control = control_step()
    points = []
    for n_in, n_out in shapes:
        for d in densities:
            for b in batches:
                layer, step = _auto_side(n_in, n_out, d, b)
                for threads in (1, default_threads()):  # compile and warm both settings before timing
                    set_threads(threads)
                    _timed({"auto": step}, 0.05)
                sides = {"auto": step, "control": control}
                idle, loaded = idle_then_loaded(
                    lambda: (load_average(), _timed(sides, seconds / rounds)[0]), rounds)
                med = {(phase, side): statistics.median(r[side] for _, r in runs)
                       for phase, runs in (("idle", idle), ("loaded", loaded)) for side in sides}
                points.append({"shape": f"{n_in}x{n_out}", "density": d, "batch": b,
                               "mode": "inference" if b == 1 else "train", "path": layer.last_path,
                               "idle_one_thread_s": med["idle", "auto"], "loaded_s": med["loaded", "auto"],
                               "ratio": med["loaded", "auto"] / med["idle", "auto"],
                               "control_ratio": med["loaded", "control"] / med["idle", "control"],
                               "rounds": rounds, "idle_load_average": max(load for load, _ in idle)})
                if report:
                    report(points[-1])
    return points


def run_under_load(args):
    """The ``--under-load`` mode, printed as it runs, or one JSON object."""
    shape = args.shape if args.shape != DEFAULT_SHAPES else LOAD_SHAPES
    density = args.density if args.density != DEFAULT_GRID_DENSITIES else LOAD_DENSITIES

    def show(p):
        print(f"  {p['shape']:>9} density {p['density']:<5} batch {p['batch']:>4} {p['mode']:>9} ({p['path']}): "
              f"loaded / idle one thread {p['ratio']:.3f}  control {p['control_ratio']:.3f}  (idle {p['idle_one_thread_s'] * 1e3:.3f} ms)", flush=True)
    points = under_load(_shapes(shape), [float(v) for v in density.split(",")], [int(v) for v in args.batch.split(",")],
                        args.seconds, report=None if args.json else show)
    result = {"benchmark": "SparseLinear(backend='auto') with one core busy and default threads, against its "
                           "idle one-thread time (training step; batch 1: inference)",
              "under_load": points, "target": LOAD_TARGET, "worst": max(p["ratio"] for p in points),
              "worst_control": max(p["control_ratio"] for p in points),
              "grid_seconds_per_side": args.seconds, "machine": machine()}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"  worst: {result['worst']:.3f} (target {LOAD_TARGET}), control's worst {result['worst_control']:.3f}; machine: {result['machine']}")


def _shapes(text):
    return [tuple(int(v) for v in s.lower().split("x")) for s in text.split(",") if s]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=300, help="steps per side for the paper's layer")
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and numba (default: theirs)")
    parser.add_argument("--batch", default=DEFAULT_BATCHES, help="batch sizes of the grid (1: inference)")
    parser.add_argument("--shape", default=DEFAULT_SHAPES, help="layer shapes of the grid, n_in x n_out")
    parser.add_argument("--density", default=DEFAULT_GRID_DENSITIES, help="densities of the grid")
    parser.add_argument("--seconds", type=float, default=0.5, help="timed seconds per side and grid point")
    parser.add_argument("--no-paper", action="store_true", help="skip the detailed paper's-layer section")
    parser.add_argument("--block", default=None,
                        help="block sizes: time BlockSparseLinear against nn.Linear instead (e.g. 1,4,8,16,32,64; "
                             f"shapes default to {BLOCK_SHAPES}, densities to {BLOCK_DENSITIES})")
    parser.add_argument("--under-load", action="store_true",
                        help="time the layer with one core busy against its idle one-thread time instead "
                             f"(shapes default to {LOAD_SHAPES}, densities to {LOAD_DENSITIES})")
    args = parser.parse_args()
    if args.under_load:
        run_under_load(args)
        return
    set_threads(args.threads)
    if args.block is not None:
        run_blocks(args)
        return
    result = {"benchmark": "one sparse layer against nn.Linear (grid) and the paper's layer 784->300, batch 32, "
                           "forward+backward (random_regular)"}
    if not args.no_paper:
        result.update(paper_layer(args.repeats))
    points = []
    for n_in, n_out in _shapes(args.shape):
        for d in (float(v) for v in args.density.split(",")):
            for b in (int(v) for v in args.batch.split(",")):
                points.append(grid_point(n_in, n_out, d, b, args.seconds))
                if not args.json:
                    p = points[-1]
                    print(f"  {p['shape']:>9} density {d:<5} batch {b:>4} {p['mode']:>9}: sparse/linear "
                          f"{p['ratio_linear']:.3f}  sparse/masked {p['ratio_masked']:.3f}  auto ({p['auto_path']})/best "
                          f"{p['auto_over_best']:.3f}  GFLOP/s sparse "
                          f"{p['gflops']['sparse']:.1f} linear {p['gflops']['linear']:.1f}", flush=True)
    result["grid"] = points
    result["grid_targets_linear"] = TARGETS_LINEAR
    if points:
        fitted = fit_cost_model(points)
        result["cost_model"] = fitted
        result["auto_check"] = auto_check(points, CPU_COST_MODEL)  # what users get
        result["auto_check_refit"] = auto_check(points, CostModel(**{**CPU_COST_MODEL.__dict__, **fitted}))
    result.update({"threads": args.threads, "grid_seconds_per_side": args.seconds, "machine": machine()})
    if args.json:
        print(json.dumps(result))
        return
    if "ratios" in result:
        print(f"layer {N_IN}->{N_OUT}, batch {BATCH}, forward+backward; machine: {result['machine']}")
        for d in DENSITIES:
            s = result["seconds"][d]
            print(f"  density {d:>5}: masked {s['masked'] * 1e6:8.1f} us  sparse kernels {s['sparse_kernels'] * 1e6:8.1f} us"
                  f" (ratio {result['ratios'][d]:.3f})  via autograd {s['sparse_autograd'] * 1e6:8.1f} us "
                  f"(ratio {result['ratios_autograd'][d]:.3f}, earlier Function {result['ratios_autograd_numpy_layout'][d]:.3f}, "
                  f"floor {result['ratios_autograd_floor'][d]:.3f})")
    if "cost_model" in result:
        print(f"  cost model: {result['cost_model']}")
        if result["auto_check"]:
            print(f"  auto's worst choice: {max(r['slowdown'] for r in result['auto_check']):.3f} x the faster backend")
        print(f"  auto's worst point (its path against the faster of nn.Linear and sparse): "
              f"{max(p['auto_over_best'] for p in points):.3f}")


if __name__ == "__main__":
    main()
