"""Check a CUDA machine in one run: the CUDA tests, block layers against nn.Linear, the paper's grid.

Usage: ``python benchmarks/gpu_check.py [--out gpu_check.json] [--budget 270]``

Three parts, each recorded in one JSON file (``--out``), each within what is left of the time
budget (``--budget`` seconds, 270 by default, so that the whole check ends within 5 minutes):

1. ``tests``: every test of ``tests/`` that skips with "no CUDA GPU" elsewhere (the masked
   layers, ``load(device="cuda")``, the block layer, the torch population engine), run with
   pytest; their outcomes by node id.
2. ``block_layers``: a :class:`~sparsetopo.nn.BlockSparseLinear` made by
   ``sparsify(..., block=32)`` against the ``nn.Linear`` it replaces, widths 1024 and 4096,
   densities 10% and 5%, batch 32 to 4096: a training step (forward and backward) and an
   inference forward, timed in turn on the GPU (median of CUDA-event timings), with the ratio
   block / dense.
3. ``paper_grid``: the paper's grid (``sweep`` preset ``paper``, 3067 networks, 50 epochs of
   MNIST's 60,000 examples) projected on this GPU: each group of networks that trains as one
   population (:func:`~sparsetopo.train.population_key`) trains a stack of members on
   MNIST-shaped synthetic data, and one network alone; their second epoch's seconds (set-up
   left out) are scaled to the whole grid, as populations and as one network at a time.

A part that fails records its error and the others still run. Without a CUDA GPU the script
says so on stderr, writes ``{"gpu": false, ...}`` and exits 0 without running anything.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))     # check this checkout, not another installed copy

import torch  # noqa: E402  (after the path: torch comes from the environment either way)

CUDA_SKIP_REASON = "no CUDA GPU"
BLOCK = 32
MNIST_TRAIN = 60_000


@dataclass(frozen=True)
class Sizes:
    """What the check measures: the layers timed and the samples the grid is projected from."""

    widths: tuple[int, ...] = (1024, 4096)
    densities: tuple[float, ...] = (0.10, 0.05)
    batches: tuple[int, ...] = (32, 128, 512, 1024, 2048, 4096)
    sample_train: int = 4096      # examples of a timed epoch; the projection scales them to MNIST's
    stack_members: int = 64       # members of a timed population stack (a group's stacks are alike)
    groups: int | None = None     # population groups timed (None: all)


#: ``--smoke``: the same code on the CPU at toy sizes, to check the script on a machine without a GPU
SMOKE = Sizes(widths=(64,), densities=(0.5,), batches=(8,), sample_train=128, stack_members=2, groups=2)


def no_gpu_report() -> dict:
    return {"gpu": False, "reason": "torch.cuda.is_available() is False: this machine has no CUDA GPU "
            "that torch can use, so nothing was run", "torch": torch.__version__,
            "python": platform.python_version()}


def environment(device: torch.device) -> dict:
    out = {"gpu": device.type == "cuda", "device": platform.processor() or platform.machine(),
           "torch": torch.__version__, "python": platform.python_version(),
           "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        out.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   devices=torch.cuda.device_count(), cuda=torch.version.cuda)
    return out


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- 1. the CUDA tests ------------------------------------------------------------------------
def cuda_test_files(tests_dir: Path = ROOT / "tests") -> list[Path]:
    """The test files holding a test marked to skip with "no CUDA GPU"."""
    return sorted(p for p in tests_dir.glob("test_*.py") if f'reason="{CUDA_SKIP_REASON}"' in p.read_text())


class _CudaTestsOnly:
    """pytest plugin: keep the tests marked ``skipif(..., reason="no CUDA GPU")``, record outcomes."""

    def __init__(self):
        self.outcomes: dict[str, str] = {}

    def pytest_collection_modifyitems(self, config, items):
        keep = [item for item in items
                if any(mark.kwargs.get("reason") == CUDA_SKIP_REASON for mark in item.iter_markers("skipif"))]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":
            self.outcomes[report.nodeid] = report.outcome


def run_cuda_tests(seconds: float, device: torch.device, sizes: Sizes) -> dict:
    import pytest

    files = cuda_test_files()
    plugin = _CudaTestsOnly()
    started = time.perf_counter()
    code = pytest.main(["-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT), *map(str, files)], plugins=[plugin])
    counts = {outcome: list(plugin.outcomes.values()).count(outcome) for outcome in ("passed", "failed", "skipped")}
    return {"files": [p.name for p in files], "exit_code": int(code), **counts,
            "seconds": round(time.perf_counter() - started, 1), "within_budget": time.perf_counter() - started <= seconds,
            "outcomes": plugin.outcomes}


# -- 2. block layers against nn.Linear --------------------------------------------------------
def medians(functions: dict, device: torch.device, repeats: int = 7, calls: int = 5) -> dict:
    """Median seconds per call of each callable over ``calls`` consecutive calls (CUDA events on
    a GPU), the callables taking turns so that a busy device slows all alike."""
    for f in functions.values():   # warm-up: kernels chosen, memory allocated
        f()
    synchronize(device)
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            if device.type == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(calls):
                    f()
                end.record()
                end.synchronize()
                times[name].append(start.elapsed_time(end) / 1e3 / calls)
            else:
                tick = time.perf_counter()
                for _ in range(calls):
                    f()
                times[name].append((time.perf_counter() - tick) / calls)
    return {name: statistics.median(values) for name, values in times.items()}


def _step(layer, x, g):
    def step():
        layer.zero_grad(set_to_none=True)
        layer(x).backward(g)
    return step


def _infer(layer, x):
    def forward():
        with torch.inference_mode():
            layer(x)
    return forward


def time_block_layers(seconds: float, device: torch.device, sizes: Sizes) -> dict:
    import sparsetopo

    deadline = time.perf_counter() + seconds
    points, truncated = [], False
    for width in sizes.widths:
        for density in sizes.densities:
            dense = torch.nn.Linear(width, width).to(device)
            block = sparsetopo.sparsify(torch.nn.Sequential(torch.nn.Linear(width, width)), "regular_rotating",
                                        density=density, block=BLOCK)[0].to(device)
            for batch in sizes.batches:
                if time.perf_counter() > deadline:
                    truncated = True
                    break
                x = torch.randn(batch, width, device=device)
                g = torch.randn(batch, width, device=device)
                t = medians({"dense_step": _step(dense, x, g), "block_step": _step(block, x, g),
                                  "dense_inference": _infer(dense, x), "block_inference": _infer(block, x)}, device)
                points.append({"width": width, "block": BLOCK, "density": round(block.topology.density, 4),
                               "batch": batch, **{f"{k}_ms": round(v * 1e3, 4) for k, v in t.items()},
                               "step_ratio": round(t["block_step"] / t["dense_step"], 3),
                               "inference_ratio": round(t["block_inference"] / t["dense_inference"], 3)})
    return {"what": "BlockSparseLinear (sparsify block=32, regular_rotating) / nn.Linear, forward+backward "
            "('step') and inference forward, median seconds per call on this device", "points": points,
            "truncated": truncated}


# -- 3. the paper's grid projected on this GPU -------------------------------------------------
def second_epoch_seconds(run, device: torch.device) -> float:
    """Wall seconds from the end of epoch 1 to the end of epoch 2 of ``run(on_epoch)``: one
    epoch and its evaluation, without the set-up (topologies, stacks) that a 50-epoch run pays once."""
    ends: dict[int, float] = {}

    def on_epoch(record):
        synchronize(device)
        ends.setdefault(record.epoch, time.perf_counter())
    run(on_epoch)
    return ends[2] - ends[1]


def project_paper_grid(seconds: float, device: torch.device, sizes: Sizes) -> dict:
    from sparsetopo.data import load_dataset
    from sparsetopo.sweep import expand, load_spec
    from sparsetopo.train import population_key, train, train_population

    deadline = time.perf_counter() + seconds
    spec = load_spec("paper")
    configs = [replace(c, device=str(device), dataset="synthetic") for c in expand(spec)]
    groups: dict[tuple, list] = {}
    for config in configs:
        groups.setdefault(population_key(config), []).append(config)
    data = load_dataset("synthetic", limit_train=sizes.sample_train)
    scale = MNIST_TRAIN / len(data.y_train)
    train(replace(configs[0], epochs=1), dataset=data.limited(min(256, sizes.sample_train)))   # CUDA and cuBLAS warm-up
    rows, truncated = [], False
    for members in list(groups.values())[:sizes.groups]:
        if time.perf_counter() > deadline:
            truncated = True
            break
        stride = max(1, len(members) // sizes.stack_members)   # spread over the group's constructions and degrees
        timed = [replace(c, epochs=2) for c in members[::stride][:sizes.stack_members]]
        stack_seconds = second_epoch_seconds(
            lambda on_epoch: train_population(timed, dataset=data, engine="torch", max_members=len(timed),
                                              on_epoch=lambda _, record: on_epoch(record)), device)
        single_seconds = second_epoch_seconds(lambda on_epoch: train(timed[0], dataset=data, on_epoch=on_epoch),
                                              device)
        epochs = members[0].epochs
        stacks = math.ceil(len(members) / len(timed))
        rows.append({"hidden": list(members[0].hidden), "dropout": list(members[0].dropout), "networks": len(members),
                     "stack_members": len(timed), "epoch_seconds_stack": round(stack_seconds, 4),
                     "epoch_seconds_one_network": round(single_seconds, 4),
                     "projected_hours_population": round(stacks * stack_seconds * scale * epochs / 3600, 3),
                     "projected_hours_one_at_a_time": round(len(members) * single_seconds * scale * epochs / 3600, 3)})
    total = {key: round(sum(r[key] for r in rows), 2)
             for key in ("projected_hours_population", "projected_hours_one_at_a_time")}
    return {"what": f"the 'paper' preset ({len(configs)} networks, {configs[0].epochs} epochs of {MNIST_TRAIN} "
            f"examples) on one {device.type} device: an epoch of {len(data.y_train)} synthetic MNIST-shaped examples timed per "
            "population group (a stack of members, and one network alone), scaled to the grid",
            "networks": len(configs), "groups_total": len(groups), "groups": rows, **total, "truncated": truncated}


# -- the run ----------------------------------------------------------------------------------
PARTS = (("tests", run_cuda_tests, 0.4), ("block_layers", time_block_layers, 0.5), ("paper_grid", project_paper_grid, 1.0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON file written")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole check (default 270)")
    parser.add_argument("--smoke", action="store_true",
                        help="run every part on the CPU at toy sizes (checks the script, measures nothing)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available() and not args.smoke:
        report = no_gpu_report()
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"gpu_check: no CUDA GPU on this machine; nothing run. Wrote {args.out}.", file=sys.stderr)
        return 0
    device, sizes = (torch.device("cpu"), SMOKE) if args.smoke else (torch.device("cuda"), Sizes())
    started = time.perf_counter()
    report = {**environment(device), "smoke": args.smoke}
    for name, part, share in PARTS:
        # each part may take its share of what is left, the last one all of it
        left = args.budget - (time.perf_counter() - started)
        try:
            report[name] = part(max(1.0, left * share), device, sizes)
        except Exception as exc:   # a check records what failed and goes on to the next part
            report[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        args.out.write_text(json.dumps(report, indent=1) + "\n")   # what is done so far survives a kill
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"gpu_check: {report['device']}, {report['seconds']} s; wrote {args.out}.", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
