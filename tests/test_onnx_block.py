"""Block layers in ONNX: the tiles as a Gather and a batched MatMul, checked in onnxruntime
against torch and against the dense weight, with a file as small as the tiles."""

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.nn import BlockSparseLinear, sparsify

from test_onnx_export import moved, run

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def block_model(construction, n_in, n_out, k, block, bias=True, seed=0):
    """Input, a block layer, ReLU, a dense head: the block layer with moved weights."""
    layer = BlockSparseLinear(build(construction, n_in, n_out, k, seed=seed, block=block),
                              gen=np.random.default_rng(seed), bias=bias)
    head = nn.Linear(n_out, 5)
    with torch.no_grad():
        head.weight.copy_(torch.linspace(-1, 1, head.weight.numel()).view_as(head.weight))
    return moved(nn.Sequential(layer, nn.ReLU(), head))


def reference(model, x):
    """The model computed with the block layer's dense (n_out, n_in) weight: an independent path."""
    layer = model[0]
    hidden = x @ layer.dense_weight().t() + (layer.bias if layer.bias is not None else 0)
    return model[2](torch.relu(hidden))


CASES = {   # construction, n_in, n_out, k, block, bias
    "even": ("regular_rotating", 64, 96, 3, 16, True),
    "ragged-uneven-degree": ("regular_rotating", 70, 40, 1, 8, True),   # some output block reads fewer blocks
    "pair-no-bias": ("random_regular", 100, 70, 2, (8, 16), False),
    "one-block-per-side": ("random_regular", 30, 20, 1, (30, 20), True),
}


@pytest.mark.parametrize("case", CASES)
def test_block_layers_match_torch_and_the_dense_weight(tmp_path, case):
    construction, n_in, n_out, k, block, bias = CASES[case]
    model = block_model(construction, n_in, n_out, k, block, bias)
    result = sparsetopo.export_onnx(model, tmp_path / "m.onnx", input_shape=(1, n_in))
    assert [(layer.name, layer.form) for layer in result.layers] == [("0", "block")]
    gen = torch.Generator().manual_seed(1)
    for batch in (1, 3, 33):
        x = torch.randn(batch, n_in, generator=gen)
        with torch.no_grad():
            expected, independent = model(x).numpy(), reference(model, x).numpy()
        got = run(tmp_path / "m.onnx", x)
        assert np.abs(got - expected).max() <= 1e-4 and np.abs(got - independent).max() <= 1e-4


def test_the_cases_cover_padded_and_unpadded_plans():
    padded = {case: block_model(*CASES[case])[0].plan.fwd_padded for case in CASES}
    assert set(padded.values()) == {True, False}


def test_every_initializer_is_used(tmp_path):
    """onnxruntime warns on stderr about an unused initializer; every form uses all it stores."""
    for case in CASES:
        model = block_model(*CASES[case])
        sparsetopo.export_onnx(model, tmp_path / "m.onnx", input_shape=(1, model[0].topology.n_in))
        graph = onnx.load(str(tmp_path / "m.onnx")).graph
        used = {name for node in graph.node for name in node.input}
        assert {t.name for t in graph.initializer} <= used, case


def forced(model, path, example, form):
    """The sparse export with block layer "0" written in ``form``."""
    from sparsetopo.onnx.sparse import export_sparse

    return export_sparse(model, path, example, forms={"0": form})


def test_a_block_layer_on_a_sequence_and_the_dense_form(tmp_path):
    model = block_model("random_regular", 48, 64, 2, 16)
    x = torch.randn(3, 7, 48, generator=torch.Generator().manual_seed(2))
    assert sparsetopo.export_onnx(model, tmp_path / "auto.onnx", example_input=x[:1]).layers[0].form == "block"
    with torch.no_grad():
        expected = model(x).numpy()
    for form in ("block", "dense"):
        assert forced(model, tmp_path / f"{form}.onnx", x[:1], form).layers[0].form == form
        assert np.abs(run(tmp_path / f"{form}.onnx", x) - expected).max() <= 1e-4


def test_an_unknown_form_for_a_block_layer_is_refused(tmp_path):
    with pytest.raises(SparsetopoError, match="form 'ell' does not write a block layer: choose one of block, dense"):
        forced(block_model("random_regular", 48, 64, 2, 16), tmp_path / "m.onnx", torch.zeros(1, 48), "ell")
    assert not (tmp_path / "m.onnx").exists()


def test_a_block_file_is_as_small_as_its_tiles(tmp_path):
    """At most density + 0.05 of the dense file, a 1024-wide MLP with blocks of 32 at 10%."""
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    model = sparsify(model, "regular_rotating", density=0.1, block=32, include=["0", "2"]).eval()
    sparse = sparsetopo.export_onnx(model, tmp_path / "s.onnx", input_shape=(1, 1024))
    dense = sparsetopo.export_onnx(model, tmp_path / "d.onnx", input_shape=(1, 1024), dense=True)
    density = sum(layer.density * layer.dense_bytes for layer in sparse.layers) / sum(
        layer.dense_bytes for layer in sparse.layers)
    assert [layer.form for layer in sparse.layers] == ["block", "block"]
    assert sparse.file_bytes <= (density + 0.05) * dense.file_bytes
    x = torch.rand(2, 1024, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert np.abs(run(tmp_path / "s.onnx", x) - model(x).numpy()).max() <= 1e-4


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch announces its newer exporter
def test_torch_onnx_export_of_a_block_layer_points_to_export_onnx(tmp_path):
    model = block_model("random_regular", 48, 64, 2, 16)
    with pytest.raises(SparsetopoError, match="use sparsetopo.export_onnx"):
        torch.onnx.export(model, (torch.zeros(1, 48),), str(tmp_path / "m.onnx"), dynamo=False)


def test_a_saved_block_model_exports_from_the_command_line(tmp_path, capsys):
    """save -> sparsetopo export: the file rebuilt without its class, written in the block form."""
    pytest.importorskip("safetensors")
    from sparsetopo.cli import main

    model = block_model("regular_rotating", 64, 96, 3, 16)
    saved = sparsetopo.save(model, tmp_path / "m.safetensors", input_shape=(1, 64))
    assert main(["export", str(saved), "--onnx", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "0 (linear, density 0.5): block (tiles of 16x16), " in out
    assert float(out.rsplit(" ", 1)[1]) < 1e-4
