"""Sparse ONNX export against the dense export: file size, batch-1 latency, batch-256 throughput.

Usage: ``python benchmarks/bench_onnx.py [--json] [--repeats N] [--widths 1024,4096] [--only TEXT]``

For each model and density, the model is sparsified (``random_regular``, seed 0, as
``sparsetopo.sparsify`` does by default otherwise) and written twice the way a user writes it:
``sparsetopo.export_onnx(model, path, input_shape=...)`` (the sparse forms) and the same with
``dense=True`` (the dense equivalent: the same graph, and the same file size, as the dense
model's export). Both files are run by onnxruntime's CPU provider with one thread
(``intra_op_num_threads = inter_op_num_threads = 1``), sessions created with the default
graph optimisations (which fold the constant parts of the sparse graph once, at load), timed
in the same process and interleaved call by call so that machine load hits both alike;
medians after warm-up. Each output is first checked against the torch model (max |diff|).

Models: the tutorial's CNN (the second convolution and the first linear layer sparsified) on
1 x 28 x 28 images, and MLPs 784-W-W-10 (ReLU; both hidden layers sparsified) for each width
W. The first convolution (one input channel) and the 10-output layers stay dense: at 2% those
would have ``k = round(0.02 * 10) = 0``.
Densities 2%, 10% and 30%. Block layers: the same MLPs with both hidden layers sparsified on
blocks of 32 neurons at 10% (``sparsify(..., block=32)``, case ``mlpW-block32``), written in the
``block`` form (a Gather of input blocks and one batched MatMul on the tiles). Ratios are sparse /
dense: file bytes, batch-1 seconds and batch-256 rows per second (above 1 means the sparse file
is faster at that batch).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from _common import machine
import sparsetopo
from sparsetopo.nn import sparsify
from sparsetopo.nn.calibration import alternating_medians

DENSITIES = (0.02, 0.1, 0.3)
BLOCK, BLOCK_DENSITY = 32, 0.1
TARGETS = {  # the acceptance targets, on the 4096-wide MLP unless named
    "file_ratio mlp4096 d0.1": 0.25, "file_ratio cnn d0.1": 0.25, "file_ratio mlp4096 d0.02": 0.08,
    "latency_ratio_batch1 mlp4096 d0.1": 0.5, "latency_ratio_batch1 mlp4096 d0.02": 0.2,
    "throughput_ratio_batch256 mlp4096 d0.1": 1.0,
    # block layers: a file at most density + 0.05 of the dense one, batch 1 at most a quarter of its time
    f"file_ratio mlp4096-block{BLOCK} d{BLOCK_DENSITY}": round(BLOCK_DENSITY + 0.05, 2),
    f"latency_ratio_batch1 mlp4096-block{BLOCK} d{BLOCK_DENSITY}": 0.25,
}


def cnn() -> nn.Module:
    """The tutorial's network: two convolutions and a classifier."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),
        classifier=nn.Sequential(nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)),
    ))


def mlp(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))


def session(path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure(name: str, model: nn.Module, input_shape, repeats: int, workdir: Path) -> dict:
    model = model.eval()
    files = {"dense": workdir / f"{name}.dense.onnx", "sparse": workdir / f"{name}.sparse.onnx"}
    dense = sparsetopo.export_onnx(model, files["dense"], input_shape=input_shape, dense=True)
    sparse = sparsetopo.export_onnx(model, files["sparse"], input_shape=input_shape)
    tick = time.perf_counter()
    sessions = {"dense": session(files["dense"]), "sparse": session(files["sparse"])}
    load_s = time.perf_counter() - tick
    gen = torch.Generator().manual_seed(0)
    out = {"file_bytes": {side: files[side].stat().st_size for side in files}, "session_load_s_both": load_s,
           "layers": sparse.rows()}
    for batch in (1, 3, 256):
        x = torch.rand((batch, *input_shape[1:]), generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        feeds = {"input": x.numpy()}
        out.setdefault("max_abs_diff", {})[str(batch)] = max(
            float(np.abs(s.run(None, feeds)[0] - expected).max()) for s in sessions.values())
        if batch == 3:
            continue
        n = repeats if batch == 1 else max(3, repeats // 6)
        seconds = alternating_medians({side: (lambda s=s: s.run(None, feeds)) for side, s in sessions.items()}, n)
        out.setdefault("seconds", {})[str(batch)] = seconds
    files["dense"].unlink()
    files["sparse"].unlink()
    b1, b256 = out["seconds"]["1"], out["seconds"]["256"]
    out["file_ratio"] = out["file_bytes"]["sparse"] / out["file_bytes"]["dense"]
    out["latency_ratio_batch1"] = b1["sparse"] / b1["dense"]
    out["throughput_ratio_batch256"] = b256["dense"] / b256["sparse"]
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--repeats", type=int, default=60, help="batch-1 calls per side (batch 256: a sixth)")
    parser.add_argument("--widths", default="1024,4096", help="MLP widths, comma separated")
    parser.add_argument("--only", default="", help="run only the models whose name holds this text (e.g. block)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # the 10-output layers stay dense: at 2% they would have k = round(0.02 * 10) = 0
    widths = list(map(int, args.widths.split(",")))
    cases = [("cnn", cnn, (1, 1, 28, 28), {"include": ["features.3", "classifier.0"]}, DENSITIES)]
    cases += [(f"mlp{w}", (lambda w=w: mlp(w)), (1, 784), {"include": ["0", "2"]}, DENSITIES) for w in widths]
    cases += [(f"mlp{w}-block{BLOCK}", (lambda w=w: mlp(w)), (1, 784), {"include": ["0", "2"], "block": BLOCK},
               (BLOCK_DENSITY,)) for w in widths]
    cases = [case for case in cases if args.only in case[0]]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, make, shape, kwargs, densities in cases:
            for density in densities:
                torch.manual_seed(0)
                model = sparsify(make(), "random_regular", density=density, seed=0, **kwargs)
                key = f"{name} d{density}"
                results[key] = measure(key.replace(" ", "_"), model, shape, args.repeats, Path(tmp))
                if not args.json:
                    r = results[key]
                    print(f"{key}: file {r['file_ratio']:.3f} of dense ({r['file_bytes']['sparse']} bytes), "
                          f"batch 1 {r['latency_ratio_batch1']:.3f} of dense's time "
                          f"({r['seconds']['1']['sparse'] * 1e3:.3f} ms vs {r['seconds']['1']['dense'] * 1e3:.3f}), "
                          f"batch 256 throughput {r['throughput_ratio_batch256']:.3f} of dense's; "
                          f"max |diff| {max(r['max_abs_diff'].values()):.1e}", flush=True)
    measured = {}
    for target in TARGETS:
        field, case, density = target.split(" ")
        if f"{case} {density}" in results:
            measured[target] = results[f"{case} {density}"][field]
    report = {"benchmark": "sparse ONNX export against the dense export in onnxruntime, one thread",
              "cases": results, "measured": measured, "targets": {k: TARGETS[k] for k in measured},
              "onnxruntime": __import__("onnxruntime").__version__, "onnx": __import__("onnx").__version__,
              "machine_recorded": machine()}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for target, value in measured.items():
            better = value >= TARGETS[target] if "throughput" in target else value <= TARGETS[target]
            print(f"{target}: {value:.3f} (target {'>=' if 'throughput' in target else '<='} {TARGETS[target]}: "
                  f"{'met' if better else 'missed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
