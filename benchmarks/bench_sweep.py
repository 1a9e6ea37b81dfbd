"""Networks per hour: population training against the one-network-at-a-time ``train()`` loop.

Both sides are measured in the same run, on the same machine, on equal resources: the
sequential side is ``train()`` with one torch thread, the population side is
``train_population(engine="fused", threads=--threads)`` (default 1 numba thread), its time
counted in core-seconds per network (wall time x threads / members). The projections assume
``--workers`` cores (2 on a 2-core machine: two sequential workers, or one population spread
over both cores, since members are independent), the same for both sides, so the *ratios* do
not depend on that assumption. Pin the process to one core (``taskset -c 1``) on a shared
machine. The population's torch engine (stacked dense tensors) is reported beside it.

Two workloads:

quick grid  digits-sized networks (64-H-10) from the ``quick`` preset (``sparsetopo.sweep``)
            when it can be loaded, otherwise a representative list (64-100-10, every
            construction, a spread of degrees, lr 0.5, 100 epochs). A sample of
            ``--sequential-sample`` configs is trained with ``train()`` and ``--members`` with
            ``train_population()`` (its default cache-sized stacks) for ``--epochs`` epochs each; networks per hour are
            extrapolated to the grid's epochs. Model building and the per-epoch test
            evaluation are included on both sides.
paper grid  784-H-10 networks, H in {100, 300, 500}, a third of the ~3000 networks each
            (the paper gives only the total), 50 epochs of 60000 examples at batch 32 (1875
            steps) plus a 10000-example test evaluation per epoch. We train ``--paper-steps``
            steps on MNIST-shaped synthetic data (784 features) per hidden size and
            extrapolate: hours = sum_H n_H * 50 * (1875 * step_H + eval_H) / workers / 3600,
            where step_H is the measured training time per step (per member for populations)
            and eval_H the measured evaluation time scaled to 10000 examples. Masked-dense
            step time does not depend on density, so one degree per H represents all; the
            fused population's does, so it is also timed at input densities
            ``PAPER_FIT_DENSITIES`` per H, a line in the connection count is fitted, and the
            paper preset's real networks (``population_real_grid``) are projected with it:
            that is ``paper_grid_projected_hours``.

Run: ``python benchmarks/bench_sweep.py [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from sparsetopo.data import load_dataset
from sparsetopo.train import TrainConfig, members_per_stack, population_key, train, train_population

PAPER_NETWORKS = 3000
PAPER_EPOCHS = 50
PAPER_TRAIN = 60000
PAPER_TEST = 10000
PAPER_BATCH = 32
PAPER_HIDDEN = (100, 300, 500)
CONSTRUCTION_NAMES = ("fully_connected", "random_edge", "random_rotating", "random_regular",
                      "regular_rotating", "long_short_rotating", "fibonacci_rotating")


def machine() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "load_average_1_5_15min": list(os.getloadavg()),
            "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform()}


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


def bench_quick(members: int, sample: int, epochs: int, workers: int, repeats: int, threads: int) -> dict:
    configs, source = quick_configs()
    group = largest_group(configs)
    grid_epochs = group[0].epochs
    digits = load_dataset(group[0].dataset)
    seq_configs = [with_(c, epochs=epochs, backend="masked") for c in spread(group, sample)]
    pop_configs = [with_(c, epochs=epochs, backend="masked") for c in spread(group, members)]
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
    per_hour = lambda s: 3600.0 * workers / (s * grid_epochs)  # noqa: E731
    return {
        "source": source, "grid_networks": len(configs), "grid_epochs": grid_epochs,
        "hidden": list(group[0].hidden), "steps_per_epoch": -(-min(len(digits.x_train), group[0].limit_train or 10**9)
                                                              // group[0].batch_size),
        "members": len(pop_configs), "population_engine": "fused", "population_threads": threads,
        "sequential_threads": torch.get_num_threads(),
        "torch_engine_stack_size": members_per_stack(group[0], digits.n_features, digits.n_classes),
        "sequential_sample": len(seq_configs), "measured_epochs": epochs,
        "sequential_seconds_per_network_epoch": seq, "population_seconds_per_network_epoch": pop,
        "sequential_networks_per_hour": per_hour(seq), "population_networks_per_hour": per_hour(pop),
        "speedup": seq / pop,
        "torch_engine_seconds_per_network_epoch": stack, "torch_engine_networks_per_hour": per_hour(stack),
        "extrapolation": (f"networks/h = 3600 * workers({workers}) / (core-seconds per network-epoch * grid epochs "
                          f"({grid_epochs})); both sides one core each, model building and per-epoch evaluation included"),
        "sequential_auto_backend_seconds_per_network_epoch": auto,
        "sequential_auto_backend_networks_per_hour": per_hour(auto),
    }


PAPER_FIT_DENSITIES = (0.01, 0.1, 0.3, 0.9)   # input densities timed per H for the fused cost fit


def paper_grid_edges() -> tuple[list[int], str]:
    """Connections of every network of the paper preset (784 inputs, 10 classes), or of the
    even-H stand-in (one third per H at 10% input density) when the preset cannot be loaded."""
    try:
        from sparsetopo.sweep.spec import expand, load_spec

        edges = []
        for c in expand(load_spec("paper")):
            sizes = c.sizes(784, 10)
            edges.append(sum(a * k for a, k in zip(sizes, c.layer_degrees(sizes))))
        return edges, "sparsetopo.sweep paper preset"
    except Exception as error:  # optional here; fall back and say so
        per_h = PAPER_NETWORKS // len(PAPER_HIDDEN)
        return [784 * (h // 10) + h * 10 for h in PAPER_HIDDEN for _ in range(per_h)], \
            f"even-H stand-in at 10% density (paper preset unavailable: {type(error).__name__})"


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def bench_paper(members: int, steps: int, workers: int, threads: int) -> dict:
    data = load_dataset("synthetic")
    n_test = len(data.x_test)
    per_h = {}
    seq_hours = pop_hours = auto_hours = 0.0
    points = []                                               # (edges, s/step, s/test example) per member
    for hidden in PAPER_HIDDEN:
        base = TrainConfig(dataset=data.name, hidden=(hidden,), construction="random_regular",
                           degrees=(max(1, hidden // 10), 10), epochs=1, limit_train=steps * PAPER_BATCH,
                           backend="masked")
        single = train(base, dataset=data)
        seq_step = single.history[0].seconds / steps
        seq_eval = (single.seconds - single.history[0].seconds) * PAPER_TEST / n_test  # eval + model build
        auto = train(with_(base, backend="auto"), dataset=data)
        auto_step = auto.history[0].seconds / steps
        auto_eval = (auto.seconds - auto.history[0].seconds) * PAPER_TEST / n_test
        for density in PAPER_FIT_DENSITIES:
            config = with_(base, degrees=(max(1, round(density * hidden)), None))
            results = train_population([with_(config, seed=s) for s in range(members)], dataset=data,
                                       engine="fused", threads=threads)
            step = results[0].history[0].seconds / steps       # per-member core-seconds per step
            evaluation = (results[0].seconds - results[0].history[0].seconds) / n_test
            edges = 784 * config.degrees[0] + hidden * 10
            points.append((edges, step, evaluation))
            if density == 0.1:                                 # the stand-in's density
                pop_step, pop_eval = step, evaluation * PAPER_TEST
        n_networks = PAPER_NETWORKS / len(PAPER_HIDDEN)
        steps_paper = PAPER_TRAIN // PAPER_BATCH
        seq_hours += n_networks * PAPER_EPOCHS * (steps_paper * seq_step + seq_eval) / workers / 3600
        auto_hours += n_networks * PAPER_EPOCHS * (steps_paper * auto_step + auto_eval) / workers / 3600
        pop_hours += n_networks * PAPER_EPOCHS * (steps_paper * pop_step + pop_eval) / workers / 3600
        per_h[str(hidden)] = {"sequential_ms_per_step": 1e3 * seq_step, "population_ms_per_member_step": 1e3 * pop_step,
                              "sequential_auto_backend_ms_per_step": 1e3 * auto_step,
                              "sequential_eval_s_per_epoch": seq_eval, "population_eval_s_per_member_epoch": pop_eval,
                              "speedup": (steps_paper * seq_step + seq_eval) / (steps_paper * pop_step + pop_eval)}
    # The fused engine's cost follows the connections, so the even-H 10%-density stand-in
    # flatters it; project the real grid from a line fitted to the measured members.
    step_a, step_b = fit_line([e for e, _, _ in points], [s for _, s, _ in points])
    eval_a, eval_b = fit_line([e for e, _, _ in points], [v for _, _, v in points])
    edges, grid_source = paper_grid_edges()
    grid_hours = sum(PAPER_EPOCHS * ((PAPER_TRAIN // PAPER_BATCH) * max(0.0, step_a + step_b * e)
                                     + PAPER_TEST * max(0.0, eval_a + eval_b * e)) for e in edges) / workers / 3600
    return {
        "data": f"{data.name} ({data.x_train.shape[1]} features, MNIST-shaped)", "measured_steps": steps,
        "members": members, "population_engine": "fused", "population_threads": threads,
        "sequential_threads": torch.get_num_threads(), "networks": PAPER_NETWORKS, "epochs": PAPER_EPOCHS,
        "steps_per_epoch": PAPER_TRAIN // PAPER_BATCH, "per_hidden": per_h,
        "sequential_projected_hours": seq_hours, "population_projected_hours": pop_hours,
        "sequential_auto_backend_projected_hours": auto_hours,
        "sequential_networks_per_hour": PAPER_NETWORKS / seq_hours,
        "population_networks_per_hour": PAPER_NETWORKS / pop_hours,
        "extrapolation": ("hours = sum over H of (3000/3) * 50 * (1875 * step_H + eval_H) / workers / 3600, "
                          "784-H-10 at 10% input density, output full; masked-dense cost does not depend on density"),
        "population_real_grid": {
            "source": grid_source, "networks": len(edges), "mean_connections": sum(edges) / len(edges),
            "fit": "per-member core-seconds per step = a + b * connections (and per test example), least squares",
            "step_fit_a_s": step_a, "step_fit_b_s_per_connection": step_b,
            "eval_fit_a_s": eval_a, "eval_fit_b_s_per_connection": eval_b,
            "points_connections_step_s_eval_s_per_example": points,
            "projected_hours": grid_hours,
        },
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=33, help="networks trained by one train_population call (fused engine)")
    parser.add_argument("--sequential-sample", type=int, default=8, help="networks trained one at a time")
    parser.add_argument("--epochs", type=int, default=1, help="epochs measured per quick-grid network")
    parser.add_argument("--paper-members", type=int, default=8, help="population size P for MNIST-sized nets")
    parser.add_argument("--paper-steps", type=int, default=100, help="steps measured per MNIST-sized network")
    parser.add_argument("--workers", type=int, default=2, help="processes assumed in the projections")
    parser.add_argument("--threads", type=int, default=1,
                        help="cores of the fused population (numba threads); the sequential side uses one torch "
                             "thread, so the default 1 compares one core with one core")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best is kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    quick = bench_quick(args.members, args.sequential_sample, args.epochs, args.workers, args.repeats, args.threads)
    paper = bench_paper(args.paper_members, args.paper_steps, args.workers, args.threads)
    result = {
        "population_speedup": quick["speedup"],
        "paper_grid_projected_hours": paper["population_real_grid"]["projected_hours"],
        "paper_grid_projected_hours_even_h_10pct": paper["population_projected_hours"],
        "baseline_projected_hours": paper["sequential_projected_hours"],
        "quick_population_networks_per_hour": quick["population_networks_per_hour"],
        "quick_sequential_networks_per_hour": quick["sequential_networks_per_hour"],
        "paper_population_networks_per_hour": paper["population_networks_per_hour"],
        "paper_sequential_networks_per_hour": paper["sequential_networks_per_hour"],
        "paper_population_speedup": paper["sequential_projected_hours"] / paper["population_projected_hours"],
        "paper_sequential_auto_backend_projected_hours": paper["sequential_auto_backend_projected_hours"],
        "targets": {"population_speedup": 10.0, "paper_grid_projected_hours": 12.0},
        "assumption": (f"projections: {args.workers} workers, each one core: sequential = train() with 1 torch "
                       f"thread per process; population = the fused engine measured with {args.threads} numba "
                       "thread(s), its time counted as core-seconds per network (wall x threads / members); "
                       "baseline = sequential masked-dense train(), measured in the same run"),
        "quick": quick,
        "paper": paper,
        "machine": {**machine(), "torch_threads_per_worker": torch.get_num_threads(), "workers": args.workers,
                    "population_threads": args.threads, "affinity": sorted(os.sched_getaffinity(0))},
        "command": " ".join(sys.argv),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"quick grid: population {quick['population_networks_per_hour']:.0f} networks/h vs sequential "
              f"{quick['sequential_networks_per_hour']:.0f} ({quick['speedup']:.1f}x, P={quick['members']})")
        print(f"paper grid: population {result['paper_grid_projected_hours']:.1f} h vs sequential "
              f"{paper['sequential_projected_hours']:.1f} h (P={paper['members']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
