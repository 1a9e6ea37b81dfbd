"""This machine's batch-1 inference lines, measured: what ``sparsetopo calibrate`` writes.

A layer built with ``backend="auto"`` runs one example on the dense matrix of its connected
weights or on the sparse dot products, whichever the cost model predicts faster
(:func:`sparsetopo.nn.plan.call_path`). The shipped lines come from one machine, and the
crossover moves with the CPU more than any other: the dense matrix-vector product is bound by
memory bandwidth, the sparse one by gathers, whose speed differs between CPU generations. So
this module times both on the machine at hand, over a few shapes and densities, and fits the
two lines (an overhead plus a cost per entry, as :func:`fit_line`); the result goes into a
file that ``SPARSETOPO_INFERENCE_COSTS`` names (:func:`sparsetopo.nn.plan.inference_cost_model`).

Both sides are timed as the layer runs them, on the calling process's threads: ``F.linear`` on
the dense matrix (the "dense" path) and the one-example kernel on the CSC copy (the "vector"
path), in alternating turns so that a passing load hits both alike. The layer's own call
overhead, the same for both, is left out. Nothing here changes a model's parameters: the lines
choose between paths of the same weights.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.plan import INFERENCE_FIELDS
from sparsetopo.nn.sparse_autograd import vector_forward, vector_weights
from sparsetopo.topology import build

#: The file's format name and version (:func:`sparsetopo.nn.plan.inference_cost_model` reads ``costs``).
FORMAT, FORMAT_VERSION = "sparsetopo-inference-costs", 1
#: The layers timed: the paper's first layer and two square ones, each at three densities
#: around the crossovers seen so far (10-20% of the connections).
SHAPES = ((784, 300), (1024, 1024), (2048, 2048))
DENSITIES = (0.02, 0.1, 0.3)


def fit_line(work, seconds) -> tuple[float, float]:
    """``(overhead, per)``: the line ``overhead + per * work`` through the points, by least
    squares on the relative error (each equation divided by its time), so that small layers
    count as much as large ones; a negative overhead is clipped to 0."""
    work, seconds = np.asarray(work, float), np.asarray(seconds, float)
    if work.size < 2 or np.unique(work).size < 2:
        raise SparsetopoError(f"a line needs at least two different amounts of work, not {work.tolist()}")
    a = np.stack([np.ones_like(work), work], axis=1) / seconds[:, None]
    (overhead, per), *_ = np.linalg.lstsq(a, np.ones_like(seconds), rcond=None)
    return max(float(overhead), 0.0), float(per)


def alternating_medians(functions: dict, turns: int, warmup: int = 2, block: int | dict = 1,
                        clock=time.perf_counter) -> dict:
    """Median seconds of each callable over ``turns`` rounds, each round timing ``block``
    consecutive calls of every callable in turn (their mean is one sample), after ``warmup``
    calls of each. ``block`` may be a dict giving each callable its own count.

    Taking turns lets a passing load hit all alike. Each round takes the callables in a new
    order (shuffled by a generator of fixed seed), so that each follows each of the others
    about equally often: what runs just before a call decides what is left in the caches for
    it (after a 4096-wide dense layer, a sparse one ran at twice its time), and a fixed order,
    or a rotation of one, would charge that to the same side every round.
    ``block`` > 1 keeps a callable's own data warm across its calls, as consecutive steps do.
    ``clock`` reads the time (``time.thread_time`` counts only the calling thread's CPU time)."""
    for f in functions.values():
        for _ in range(warmup):
            f()
    names = list(functions)
    blocks = block if isinstance(block, dict) else dict.fromkeys(names, block)
    times = {name: [] for name in names}
    order = random.Random(0)
    for _ in range(turns):
        order.shuffle(names)
        for name in names:
            f, calls = functions[name], blocks[name]
            tick = clock()
            for _ in range(calls):
                f()
            times[name].append((clock() - tick) / calls)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _medians(sides: dict, seconds: float) -> dict:
    """:func:`alternating_medians` with turns enough for each side to run about ``seconds`` (at
    least 20), estimated from one call of each after two warm-up calls."""
    for f in sides.values():
        f()
        f()
    tick = time.perf_counter()
    for f in sides.values():
        f()
    turns = max(20, int(seconds * len(sides) / max(time.perf_counter() - tick, 1e-9)))
    return alternating_medians(sides, turns, warmup=0)


def measure(seconds: float = 0.2, shapes=SHAPES, densities=DENSITIES, seed: int = 0) -> list[dict]:
    """One point per shape and density: the layer's ``n_in``, ``n_out``, ``nnz`` and the median
    seconds of one example on the dense path (``dense_s``) and the sparse one (``sparse_s``)."""
    if not seconds > 0:
        raise SparsetopoError(f"seconds={seconds!r} must be a positive time per point")
    gen = torch.Generator().manual_seed(seed)
    points = []
    for n_in, n_out in shapes:
        for density in densities:
            topology = build("random_regular", n_in, n_out, max(1, round(density * n_out)), seed=seed)
            layer = SparseLinear(topology, backend="sparse")
            values, bias, index = layer.values.detach(), layer.bias.detach(), layer.index
            csc = vector_weights(values, index)
            weight = layer.dense_weight()
            x = torch.rand(1, n_in, generator=gen)
            b = bias.numpy()   # the layer keeps this view between calls: not part of a call's time
            with torch.no_grad():
                # what the layer calls on each path, without its prologue (the same on both)
                med = _medians({"dense": lambda: F.linear(x, weight, bias),
                                "sparse": lambda: vector_forward(x.numpy(), csc, b, index)}, seconds)
            points.append({"n_in": n_in, "n_out": n_out, "nnz": topology.nnz, "dense_s": med["dense"],
                           "sparse_s": med["sparse"]})
    return points


def calibrate(seconds: float = 0.2, shapes=SHAPES, densities=DENSITIES, seed: int = 0) -> dict:
    """The file ``sparsetopo calibrate`` writes: the fitted batch-1 lines (``costs``, the
    :data:`~sparsetopo.nn.plan.INFERENCE_FIELDS`), the points they were fitted to, and the threads
    they were timed on."""
    points = measure(seconds, shapes, densities, seed)
    dense = fit_line([p["n_in"] * p["n_out"] for p in points], [p["dense_s"] for p in points])
    sparse = fit_line([p["nnz"] for p in points], [p["sparse_s"] for p in points])
    if not (dense[1] > 0 and sparse[1] > 0):   # a time falling as the work grows: the timings were disturbed
        raise SparsetopoError(f"the fitted cost per entry is {dense[1]:.3g} s (dense) and {sparse[1]:.3g} s "
                              "(sparse), not both positive: the machine was busy; calibrate again on an idle "
                              "machine or with more seconds per point")
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "costs": dict(zip(INFERENCE_FIELDS, dense + sparse)),
            "torch_threads": torch.get_num_threads(), "points": points}
