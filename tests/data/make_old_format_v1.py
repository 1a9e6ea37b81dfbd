"""Write old_format_v1.safetensors and its expected outputs (old_format_v1.json).

The file was written by sparsetopo at commit 82bdd45 (format version 1, linear weights held
``(in, out)`` in memory); tests/test_io.py checks that the current sparsetopo still loads it to
the same outputs. Rerunning this script with a later sparsetopo writes a file of the later
format, so the committed one must not be regenerated.

    PYTHONPATH=src python tests/data/make_old_format_v1.py
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import sparsetopo
from sparsetopo.nn import SparseConv2d, SparseLinear
from sparsetopo.topology import build

HERE = Path(__file__).resolve().parent


def model() -> nn.Sequential:
    gen = np.random.default_rng(28)
    net = nn.Sequential(
        SparseConv2d(build("regular_rotating", 2, 4, 2), 3, padding=1, gen=gen), nn.ReLU(), nn.Flatten(),
        SparseLinear(build("fibonacci_rotating", 64, 64, 8), gen=gen, backend="masked"), nn.ReLU(),
        SparseLinear(build("long_short_rotating", 64, 10, 3), gen=gen, backend="sparse"))
    with torch.no_grad():   # non-zero biases, so that a bias lost on load shows
        for layer in (net[0], net[3], net[5]):
            layer.bias.copy_(torch.from_numpy(gen.standard_normal(layer.bias.shape[0]).astype(np.float32)))
    return net


def example_input() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(1).standard_normal((3, 2, 4, 4)).astype(np.float32))


if __name__ == "__main__":
    net = model()
    sparsetopo.save(net, HERE / "old_format_v1.safetensors")
    with torch.no_grad():
        out = net(example_input())
    (HERE / "old_format_v1.json").write_text(json.dumps({"output": out.tolist()}) + "\n")
