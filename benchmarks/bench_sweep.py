"""The paper's grid as a user runs it: ``run_sweep`` end to end, against its baselines.

Everything below is measured in one run, on one machine (``--smoke`` shrinks every size so
that the script checks itself in well under a minute; its numbers mean nothing).

paper grid   What is timed is ``sparsetopo.sweep.run_sweep(sample, db_path=<temporary
             SQLite>, measures=False)`` with the DEFAULT executor ("process") and default
             workers (all cores; ``--workers`` overrides), wall clock from the call to its
             return: process pool start, data loading in the workers, model building,
             training, the per-epoch test evaluation and the store's writes are all inside.
             The sample: ``--paper-sample`` of the paper preset's 3067 TrainConfigs
             (``load_spec("paper")``), stratified by hidden sizes and by quartile bins of the
             input density k_in / H, each stratum drawn proportionally to its share of the
             grid (largest remainders; ``numpy.random.default_rng(SAMPLE_SEED)``), so the
             strata are represented at their share. Each config keeps its grid cell and gets
             ``dataset`` = Debian's Fashion-MNIST (60000/10000 examples of 784 features, like
             MNIST; files under ``--data-dir``, passed to ``run_sweep`` as ``data_dir``) when
             present, else "synthetic" (784 features, 8000 training examples), and
             ``epochs`` = ``--paper-epochs``.
             ``paper_grid_projected_hours = wall * (3067 / n) * (50 / epochs) / 3600 *
             (60000 / examples trained per epoch)`` (the last factor is 1 on Fashion-MNIST,
             7.5 on synthetic data or more under ``--paper-limit-train``). Before it, an untimed
             ``run_sweep`` of the same runs on 64 examples for one epoch fills numba's on-disk
             kernel cache (a once-per-machine cost). The formula scales everything in the wall,
             pool start and data loading included, by 3067/n * 50/epochs;
             ``paper_grid_projected_hours_busy`` replaces wall by the stored runs' ``seconds``
             summed / workers, which leaves those (and cores idle at the end) out.
baseline     The sequential masked-dense loop on the same sample: ``train(replace(config,
             backend="masked", epochs=1, limit_train=--baseline-examples))`` one by one in this
             process with one torch thread; its epoch time is scaled per step to 1875 steps
             (60000 examples at batch 32) and the measured test evaluation of the trained
             network (scaled to 10000 examples) is added, giving seconds_per_epoch.
             ``baseline_projected_hours = sum(seconds_per_epoch) * (3067 / n) * 50 / workers /
             3600``: ``workers`` such processes in parallel, as many as ``run_sweep`` used.
GEMM rate    ``torch.mm`` of (32 x n_in) @ (n_in x n_out), float32, one torch thread, for each
             layer shape of the sample; ``gemm_gflops_per_core`` = the sample's dense
             connections / the time to multiply them (the connection-weighted harmonic mean of
             the shapes' rates), ``gemm_gflops = gemm_gflops_per_core * workers``.
             ``peak_fraction = 6 * sum(connections of the sampled runs) * examples per epoch *
             epochs / wall / 1e9 / gemm_gflops``: forward, input gradient and weight gradient
             are each a multiply-add per connection and example; the evaluation (and every
             other cost of the sweep) is inside ``wall`` but not counted as work.
quick grid   ``population_speedup``: the quick preset's largest population group (digits,
             64-H-10), ``train_population(engine="fused")`` on one numba thread against
             ``train()`` one network at a time on one torch thread, in core-seconds per
             network-epoch (model building and per-epoch evaluation included on both sides).
vmap         ``vmap_speedup``: the same population members trained by the obvious PyTorch
             approach, ``torch.func.vmap(torch.func.grad_and_value(mse))`` over the members'
             stacked dense weights (P, n_in, n_out) and masks (sigmoid MLP, MSE on one-hot
             targets, Nesterov SGD with the config's lr and momentum, each weight gradient
             multiplied by its mask), one torch thread, each member on its own shuffle (not
             ``train()``'s: the numbers differ, the work per step is the same), per-epoch test
             evaluation and model building included. ``vmap_speedup`` = population
             networks/hour / vmap networks/hour.

Networks per hour on the quick grid = 3600 * workers / (core-seconds per network-epoch * the
grid's epochs). Run ``python benchmarks/bench_sweep.py --json > benchmarks/results/bench_sweep.json``
on an otherwise idle machine (then add ``machine.description``, see ``write_docs.py``); the
output carries ``command``, ``date`` and the ``machine`` block already.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from _common import machine
from sparsetopo.data import dataset_shape, load_dataset, locate
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep import SweepStore, load_results, run_sweep
from sparsetopo.sweep.executors import default_workers
from sparsetopo.train import TrainConfig, accuracy, build_model, members_per_stack, population_key, train, \
    train_population

PAPER_NETWORKS = 3067            # the paper preset's grid (load_spec("paper"))
PAPER_EPOCHS = 50
PAPER_TRAIN = 60000
PAPER_TEST = 10000
PAPER_BATCH = 32
PAPER_STEPS = PAPER_TRAIN // PAPER_BATCH   # 1875
SAMPLE_SEED = 20240601
FASHION_DIR = "/usr/share/datasets/fashion-mnist"   # Debian's dataset-fashion-mnist
TARGETS = {"paper_grid_projected_hours": 12.0, "peak_fraction": 0.5, "population_speedup": 15.0,
           "vmap_speedup": 3.0}
CONSTRUCTION_NAMES = ("fully_connected", "random_edge", "random_rotating", "random_regular",
                      "regular_rotating", "long_short_rotating", "fibonacci_rotating")

# Sizes: flags left unset take these (or the smoke sizes under --smoke).
DEFAULTS = {"paper_sample": 32, "paper_epochs": 2, "paper_limit_train": None, "workers": None,
            "baseline_examples": 6400, "quick_members": 33, "sequential_sample": 8, "quick_epochs": 1,
            "vmap_epochs": 2, "repeats": 2, "threads": 1, "gemm_seconds": 0.05}
SMOKE = {"paper_sample": 3, "paper_epochs": 1, "paper_limit_train": 2000, "workers": 1,
         "baseline_examples": 640, "quick_members": 4, "sequential_sample": 2, "quick_epochs": 1,
         "vmap_epochs": 1, "repeats": 1, "threads": 1, "gemm_seconds": 0.005}


# -- the paper grid's sample ------------------------------------------------------------------------
def paper_grid() -> list[TrainConfig]:
    from sparsetopo.sweep import expand, load_spec

    return expand(load_spec("paper"))


def input_density(config: TrainConfig) -> float:
    sizes = config.sizes(784, 10)
    return config.layer_degrees(sizes)[0] / config.hidden[0]


def hidden_label(config: TrainConfig) -> str:
    return "-".join(map(str, config.hidden))


def strata(configs: list[TrainConfig]) -> dict[tuple[str, int], list[int]]:
    """Grid indices per (hidden sizes, input-density quartile bin), in sorted stratum order.

    The deep networks (3% of the grid) form one stratum, not four: split four ways their
    shares would round to no draw at all, and the grid's costliest networks would be left out.
    """
    densities = np.array([input_density(c) for c in configs])
    edges = np.unique(np.quantile(densities, [0.25, 0.5, 0.75]))
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (c, d) in enumerate(zip(configs, densities)):
        bin_ = 0 if len(c.hidden) > 1 else int(np.searchsorted(edges, d, side="right"))
        groups.setdefault((hidden_label(c), bin_), []).append(i)
    return dict(sorted(groups.items()))


def allocate(sizes: list[int], n: int) -> list[int]:
    """``n`` draws shared proportionally to ``sizes`` (largest remainders, ties in order)."""
    quotas = [n * s / sum(sizes) for s in sizes]
    counts = [int(q) for q in quotas]
    by_remainder = sorted(range(len(sizes)), key=lambda i: counts[i] - quotas[i])
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    return [min(c, s) for c, s in zip(counts, sizes)]


def stratified_sample(configs: list[TrainConfig], n: int, seed: int = SAMPLE_SEED):
    """``(indices, strata summary)``: about ``n`` grid indices, each stratum at its share."""
    groups = strata(configs)
    gen = np.random.default_rng(seed)
    chosen, summary = [], []
    for (hidden, bin_), members, k in zip(groups, groups.values(), allocate([len(m) for m in groups.values()], n)):
        picked = sorted(int(members[j]) for j in gen.choice(len(members), size=k, replace=False))
        chosen += picked
        dens = [input_density(configs[i]) for i in members]
        summary.append({"hidden": hidden, "density_bin": bin_, "density_range": [min(dens), max(dens)],
                        "grid_networks": len(members), "sampled": k, "indices": picked})
    return chosen, summary


def paper_dataset(choice: str, data_dir: str) -> tuple[str, str | None]:
    """("fashion-mnist", data_dir) when its files are there (never downloaded), else ("synthetic", None)."""
    if choice in ("auto", "fashion-mnist"):
        try:
            locate("fashion-mnist", data_dir, download=False)
            return "fashion-mnist", data_dir
        except SparsetopoError:
            if choice == "fashion-mnist":
                raise
    return "synthetic", None


def sample_configs(grid, indices, dataset, epochs, limit_train) -> list[TrainConfig]:
    return [replace(grid[i], dataset=dataset, epochs=epochs, limit_train=limit_train) for i in indices]


# -- run_sweep end to end ---------------------------------------------------------------------------
def timed_sweep(configs: list[TrainConfig], workers: int | None, data_dir: str | None):
    """Wall seconds of run_sweep (default executor), its summary, the stored runs, the workers
    it used (from the store's meta) and the statuses its on_result callback saw."""
    statuses: Counter = Counter()
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as tmp:
        db = Path(tmp) / "sweep.sqlite"
        tick = time.perf_counter()
        summary = run_sweep(configs, db_path=db, workers=workers, measures=False, data_dir=data_dir,
                            on_result=lambda event: statuses.update([event.status]))
        wall = time.perf_counter() - tick
        runs = load_results(db)
        with SweepStore(db, readonly=True) as store:
            used = store.meta().get("workers") or workers or default_workers()
    return wall, summary, runs, int(used), dict(statuses)


def per_stratum(summary: list[dict], runs, run_ids: dict[int, str]) -> list[dict]:
    """Each stratum's sampled runs: mean seconds_per_epoch from the store, how many the population engine trained."""
    out = []
    for s in summary:
        rows = runs[runs["run_id"].isin([run_ids[i] for i in s["indices"]])]
        spe = rows["seconds_per_epoch"].dropna()
        out.append({**{k: v for k, v in s.items() if k != "indices"}, "stored": int(len(rows)),
                    "mean_seconds_per_epoch": float(spe.mean()) if len(spe) else None,
                    "population_runs": int((rows["trained_with"] == "population").sum())})
    return out


def run_rows(runs) -> list[dict]:
    """The stored runs, a few columns each (NaN as None)."""
    def number(value):
        return None if value is None or value != value else float(value)
    return [{"hidden": r.hidden, "density_in": number(r.density_in), "connections": int(r.connections),
             "seconds_per_epoch": number(r.seconds_per_epoch), "trained_with": r.trained_with, "backend": r.backend}
            for r in runs.itertuples()]


def bench_paper(args, grid: list[TrainConfig]) -> tuple[dict, list[TrainConfig]]:
    """The run_sweep measurement and its projection; also the sampled configs (for the baselines)."""
    from sparsetopo.sweep import run_id

    indices, summary = stratified_sample(grid, args.paper_sample)
    dataset, data_dir = paper_dataset(args.dataset, args.data_dir)
    configs = sample_configs(grid, indices, dataset, args.paper_epochs, args.paper_limit_train)
    n_train = min(dataset_shape(dataset, data_dir)[2], args.paper_limit_train or 10**9)
    # Untimed: the same runs on 64 examples for 1 epoch fill numba's on-disk kernel cache (a
    # once-per-machine cost); the timed sweep's fresh workers still import, load data and start.
    warmup = timed_sweep(sample_configs(grid, indices, dataset, 1, 64), args.workers, data_dir)[0]
    wall, sweep, runs, workers, statuses = timed_sweep(configs, args.workers, data_dir)
    scale = PAPER_TRAIN / n_train
    factor = (PAPER_NETWORKS / len(configs)) * (PAPER_EPOCHS / args.paper_epochs) / 3600 * scale
    busy = float(runs["seconds"].sum()) / workers        # the runs' own (core-)seconds, per worker
    run_ids = {i: run_id(c) for i, c in zip(indices, configs)}
    return {
        "dataset": dataset, "data_dir": data_dir, "train_examples_per_epoch": n_train, "data_scale": scale,
        "grid_networks": len(grid), "sample": len(configs), "epochs": args.paper_epochs, "workers": workers,
        "executor": "process (run_sweep's default)", "wall_seconds": wall, "projected_hours": wall * factor,
        "warmup_seconds": warmup, "busy_seconds_per_worker": busy, "busy_fraction": busy / wall,
        "projected_hours_busy": busy * factor,
        "stored": sweep.stored, "failed": sweep.failed, "restarts": sweep.restarts, "statuses": statuses,
        "connections": int(runs["connections"].sum()), "sample_seed": SAMPLE_SEED,
        "trained_with": {str(k): int(v) for k, v in runs["trained_with"].value_counts().items()},
        "backends": sorted(str(b) for b in runs["backend"].unique()),
        "epochs_done": sorted(int(e) for e in runs["epochs_done"].unique()),
        "strata": per_stratum(summary, runs, run_ids),
        "runs": run_rows(runs),
        "extrapolation": (f"hours = wall * ({PAPER_NETWORKS} / {len(configs)} sampled) * ({PAPER_EPOCHS} / "
                          f"{args.paper_epochs} epochs) / 3600 * ({PAPER_TRAIN} / {n_train} training examples "
                          f"per epoch) on {workers} workers; the sample is proportional, so each stratum (hidden "
                          "sizes x input-density quartile) counts at its share of the grid"
                          + ("; synthetic data, so the time is scaled by 60000/8000" if dataset == "synthetic"
                             else "")
                          + "; projected_hours_busy: the same with wall replaced by the stored runs' seconds / "
                            "workers (pool start, imports, data loading and idle cores at the end not scaled up)"),
    }, configs


# -- the masked-dense baseline -----------------------------------------------------------------------
def baseline_epoch(config: TrainConfig, data, examples: int, x_test, y_test) -> dict:
    """One masked-dense epoch of ``examples`` examples, scaled to the paper's 1875 steps, plus
    the trained network's test evaluation scaled to 10000 examples."""
    result = train(replace(config, backend="masked", epochs=1, limit_train=examples), dataset=data)
    step = result.history[0].seconds / math.ceil(min(examples, len(data.x_train)) / config.batch_size)
    tick = time.perf_counter()
    accuracy(result.model, x_test, y_test)
    evaluation = (time.perf_counter() - tick) * PAPER_TEST / len(y_test)
    return {"step_seconds": step, "eval_seconds": evaluation, "seconds_per_epoch": PAPER_STEPS * step + evaluation}


def bench_baseline(configs: list[TrainConfig], data_dir, examples: int, workers: int) -> dict:
    data = load_dataset(configs[0].dataset, data_dir=data_dir)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    baseline_epoch(configs[0], data, min(examples, 256), x_test, y_test)        # warm-up
    per_run = [baseline_epoch(c, data, examples, x_test, y_test) for c in configs]
    total = sum(r["seconds_per_epoch"] for r in per_run)
    hours = total * (PAPER_NETWORKS / len(configs)) * PAPER_EPOCHS / workers / 3600
    return {"projected_hours": hours, "measured_examples": examples, "torch_threads": torch.get_num_threads(),
            "seconds_per_epoch": [r["seconds_per_epoch"] for r in per_run],
            "mean_step_ms": 1e3 * sum(r["step_seconds"] for r in per_run) / len(per_run),
            "extrapolation": (f"hours = sum(seconds_per_epoch) * ({PAPER_NETWORKS} / {len(configs)}) * "
                              f"{PAPER_EPOCHS} / workers ({workers}) / 3600; seconds_per_epoch = {PAPER_STEPS} * "
                              f"(epoch seconds of {examples} examples / its steps) + test evaluation scaled to "
                              f"{PAPER_TEST} examples; train(backend='masked') one by one, 1 torch thread; model "
                              "building (once per run) left out")}


# -- the GEMM rate ----------------------------------------------------------------------------------
def gemm_seconds(n_in: int, n_out: int, min_seconds: float, repeats: int = 5) -> float:
    """Best seconds of one (32 x n_in) @ (n_in x n_out) float32 ``torch.mm``."""
    x, w, out = torch.rand(PAPER_BATCH, n_in), torch.rand(n_in, n_out), torch.empty(PAPER_BATCH, n_out)
    calls, best = 1, float("inf")
    for _ in range(64):
        tick = time.perf_counter()
        for _ in range(calls):
            torch.mm(x, w, out=out)
        elapsed = time.perf_counter() - tick
        if elapsed < min_seconds:
            calls *= 2
            continue
        best = min(best, elapsed / calls)
        repeats -= 1
        if repeats == 0:
            break
    return best


def bench_gemm(configs: list[TrainConfig], workers: int, min_seconds: float) -> dict:
    weights: Counter = Counter()                   # dense connections per layer shape over the sample
    for c in configs:
        sizes = c.sizes(784, 10)
        weights.update({(a, b): a * b for a, b in zip(sizes, sizes[1:])})
    rates = {shape: 2 * PAPER_BATCH * shape[0] * shape[1] / gemm_seconds(*shape, min_seconds) / 1e9
             for shape in sorted(weights)}
    per_core = sum(weights.values()) / sum(weights[s] / rates[s] for s in weights)
    return {"gemm_gflops_per_core": per_core, "gemm_gflops": per_core * workers, "workers": workers,
            "per_shape": [{"n_in": a, "n_out": b, "gflops": rates[(a, b)], "dense_connections": weights[(a, b)]}
                          for a, b in sorted(weights)],
            "method": ("torch.mm (32 x n_in) @ (n_in x n_out), float32, 1 torch thread, best of 5; per core = "
                       "connection-weighted harmonic mean of the shapes' rates; gemm_gflops = per core * workers")}


# -- the quick grid: population vs one at a time ----------------------------------------------------
def quick_configs() -> tuple[list[TrainConfig], str]:
    """The quick preset's digits configs, or a representative list when it cannot be loaded."""
    try:
        from sparsetopo.sweep.spec import expand, load_spec

        configs = [c for c in expand(load_spec("quick")) if c.dataset == "digits"]
        if configs:
            return configs, "sparsetopo.sweep quick preset"
    except Exception as error:  # the preset is optional here; fall back and say so
        source = f"representative list (quick preset unavailable: {type(error).__name__})"
    else:
        source = "representative list (quick preset has no digits configs)"
    configs = []
    for construction in CONSTRUCTION_NAMES:
        degree_pairs = [(None, None)] if construction == "fully_connected" else \
            [(k0, k1) for k0 in (4, 8, 16, 32, 64) for k1 in (3, 10)]
        for k0, k1 in degree_pairs:
            for seed in range(2):
                configs.append(TrainConfig(dataset="digits", hidden=(100,), construction=construction,
                                           degrees=(k0, k1), epochs=100, lr=0.5, seed=seed))
    return configs, source


def largest_group(configs: list[TrainConfig]) -> list[TrainConfig]:
    groups: dict = {}
    for c in configs:
        groups.setdefault(population_key(c), []).append(c)
    return max(groups.values(), key=len)


def spread(configs: list[TrainConfig], count: int) -> list[TrainConfig]:
    """``count`` configs spread over the list (repeating with new seeds if it is shorter)."""
    out = []
    for i in range(count):
        c = configs[(i * len(configs)) // count if count <= len(configs) else i % len(configs)]
        if i >= len(configs):
            c = TrainConfig(**{**c.to_dict(), "seed": c.seed + 1000 * (i // len(configs))})
        out.append(c)
    return out


def with_(config: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig(**{**config.to_dict(), **changes})


def quick_population(members: int, epochs: int):
    """The quick grid, its source, its largest group, the digits data and ``members`` of the
    group (masked backend, ``epochs`` epochs): the population both engines train."""
    configs, source = quick_configs()
    group = largest_group(configs)
    digits = load_dataset(group[0].dataset)
    return configs, source, group, digits, [with_(c, epochs=epochs, backend="masked") for c in spread(group, members)]


def per_hour(seconds_per_network_epoch: float, workers: int, grid_epochs: int) -> float:
    return 3600.0 * workers / (seconds_per_network_epoch * grid_epochs)


def bench_quick(members: int, sample: int, epochs: int, workers: int, repeats: int, threads: int) -> dict:
    configs, source, group, digits, pop_configs = quick_population(members, epochs)
    grid_epochs = group[0].epochs
    seq_configs = [with_(c, epochs=epochs, backend="masked") for c in spread(group, sample)]
    auto_configs = [with_(c, backend="auto") for c in seq_configs]
    for c in (seq_configs[0], auto_configs[0]):
        train(c, dataset=digits)                               # warm-up (allocator, numba kernels)
    train_population(pop_configs[:2], dataset=digits, threads=threads)         # compiles the kernels
    train_population(pop_configs[:2], dataset=digits, engine="torch")

    def sequential(configs):                                   # seconds per network-epoch
        tick = time.perf_counter()
        for c in configs:
            train(c, dataset=digits)
        return (time.perf_counter() - tick) / (len(configs) * epochs)

    def stacked(engine):                                       # core-seconds per network-epoch
        tick = time.perf_counter()
        train_population(pop_configs, dataset=digits, engine=engine, threads=threads)
        used = threads if engine == "fused" else torch.get_num_threads()
        return (time.perf_counter() - tick) * used / (len(pop_configs) * epochs)

    # Interleaved repeats, best of each: other processes on a shared machine only add time.
    seq = pop = auto = stack = float("inf")
    for _ in range(repeats):
        seq, pop = min(seq, sequential(seq_configs)), min(pop, stacked("fused"))
        auto, stack = min(auto, sequential(auto_configs)), min(stack, stacked("torch"))
    rate = lambda s: per_hour(s, workers, grid_epochs)  # noqa: E731
    return {
        "source": source, "grid_networks": len(configs), "grid_epochs": grid_epochs,
        "hidden": list(group[0].hidden), "steps_per_epoch": -(-min(len(digits.x_train), group[0].limit_train or 10**9)
                                                              // group[0].batch_size),
        "members": len(pop_configs), "population_engine": "fused", "population_threads": threads,
        "sequential_threads": torch.get_num_threads(),
        "torch_engine_stack_size": members_per_stack(group[0], digits.n_features, digits.n_classes),
        "sequential_sample": len(seq_configs), "measured_epochs": epochs,
        "sequential_seconds_per_network_epoch": seq, "population_seconds_per_network_epoch": pop,
        "sequential_networks_per_hour": rate(seq), "population_networks_per_hour": rate(pop),
        "speedup": seq / pop,
        "torch_engine_seconds_per_network_epoch": stack, "torch_engine_networks_per_hour": rate(stack),
        "extrapolation": (f"networks/h = 3600 * workers({workers}) / (core-seconds per network-epoch * grid epochs "
                          f"({grid_epochs})); both sides one core each, model building and per-epoch evaluation included"),
        "sequential_auto_backend_seconds_per_network_epoch": auto,
        "sequential_auto_backend_networks_per_hour": rate(auto),
    }


# -- the quick grid: the obvious torch.func.vmap approach -----------------------------------------------
def stacked_members(configs: list[TrainConfig], n_features: int, n_classes: int):
    """The members' weights then biases, stacked per layer ((P, n_in, n_out), (P, n_out)), and masks."""
    models = [build_model(c, n_features, n_classes) for c in configs]
    layers = range(len(models[0].layers))
    weights = [torch.stack([m.layers[l].dense_weight().t() for m in models]) for l in layers]   # (n_in, n_out)
    biases = [torch.stack([m.layers[l].bias.detach().clone() for m in models]) for l in layers]
    masks = [torch.stack([torch.from_numpy(m.layers[l].topology.mask()).float() for m in models]) for l in layers]
    return weights + biases, masks


def mlp(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """One member's sigmoid MLP (weights then biases in ``params``)."""
    half = len(params) // 2
    for w, b in zip(params[:half], params[half:]):
        x = torch.sigmoid(x @ w + b)
    return x


def mse(params: list[torch.Tensor], x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((mlp(params, x) - targets) ** 2).mean()


MEMBER_GRAD = torch.func.vmap(torch.func.grad_and_value(mse))
MEMBER_OUTPUTS = torch.func.vmap(mlp, in_dims=(0, None))


@torch.no_grad()
def nesterov(params, grads, masks, buffers, lr: float, momentum: float) -> None:
    """torch.optim.SGD(nesterov=True)'s update, every member at once; weight gradients masked."""
    for i, (p, g, buf) in enumerate(zip(params, grads, buffers)):
        if i < len(masks):
            g = g * masks[i]
        buf.mul_(momentum).add_(g)
        p.sub_(lr * (g + momentum * buf))


def vmap_epoch(params, masks, buffers, x, targets, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """One epoch, each member on its own permutation; returns the members' summed losses."""
    orders = torch.stack([torch.randperm(len(x), generator=gen) for _ in range(len(masks[0]))])
    total = torch.zeros(len(orders))
    for start in range(0, len(x), config.batch_size):
        batch = orders[:, start: start + config.batch_size]
        grads, losses = MEMBER_GRAD(params, x[batch], targets[batch])
        nesterov(params, grads, masks, buffers, config.lr, config.momentum)
        total += losses * batch.shape[1]
    return total


def vmap_train(configs: list[TrainConfig], digits, epochs: int) -> float:
    """Wall seconds to build and train the members for ``epochs`` epochs with a test evaluation after each."""
    tick = time.perf_counter()
    x, y = torch.from_numpy(digits.x_train), torch.from_numpy(digits.y_train)
    x_test, y_test = torch.from_numpy(digits.x_test), torch.from_numpy(digits.y_test)
    targets = torch.nn.functional.one_hot(y, int(digits.n_classes)).float()
    params, masks = stacked_members(configs, x.shape[1], int(digits.n_classes))
    buffers = [torch.zeros_like(p) for p in params]
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        vmap_epoch(params, masks, buffers, x, targets, configs[0], gen)
        with torch.no_grad():
            (MEMBER_OUTPUTS(params, x_test).argmax(-1) == y_test).float().mean(-1)
    return time.perf_counter() - tick


def bench_vmap(members: int, epochs: int, workers: int, repeats: int) -> dict:
    _, _, group, digits, configs = quick_population(members, epochs)
    vmap_train(configs[:2], digits.limited(64), 1)                       # warm-up
    seconds = min(vmap_train(configs, digits, epochs) for _ in range(repeats)) / (len(configs) * epochs)
    return {"members": len(configs), "measured_epochs": epochs, "threads": torch.get_num_threads(),
            "seconds_per_network_epoch": seconds,
            "networks_per_hour": per_hour(seconds, workers, group[0].epochs),
            "dropout_in_group": list(group[0].dropout),
            "method": ("torch.func.vmap(torch.func.grad_and_value(mse)) over the quick population's members: "
                       "stacked dense weights (P, n_in, n_out) and masks, sigmoid MLP, MSE on one-hot targets, "
                       "Nesterov SGD with the config's lr and momentum, weight gradients times the masks; one torch "
                       "thread, own shuffles (not train()'s), same work per step; model building and a test "
                       f"evaluation per epoch included; best of {repeats}")}


# -- the command -----------------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag, help_text in (("--paper-sample", "paper networks run through run_sweep"),
                            ("--paper-epochs", "epochs of each sampled paper network"),
                            ("--paper-limit-train", "training examples per epoch of the paper sample (None: all)"),
                            ("--workers", "run_sweep workers (default: run_sweep's, all cores)"),
                            ("--baseline-examples", "examples of the masked baseline's one timed epoch"),
                            ("--quick-members", "population size of the quick grid (fused and vmap)"),
                            ("--sequential-sample", "quick-grid networks trained one at a time"),
                            ("--quick-epochs", "epochs measured per quick-grid network"),
                            ("--vmap-epochs", "epochs of the vmap baseline"),
                            ("--repeats", "interleaved repeats on the quick grid (best is kept)"),
                            ("--threads", "numba threads of the fused population on the quick grid")):
        parser.add_argument(flag, type=int, default=None, help=help_text)
    parser.add_argument("--gemm-seconds", type=float, default=None, help="minimum seconds per GEMM timing")
    parser.add_argument("--dataset", choices=("auto", "fashion-mnist", "synthetic"), default="auto",
                        help="paper sample's data: auto = Fashion-MNIST when its files are there, else synthetic")
    parser.add_argument("--data-dir", default=FASHION_DIR, help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else DEFAULTS
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def summarise(args, paper, baseline, gemm, quick, vmap) -> dict:
    fraction = (6 * paper["connections"] * paper["train_examples_per_epoch"] * paper["epochs"]
                / paper["wall_seconds"] / 1e9 / gemm["gemm_gflops"])
    return {
        "paper_grid_projected_hours": paper["projected_hours"],
        "paper_grid_projected_hours_busy": paper["projected_hours_busy"],
        "baseline_projected_hours": baseline["projected_hours"],
        "paper_speedup_over_baseline": baseline["projected_hours"] / paper["projected_hours"],
        "gemm_gflops": gemm["gemm_gflops"], "gemm_gflops_per_core": gemm["gemm_gflops_per_core"],
        "peak_fraction": fraction,
        "population_speedup": quick["speedup"],
        "vmap_speedup": quick["population_networks_per_hour"] / vmap["networks_per_hour"],
        "quick_population_networks_per_hour": quick["population_networks_per_hour"],
        "quick_sequential_networks_per_hour": quick["sequential_networks_per_hour"],
        "vmap_networks_per_hour": vmap["networks_per_hour"],
        "workers": paper["workers"], "smoke": args.smoke, "targets": TARGETS,
        "assumption": (f"paper grid: run_sweep end to end (default executor, {paper['workers']} workers) on "
                       f"{paper['sample']} of {paper['grid_networks']} networks, {paper['extrapolation']}; "
                       f"baseline: {baseline['extrapolation']}; peak_fraction = 6 * sum(connections) * "
                       "examples per epoch * epochs / wall / 1e9 / gemm_gflops, evaluation time inside the wall"),
        "paper": paper, "baseline": baseline, "gemm": gemm, "quick": quick, "vmap": vmap,
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    grid = paper_grid()
    paper, sample = bench_paper(args, grid)
    workers = paper["workers"]
    baseline = bench_baseline(sample, paper["data_dir"], args.baseline_examples, workers)
    gemm = bench_gemm(sample, workers, args.gemm_seconds)
    quick = bench_quick(args.quick_members, args.sequential_sample, args.quick_epochs, workers, args.repeats,
                        args.threads)
    vmap = bench_vmap(args.quick_members, args.vmap_epochs, workers, args.repeats)
    info = machine()
    result = {**summarise(args, paper, baseline, gemm, quick, vmap),
              "machine": {**info, "cores": os.cpu_count(), "workers": workers,
                          "load_average_1_5_15min": list(os.getloadavg())},
              "command": info["command"], "date": datetime.date.today().isoformat()}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"paper grid (run_sweep, {workers} workers, {paper['sample']} sampled): "
          f"{result['paper_grid_projected_hours']:.1f} h projected; masked baseline "
          f"{result['baseline_projected_hours']:.1f} h; {result['peak_fraction']:.3f} of "
          f"{result['gemm_gflops']:.1f} GFLOP/s")
    print(f"quick grid: population {result['population_speedup']:.1f}x sequential train(), "
          f"{result['vmap_speedup']:.1f}x torch.func.vmap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
