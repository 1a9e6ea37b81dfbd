"""The sparse ONNX export: every form against the torch model in onnxruntime, file sizes, summary."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.cli import main
from sparsetopo.nn import SparseConv2d, SparseLinear, sparsify
from sparsetopo.onnx import dense_equivalent
from sparsetopo.onnx.graph import padded_by_output
from sparsetopo.onnx.linear import dense_model_bytes, ell_max_batch
from sparsetopo.onnx.sparse import export_sparse

from test_io import cnn, seeded  # the tutorial's network

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
BATCHES = (1, 3, 64)


def moved(model):
    """Every weight and bias off its initial value (as after training), deterministically."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        for module in model.modules():  # pruned weights stay exactly 0
            if isinstance(module, (SparseLinear, SparseConv2d)) and module.backend == "masked":
                module.weight.mul_(module.mask)
    return model.eval()


def run(path, x):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def assert_matches(model, path, shape, batches=BATCHES):
    gen = torch.Generator().manual_seed(1)
    for batch in batches:
        x = torch.rand((batch, *shape), generator=gen)
        with torch.no_grad():
            expected = model(x).numpy()
        got = run(path, x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4, (batch, np.abs(got - expected).max())


def forms_of(result):
    return {layer.name: layer.form for layer in result.layers}


@pytest.mark.parametrize("backend", ["sparse", "masked"])
def test_cnn_matches_torch_at_batches_1_3_64(tmp_path, backend):
    model = moved(sparsify(seeded(0, cnn), "random_regular", density=0.1, seed=0, backend=backend,
                           include=["features.3", "classifier"]))
    result = sparsetopo.export_onnx(model, tmp_path / "cnn.onnx", input_shape=(1, 1, 28, 28))
    assert_matches(model, result.path, (1, 28, 28))
    assert forms_of(result) == {"features.3": "expanded", "classifier.0": "expanded", "classifier.2": "expanded"}
    assert isinstance(model.classifier[0], SparseLinear)   # the model itself is untouched


@pytest.mark.parametrize("backend", ["sparse", "masked"])
def test_dense_layer_between_sparse_ones(tmp_path, backend):
    model = nn.Sequential(nn.Linear(200, 300), nn.ReLU(), nn.Linear(300, 120), nn.Tanh(), nn.Linear(120, 300))
    model = moved(sparsify(seeded(1, lambda: model), "random_regular", k=3, seed=2, backend=backend,
                           include=["0", "4"]))
    assert isinstance(model[2], nn.Linear) and isinstance(model[0], SparseLinear)
    result = sparsetopo.export_onnx(model, tmp_path / "mlp.onnx", input_shape=(1, 200))
    assert [layer.name for layer in result.layers] == ["0", "4"]
    assert result.layers[0].form == "ell" and result.layers[0].ell_max_batch >= 3  # batch 3 runs the offset path
    assert_matches(model, result.path, (200,))


LINEAR_FORMS = ("ell", "expanded", "dense")
CONV_FORMS = ("gathered", "expanded", "dense")


@pytest.mark.parametrize("construction", ["random_edge", "fibonacci_rotating"])
@pytest.mark.parametrize("form", LINEAR_FORMS)
def test_every_linear_form_matches(tmp_path, form, construction):
    """random_edge has uneven in-degrees (padding slots); a rotating one has n_in > n_out here."""
    layers = [SparseLinear(build(construction, 90, 40, 4, seed=3), gen=np.random.default_rng(4), bias=bias)
              for bias in (True, False)]
    model = moved(nn.Sequential(layers[0], nn.ReLU(), nn.Linear(40, 90), layers[1]))
    result = export_sparse(model, tmp_path / "m.onnx", torch.zeros(1, 90), forms={"0": form, "3": form})
    assert forms_of(result) == {"0": form, "3": form}
    assert_matches(model, result.path, (90,))


@pytest.mark.parametrize("padding,padding_mode,stride", [(1, "zeros", 1), ("same", "zeros", 1), (0, "zeros", 2),
                                                         (1, "reflect", 1), ((2, 1), "circular", 2)])
@pytest.mark.parametrize("form", CONV_FORMS)
def test_every_conv_form_matches(tmp_path, form, padding, padding_mode, stride):
    conv = SparseConv2d(build("random_edge", 6, 8, 2, seed=5), (3, 2) if padding != "same" else 3, stride=stride,
                        padding=padding, padding_mode=padding_mode, gen=np.random.default_rng(6))
    model = moved(nn.Sequential(conv, nn.ReLU(), nn.Flatten()))
    result = export_sparse(model, tmp_path / "c.onnx", torch.zeros(1, 6, 9, 10), forms={"0": form})
    assert forms_of(result) == {"0": form}
    assert_matches(model, result.path, (6, 9, 10))


class _CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = SparseLinear(build("random_edge", 12, 12, 3, seed=2), gen=np.random.default_rng(3))

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


@pytest.mark.parametrize("form", LINEAR_FORMS)
@pytest.mark.parametrize("held", ["called twice", "held twice"])
def test_a_layer_used_twice_computes_twice_and_is_listed_once(tmp_path, form, held):
    if held == "called twice":
        model, name = moved(_CalledTwice()), "lin"
    else:
        lin = SparseLinear(build("random_edge", 12, 12, 3, seed=2), gen=np.random.default_rng(3))
        model, name = moved(nn.Sequential(lin, nn.ReLU(), lin)), "0"
    result = export_sparse(model, tmp_path / "t.onnx", torch.zeros(1, 12), forms={name: form})
    assert forms_of(result) == {name: form}
    assert_matches(model, result.path, (12,))


def test_a_depthwise_topology_is_gathered_and_a_lone_layer_exports(tmp_path):
    conv = moved(SparseConv2d(build("random_regular", 8, 16, 2, seed=0), 3, padding=1, bias=False))
    assert conv.topology.in_degrees.max() == 1
    result = sparsetopo.export_onnx(conv, tmp_path / "c.onnx", input_shape=(1, 8, 12, 12))
    assert forms_of(result) == {"": "gathered"}
    assert result.layers[0].bytes < result.layers[0].dense_bytes * 0.2
    assert_matches(conv, result.path, (8, 12, 12))


def test_a_linear_layer_on_a_sequence_is_expanded(tmp_path):
    model = moved(nn.Sequential(SparseLinear(build("random_regular", 50, 60, 2, seed=0)), nn.ReLU()))
    result = export_sparse(model, tmp_path / "s.onnx", torch.zeros(1, 7, 50))
    assert result.layers[0].form == "expanded" and result.layers[0].note == "input of rank 3"
    assert_matches(model, result.path, (7, 50), batches=(1, 3))


def test_a_model_without_sparse_layers_exports_silently(tmp_path, capfd):
    model = moved(nn.Sequential(nn.Linear(5, 3), nn.ReLU()))
    result = sparsetopo.export_onnx(model, tmp_path / "plain.onnx", input_shape=(1, 5))
    assert result.layers == () and capfd.readouterr() == ("", "")
    assert_matches(model, result.path, (5,), batches=(1, 3))


def test_padded_by_output_lists_each_outputs_inputs():
    t = build("random_edge", 30, 12, 3, seed=1)
    values = np.arange(t.nnz, dtype=np.float32) + 1
    index, weights = padded_by_output(t, values)
    dense = np.zeros((30, 12), np.float32)
    dense[t.rows, t.indices] = values
    assert index.shape[1] == t.in_degrees.max()
    for j in range(12):
        assert len(set(index[j])) == index.shape[1]                  # padding slots are distinct inputs
        np.testing.assert_array_equal(weights[j], dense[index[j], j])  # and carry zero weight


def test_dense_true_gives_the_dense_graph_of_before(tmp_path):
    model = moved(sparsify(seeded(0, cnn), "random_regular", density=0.25, seed=0,
                           include=["features.3", "classifier"]))
    result = sparsetopo.export_onnx(model, tmp_path / "dense.onnx", input_shape=(1, 1, 28, 28), dense=True)
    with warnings.catch_warnings():  # the export as earlier versions wrote it, straight to a file
        warnings.simplefilter("ignore")
        torch.onnx.export(dense_equivalent(model).cpu().eval(), (torch.zeros(1, 1, 28, 28),), str(tmp_path / "b.onnx"),
                          input_names=["input"], output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    assert onnx.load(str(result.path)).graph == onnx.load(str(tmp_path / "b.onnx")).graph
    assert {layer.form for layer in result.layers} == {"dense"} and result.dense
    assert_matches(model, result.path, (1, 28, 28), batches=(1, 3))


@pytest.mark.parametrize("density,limit", [(0.1, 0.25), (0.02, 0.08)])
def test_sparse_file_is_as_small_as_the_connections(tmp_path, density, limit):
    model = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    model = sparsify(seeded(0, lambda: model), "random_regular", density=density, seed=0, include=["0", "2"])
    sparse = sparsetopo.export_onnx(model, tmp_path / "s.onnx", input_shape=(1, 784))
    dense = sparsetopo.export_onnx(model, tmp_path / "d.onnx", input_shape=(1, 784), dense=True)
    assert sparse.file_bytes <= limit * dense.file_bytes
    for name, layer, dense_layer in zip(["0", "2"], sparse.layers, dense.layers):
        # per output, its inputs padded to the largest in-degree: a float32 weight and an int16
        # index each, then the float32 bias and the int64 output number (for the expansion),
        # and a few shapes; nothing else grows with the layer
        t = model.get_submodule(name).topology
        per_output = (4 + 2) * t.in_degrees.max() + 4 + 8
        assert per_output * t.n_out <= layer.bytes <= per_output * t.n_out + 256
        assert t.n_out * t.in_degrees.max() <= 1.05 * t.nnz
        assert layer.dense_bytes == dense_layer.bytes == 4 * (t.n_in + 1) * t.n_out


def test_ell_stops_where_dense_pays():
    assert ell_max_batch(4096, 410, cached=False) == 1 and ell_max_batch(4096, 82, cached=False) == 5
    assert ell_max_batch(4096, 1229, cached=False) == 0
    assert ell_max_batch(1024, 102, cached=True) == 0 and ell_max_batch(1024, 20, cached=True) == 2
    mlp = nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 10))
    assert dense_model_bytes(sparsify(mlp, "random_regular", k=3, include=["0"])) == 4 * (785 * 1024 + 1025 * 10)


def test_bad_requests_are_refused(tmp_path):
    model = sparsify(nn.Sequential(nn.Linear(20, 30)), "random_regular", k=3)
    with pytest.raises(SparsetopoError, match="opset=11: the sparse ONNX forms need opset 13"):
        sparsetopo.export_onnx(model, tmp_path / "x.onnx", input_shape=(1, 20), opset=11)
    with pytest.raises(SparsetopoError, match=r"forms names \['nope'\], not sparse layers"):
        export_sparse(model, tmp_path / "x.onnx", torch.zeros(1, 20), forms={"nope": "ell"})
    assert not (tmp_path / "x.onnx").exists()


def test_cli_prints_each_layers_form_and_bytes(tmp_path, capsys):
    model = sparsify(seeded(0, cnn), "random_regular", density=0.1, include=["features.3", "classifier"])
    saved = sparsetopo.save(model, tmp_path / "cnn.safetensors", input_shape=(1, 1, 28, 28))
    assert main(["export", str(saved), "--onnx", str(tmp_path / "cnn.onnx")]) == 0
    out = capsys.readouterr().out
    assert "classifier.0 (linear, density 0.102): expanded, " in out
    assert "features.3 (conv2d, density 0.0938): expanded" in out
    assert float(out.rsplit(" ", 1)[1]) < 1e-4
    sparse_size = (tmp_path / "cnn.onnx").stat().st_size
    assert main(["export", str(saved), "--onnx", str(tmp_path / "dense.onnx"), "--dense"]) == 0
    out = capsys.readouterr().out
    assert "classifier.0 (linear, density 0.102): dense, 803328 bytes (dense 803328)" in out
    assert sparse_size < 0.25 * (tmp_path / "dense.onnx").stat().st_size
