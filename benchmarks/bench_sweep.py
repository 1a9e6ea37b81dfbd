"""Networks per hour: population training against the one-network-at-a-time ``train()`` loop.

Both sides are measured in the same run, on the same machine, each with one torch thread.
The projections assume the machine runs ``--workers`` processes of one thread each (2 on a
2-core machine), the same for both sides, so the *ratios* do not depend on that assumption.

Two workloads:

quick grid  digits-sized networks (64-H-10) from the ``quick`` preset (``sparsetopo.sweep``)
            when it can be loaded, otherwise a representative list (64-100-10, every
            construction, a spread of degrees, lr 0.5, 100 epochs: DESIGN.md §7). A sample of
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
            step time does not depend on density, so one degree per H represents all.

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
from sparsetopo.population import members_per_stack, population_key, train_population
from sparsetopo.train import TrainConfig, train

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


def bench_quick(members: int, sample: int, epochs: int, workers: int, repeats: int) -> dict:
    configs, source = quick_configs()
    group = largest_group(configs)
    grid_epochs = group[0].epochs
    digits = load_dataset(group[0].dataset)
    seq_configs = [with_(c, epochs=epochs, backend="masked") for c in spread(group, sample)]
    pop_configs = [with_(c, epochs=epochs, backend="masked") for c in spread(group, members)]
    auto_configs = [with_(c, backend="auto") for c in seq_configs]
    for c in (seq_configs[0], auto_configs[0]):
        train(c, dataset=digits)                               # warm-up (allocator, numba kernels)
    train_population(pop_configs[:2], dataset=digits)

    def sequential(configs):                                   # seconds per network-epoch
        tick = time.perf_counter()
        for c in configs:
            train(c, dataset=digits)
        return (time.perf_counter() - tick) / (len(configs) * epochs)

    def stacked():
        tick = time.perf_counter()
        train_population(pop_configs, dataset=digits)
        return (time.perf_counter() - tick) / (len(pop_configs) * epochs)

    # Interleaved repeats, best of each: other processes on a shared machine only add time.
    seq = pop = auto = float("inf")
    for _ in range(repeats):
        seq, pop, auto = min(seq, sequential(seq_configs)), min(pop, stacked()), min(auto, sequential(auto_configs))
    per_hour = lambda s: 3600.0 * workers / (s * grid_epochs)  # noqa: E731
    return {
        "source": source, "grid_networks": len(configs), "grid_epochs": grid_epochs,
        "hidden": list(group[0].hidden), "steps_per_epoch": -(-min(len(digits.x_train), group[0].limit_train or 10**9)
                                                              // group[0].batch_size),
        "members": len(pop_configs), "stack_size": members_per_stack(group[0], digits.n_features, digits.n_classes),
        "sequential_sample": len(seq_configs), "measured_epochs": epochs,
        "sequential_seconds_per_network_epoch": seq, "population_seconds_per_network_epoch": pop,
        "sequential_networks_per_hour": per_hour(seq), "population_networks_per_hour": per_hour(pop),
        "speedup": seq / pop,
        "sequential_auto_backend_seconds_per_network_epoch": auto,
        "sequential_auto_backend_networks_per_hour": per_hour(auto),
    }


def bench_paper(members: int, steps: int, workers: int) -> dict:
    data = load_dataset("synthetic")
    n_test = len(data.x_test)
    per_h = {}
    seq_hours = pop_hours = auto_hours = 0.0
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
        tick = time.perf_counter()
        results = train_population([with_(base, seed=s) for s in range(members)], dataset=data, max_members=members)
        wall = time.perf_counter() - tick
        pop_step = results[0].history[0].seconds / steps          # population epoch time / P / steps
        pop_eval = (wall / members - results[0].history[0].seconds) * PAPER_TEST / n_test
        n_networks = PAPER_NETWORKS / len(PAPER_HIDDEN)
        steps_paper = PAPER_TRAIN // PAPER_BATCH
        seq_s = n_networks * PAPER_EPOCHS * (steps_paper * seq_step + seq_eval) / workers
        pop_s = n_networks * PAPER_EPOCHS * (steps_paper * pop_step + pop_eval) / workers
        seq_hours += seq_s / 3600
        auto_hours += n_networks * PAPER_EPOCHS * (steps_paper * auto_step + auto_eval) / workers / 3600
        pop_hours += pop_s / 3600
        per_h[str(hidden)] = {"sequential_ms_per_step": 1e3 * seq_step, "population_ms_per_member_step": 1e3 * pop_step,
                              "sequential_auto_backend_ms_per_step": 1e3 * auto_step,
                              "sequential_eval_s_per_epoch": seq_eval, "population_eval_s_per_member_epoch": pop_eval,
                              "speedup": (steps_paper * seq_step + seq_eval) / (steps_paper * pop_step + pop_eval)}
    return {
        "data": f"{data.name} ({data.x_train.shape[1]} features, MNIST-shaped)", "measured_steps": steps,
        "members": members, "networks": PAPER_NETWORKS, "epochs": PAPER_EPOCHS,
        "steps_per_epoch": PAPER_TRAIN // PAPER_BATCH, "per_hidden": per_h,
        "sequential_projected_hours": seq_hours, "population_projected_hours": pop_hours,
        "sequential_auto_backend_projected_hours": auto_hours,
        "sequential_networks_per_hour": PAPER_NETWORKS / seq_hours,
        "population_networks_per_hour": PAPER_NETWORKS / pop_hours,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=33, help="networks trained by train_population (in cache-sized stacks)")
    parser.add_argument("--sequential-sample", type=int, default=8, help="networks trained one at a time")
    parser.add_argument("--epochs", type=int, default=1, help="epochs measured per quick-grid network")
    parser.add_argument("--paper-members", type=int, default=8, help="population size P for MNIST-sized nets")
    parser.add_argument("--paper-steps", type=int, default=100, help="steps measured per MNIST-sized network")
    parser.add_argument("--workers", type=int, default=2, help="processes assumed in the projections")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved repeats (best is kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    quick = bench_quick(args.members, args.sequential_sample, args.epochs, args.workers, args.repeats)
    paper = bench_paper(args.paper_members, args.paper_steps, args.workers)
    result = {
        "population_speedup": quick["speedup"],
        "paper_grid_projected_hours": paper["population_projected_hours"],
        "baseline_projected_hours": paper["sequential_projected_hours"],
        "quick_population_networks_per_hour": quick["population_networks_per_hour"],
        "quick_sequential_networks_per_hour": quick["sequential_networks_per_hour"],
        "paper_population_networks_per_hour": paper["population_networks_per_hour"],
        "paper_sequential_networks_per_hour": paper["sequential_networks_per_hour"],
        "paper_population_speedup": paper["sequential_projected_hours"] / paper["population_projected_hours"],
        "paper_sequential_auto_backend_projected_hours": paper["sequential_auto_backend_projected_hours"],
        "targets": {"population_speedup": 10.0, "paper_grid_projected_hours": 12.0},
        "assumption": (f"{args.workers} worker processes with 1 torch thread each, for both sides; "
                       "baseline = sequential masked-dense train(), measured in the same run"),
        "quick": quick,
        "paper": paper,
        "machine": {**machine(), "torch_threads_per_worker": torch.get_num_threads(), "workers": args.workers},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"quick grid: population {quick['population_networks_per_hour']:.0f} networks/h vs sequential "
              f"{quick['sequential_networks_per_hour']:.0f} ({quick['speedup']:.1f}x, P={quick['members']})")
        print(f"paper grid: population {paper['population_projected_hours']:.1f} h vs sequential "
              f"{paper['sequential_projected_hours']:.1f} h (P={paper['members']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
