"""A small CNN on Fashion-MNIST, dense against sparsified: sparsify, save, load, ONNX export.

Usage: ``python examples/cnn_fashion.py [--out docs/cnn_fashion] [--quick]``

The network is two 3x3 convolutions (1->16 and 16->32 channels, each followed by ReLU and 2x2
max pooling) and a classifier (1568->128, ReLU, 128->10), written in plain PyTorch. Each
sparsified variant replaces the second convolution and both linear layers with
:func:`sparsetopo.sparsify` (the first convolution has one input channel, so a channel
topology on it would only cut whole output channels off; it stays dense). Grid: the dense
network, and ``random_regular`` and ``fibonacci_rotating`` at densities 0.25 and 0.1, each with
seeds 0 and 1. Every model trains from scratch with the same recipe (Adam, learning rate 1e-3,
cross-entropy, batch 64) on the first ``--train`` Fashion-MNIST training images for
``--epochs`` epochs and is tested on the whole test set.

For every sparsified model of seed 0 it also writes the model with :func:`sparsetopo.save`,
loads it back with :func:`sparsetopo.load` (and checks the outputs are identical), and exports
it with :func:`sparsetopo.export_onnx` (checked in onnxruntime when installed); the table
reports the file sizes beside ``torch.save(state_dict)`` of the dense network.

Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (or ``--data-dir``, or
sparsetopo's cache); without it the script falls back to scikit-learn's 8x8 digits (offline),
and says so. Nothing is downloaded.

Outputs in ``--out``: ``results.json`` (every run, the machine, the command and the date),
``table.md`` (the table docs/tutorial.md shows) and ``accuracy.png``.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError
from sparsetopo.data import load_dataset
from sparsetopo.nn import SparseConv2d, SparseLinear

CONSTRUCTIONS = ("random_regular", "fibonacci_rotating")
DENSITIES = (0.25, 0.1)
SEEDS = (0, 1)
SPARSE_LAYERS = ["features.3", "classifier"]  # the second convolution and both linear layers


def make_cnn(side: int, seed: int) -> nn.Sequential:
    """The dense network, its initial weights drawn from ``seed`` without touching torch's global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(OrderedDict(
            features=nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),
            classifier=nn.Sequential(nn.Linear(32 * (side // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, 10)),
        ))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def load_data(data_dir, n_train: int):
    """Fashion-MNIST (28x28), else the bundled digits (8x8); images as (N, 1, side, side)."""
    try:
        data = load_dataset("fashion-mnist", data_dir=data_dir, download=False, limit_train=n_train)
    except SparsetopoError as exc:
        print(f"Fashion-MNIST not found ({str(exc).splitlines()[0][:120]}...); using the bundled digits",
              file=sys.stderr)
        data = load_dataset("digits")
    side = int(round(data.n_features ** 0.5))
    as_images = lambda x: torch.from_numpy(x).reshape(-1, 1, side, side)  # noqa: E731
    return (data.name, data.source, side, as_images(data.x_train), torch.from_numpy(data.y_train),
            as_images(data.x_test), torch.from_numpy(data.y_test))


def accuracy(model, x, y, batch=1000) -> float:
    model.eval()
    with torch.no_grad():
        correct = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


def warm_up() -> None:
    """Compile the sparse kernels before any timing (numba compiles on first use, then caches)."""
    layer = SparseLinear(sparsetopo.build("random_regular", 64, 32, 4), backend="sparse")
    layer(torch.rand(64, 64, requires_grad=True)).sum().backward()


def train(model, x, y, epochs: int, seed: int, batch: int = 64) -> tuple[float, float]:
    """Adam + cross-entropy; returns (wall seconds, CPU seconds) per epoch. Shuffling comes from
    its own generator. CPU seconds (all threads of this process) move less than wall seconds
    when other programs share the machine."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    tick, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return (time.perf_counter() - tick) / max(epochs, 1), (time.process_time() - cpu) / max(epochs, 1)


def connections(model) -> int:
    """Trainable weights that exist: connected ones for sparse layers, all for dense ones (no biases)."""
    total = 0
    for module in model.modules():
        if isinstance(module, (SparseLinear, SparseConv2d)):
            per = 1 if isinstance(module, SparseLinear) else int(np.prod(module.kernel_size))
            total += module.topology.nnz * per
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            total += module.weight.numel()
    return total


def files(model, side: int, x_probe, workdir: Path, tag: str) -> dict:
    """save -> load (outputs must be identical) -> export_onnx (checked in onnxruntime if present)."""
    path = workdir / f"{tag}.safetensors"
    try:
        sparsetopo.save(model, path, input_shape=(1, 1, side, side))
    except SparsetopoError as exc:  # safetensors not installed: pip install 'sparsetopo[io]'
        return {"safetensors": str(exc)}
    loaded = sparsetopo.load(path)
    model.eval()
    loaded.eval()
    with torch.no_grad():
        same = bool(torch.equal(model(x_probe), loaded(x_probe)))
    out = {"safetensors_bytes": path.stat().st_size, "load_identical": same}
    try:
        onnx_path = sparsetopo.export_onnx(loaded, workdir / f"{tag}.onnx", input_shape=(1, 1, side, side)).path
        out["onnx_bytes"] = onnx_path.stat().st_size
        from sparsetopo.onnx import onnx_difference

        out["onnx_max_abs_diff"] = onnx_difference(loaded, onnx_path, x_probe)
    except SparsetopoError as exc:  # onnx / onnxruntime not installed
        out["onnx"] = str(exc)
    return out


def table(runs: list[dict], dense_bytes: int) -> str:
    rows = ["| network | density | test accuracy: mean (seeds 0, 1) | weights | CPU s / epoch | wall s / epoch "
            "| safetensors file |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["construction"], r["density"]), []).append(r)
    for (construction, density), rs in groups.items():
        accs = ", ".join(f"{r['test_accuracy']:.4f}" for r in rs)
        mean = np.mean([r["test_accuracy"] for r in rs])
        secs = np.mean([r["seconds_per_epoch"] for r in rs])
        cpu = np.mean([r["cpu_seconds_per_epoch"] for r in rs])
        size = next((r["files"].get("safetensors_bytes") for r in rs if "files" in r), None)
        size_text = f"{size / 1024:.1f} KiB ({size / dense_bytes:.1%})" if size else \
            f"{dense_bytes / 1024:.1f} KiB (torch.save)"
        rows.append(f"| {construction} | {density if density else 1} | {mean:.4f} ({accs}) | {rs[0]['weights']} "
                    f"| {cpu:.1f} | {secs:.1f} | {size_text} |")
    return "\n".join(rows) + "\n"


def figure(runs: list[dict], path: Path, dataset: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4))
    dense = [r for r in runs if r["construction"] == "dense"]
    ax.scatter([r["weights"] for r in dense], [r["test_accuracy"] for r in dense], color="black", marker="D",
               label="dense")
    ax.axhline(np.mean([r["test_accuracy"] for r in dense]), color="black", linestyle="--", linewidth=0.8)
    for i, construction in enumerate(CONSTRUCTIONS):
        pts = [r for r in runs if r["construction"] == construction]
        shift = 0.96 if i == 0 else 1.04  # side by side: both constructions have the same weight counts
        ax.scatter([r["weights"] * shift for r in pts], [r["test_accuracy"] for r in pts], label=construction,
                   marker="os"[i], alpha=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("weights that exist (log scale; one point per seed)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Small CNN on {dataset}: sparsified at densities {', '.join(map(str, DENSITIES))}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/cnn_fashion"))
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train", type=int, default=12000, help="training images used (the first N)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1000 images, 1 epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.train, args.epochs = 1000, 1
    started = time.perf_counter()
    dataset, source, side, x_train, y_train, x_test, y_test = load_data(args.data_dir, args.train)
    x_probe = x_test[:8]
    warm_up()
    runs = []
    buffer = io.BytesIO()
    torch.save(make_cnn(side, 0).state_dict(), buffer)
    dense_bytes = len(buffer.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        for seed in SEEDS:
            for construction, density in [("dense", None)] + [(c, d) for c in CONSTRUCTIONS for d in DENSITIES]:
                model = make_cnn(side, seed)
                if construction != "dense":
                    model = sparsetopo.sparsify(model, construction, density=density, seed=seed,
                                                include=SPARSE_LAYERS, keep_weights=False)
                seconds, cpu = train(model, x_train, y_train, args.epochs, seed)
                run = {"construction": construction, "density": density, "seed": seed,
                       "test_accuracy": accuracy(model, x_test, y_test), "seconds_per_epoch": seconds,
                       "cpu_seconds_per_epoch": cpu,
                       "weights": connections(model),
                       "layers": getattr(model, "sparsetopo_summary", [])}
                if construction != "dense" and seed == 0:
                    run["files"] = files(model, side, x_probe, Path(tmp), f"{construction}-{density}")
                runs.append(run)
                print(f"{construction:>18} density {density or 1:<5} seed {seed}: test accuracy "
                      f"{run['test_accuracy']:.4f}, {seconds:.1f} s/epoch ({cpu:.1f} CPU s)", flush=True)
    runs.sort(key=lambda r: (CONSTRUCTIONS.index(r["construction"]) + 1 if r["construction"] != "dense" else 0,
                             -(r["density"] or 1), r["seed"]))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(["python", "examples/cnn_fashion.py", *(argv if argv is not None else sys.argv[1:])]),
              "date": datetime.date.today().isoformat(), "dataset": dataset, "source": source,
              "train_images": int(len(x_train)), "test_images": int(len(x_test)), "epochs": args.epochs,
              "dense_state_dict_bytes": dense_bytes, "total_seconds": time.perf_counter() - started,
              "machine": {"cpu": cpu_model(), "cpus": os.cpu_count(),
                          "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                          "load_average_1min": os.getloadavg()[0]},
              "runs": runs}
    (args.out / "results.json").write_text(json.dumps(result, indent=1))
    (args.out / "table.md").write_text(table(runs, dense_bytes))
    figure(runs, args.out / "accuracy.png", dataset)
    print(table(runs, dense_bytes))
    print(f"wrote {args.out}/results.json, table.md, accuracy.png in {result['total_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
