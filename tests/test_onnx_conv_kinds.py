"""Convolutions the sparse ONNX forms do not cover (1-d, 3-d, grouped) export as the dense layer
computing the same function, are listed with form "dense", and match onnxruntime."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sparsetopo

pytest.importorskip("onnxruntime")

MODELS = {
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(4, 16, 3), nn.ReLU(), nn.Conv1d(16, 16, 3, padding=1), nn.Flatten(),
                                     nn.Linear(16 * 6, 5)), (3, 4, 8), ["0", "2"]),
    "conv3d": (lambda: nn.Sequential(nn.Conv3d(2, 8, 3), nn.ReLU(), nn.Conv3d(8, 8, 1)), (2, 2, 5, 5, 5), ["0", "2"]),
    "grouped": (lambda: nn.Sequential(nn.Conv2d(8, 16, 3, groups=2), nn.ReLU(), nn.Conv2d(16, 16, 3, groups=4)),
                (2, 8, 9, 9), ["0", "2"]),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_convolution_without_a_sparse_form_exports_dense_and_matches(kind, tmp_path):
    from sparsetopo.onnx import onnx_difference

    build, shape, dense_layers = MODELS[kind]
    torch.manual_seed(0)
    model = sparsetopo.sparsify(build(), "random_regular", density=0.5)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    exported = sparsetopo.export_onnx(model, tmp_path / f"{kind}.onnx", example_input=x)
    forms = {layer.name: layer.form for layer in exported.layers}
    assert [name for name, form in forms.items() if form == "dense"] == dense_layers
    assert set(forms) == {name for name, m in model.named_modules() if hasattr(m, "topology")}
    assert onnx_difference(model, exported.path, x) < 1e-4
    dense = model.get_submodule(dense_layers[0])
    row = next(layer for layer in exported.layers if layer.name == dense_layers[0])
    assert row.bytes == row.dense_bytes == 4 * (dense.weight.numel() + dense.bias.numel())
