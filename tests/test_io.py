"""save / load (safetensors, connected weights only) and ONNX export."""

import io
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.cli import main
from sparsetopo.io import read_metadata
from sparsetopo.nn import SparseLinear, SparseMLP, sparsify

safetensors = pytest.importorskip("safetensors.torch")


def seeded(seed, make):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def cnn():
    """The tutorial's network: two convolutions and a classifier."""
    return nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),
        classifier=nn.Sequential(nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)),
    ))


class Custom(nn.Module):
    """A model class sparsetopo cannot rebuild alone: load needs an instance."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(12)
        self.a = nn.Linear(12, 20)
        self.b = nn.Linear(20, 3, bias=False)

    def forward(self, x):
        return self.b(torch.relu(self.a(self.norm(x))))


def images(n=5, seed=0):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def trained_a_little(model, x, steps=3):
    """Move every weight off its initial value (biases and batch-norm statistics included)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def dense_state_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return len(buffer.getvalue())


@pytest.mark.parametrize("backend", ["sparse", "masked"])
def test_save_load_gives_identical_outputs_without_the_class(tmp_path, backend):
    model = sparsify(seeded(0, cnn), "random_regular", density=0.25, seed=3, backend=backend,
                     include=["features.3", "classifier"])
    x = images()
    trained_a_little(model, x)
    path = sparsetopo.save(model, tmp_path / "cnn.safetensors", input_shape=(1, 1, 28, 28))
    loaded = sparsetopo.load(path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [row["name"] for row in loaded.sparsetopo_summary] == ["features.3", "classifier.0", "classifier.2"]
    assert {row["backend"] for row in loaded.sparsetopo_summary if row["kind"] == "linear"} == {backend}
    for (name, a), (_, b) in zip(model.named_modules(), loaded.named_modules()):
        assert type(a) is type(b), name


def test_save_load_a_custom_class_into_an_instance(tmp_path):
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(0))
    model = trained_a_little(sparsify(seeded(1, Custom), "fibonacci_rotating", k=3, seed=2), x).eval()
    path = sparsetopo.save(model, tmp_path / "custom.safetensors")
    with pytest.raises(SparsetopoError, match="custom class.*model=MyNet"):
        sparsetopo.load(path)
    loaded = sparsetopo.load(path, model=seeded(9, Custom)).eval()   # other initial weights: all overwritten
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert loaded.b.bias is None and torch.equal(loaded.norm.running_mean, model.norm.running_mean)


DATA = Path(__file__).resolve().parent / "data"


@pytest.mark.parametrize("backend", [None, "masked", "sparse"])
def test_a_file_of_format_version_1_still_loads(backend):
    """Written before the linear layers held nn.Linear's (out, in) weight (tests/data/make_old_format_v1.py)."""
    path = DATA / "old_format_v1.safetensors"
    assert read_metadata(path)["format_version"] == 1
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((3, 2, 4, 4)).astype(np.float32))
    want = torch.tensor(json.loads((DATA / "old_format_v1.json").read_text())["output"])
    twin = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))
    for model in (sparsetopo.load(path, backend=backend), sparsetopo.load(path, model=twin, backend=backend)):
        assert [type(m).__name__ for m in model] == ["SparseConv2d", "ReLU", "Flatten", "SparseLinear", "ReLU",
                                                     "SparseLinear"]
        with torch.no_grad():
            torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-6)


def test_save_and_load_never_build_a_sparse_layers_dense_weight(tmp_path, monkeypatch):
    """state_dict() offers nn.Linear's dense view; the file needs only the connected weights."""
    model = SparseMLP([build("random_regular", 64, 40, 8, seed=1), build("regular_rotating", 40, 10, 4)], seed=4,
                      backend="sparse")
    assert set(model.state_dict()) == {"layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"}

    def refuse(self):
        raise AssertionError("dense weight built")

    monkeypatch.setattr(SparseLinear, "dense_weight", refuse)
    loaded = sparsetopo.load(sparsetopo.save(model, tmp_path / "mlp.safetensors"))
    for a, b in zip(loaded.layers, model.layers):
        assert torch.equal(a.values, b.values)


def test_load_into_a_meta_instance(tmp_path):
    x = torch.randn(8, 12, generator=torch.Generator().manual_seed(0))
    model = trained_a_little(sparsify(seeded(1, Custom), "fibonacci_rotating", k=3, seed=2), x).eval()
    path = sparsetopo.save(model, tmp_path / "custom.safetensors")
    with torch.device("meta"):
        instance = Custom()
    loaded = sparsetopo.load(path, model=instance).eval()
    assert not any(t.is_meta for t in [*loaded.parameters(), *loaded.buffers()])
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with torch.device("meta"):
        unsaved = Custom()
    unsaved.norm.register_buffer("scale", torch.ones(12), persistent=False)
    with pytest.raises(SparsetopoError, match="meta device.*'norm.scale' is not saved"):
        sparsetopo.load(path, model=unsaved)


def test_save_load_a_sparse_mlp(tmp_path):
    topologies = [build("random_regular", 64, 40, 8, seed=1), build("regular_rotating", 40, 10, 4)]
    model = SparseMLP(topologies, seed=4, backend="sparse")
    x = torch.rand(6, 64, generator=torch.Generator().manual_seed(2))
    loaded = sparsetopo.load(sparsetopo.save(model, tmp_path / "mlp.safetensors"))
    assert isinstance(loaded, SparseMLP)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_file_holds_only_connected_weights_and_is_small(tmp_path):
    dense = seeded(0, cnn)
    dense_bytes = dense_state_bytes(dense)
    model = sparsify(seeded(0, cnn), "random_regular", density=0.1, include=["features.3", "classifier"])
    path = sparsetopo.save(model, tmp_path / "cnn.safetensors")
    size = path.stat().st_size
    assert size <= 0.15 * dense_bytes, f"{size} bytes is more than 15% of the dense {dense_bytes} bytes"
    with safetensors.safe_open(str(path), framework="pt") as f:
        shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
        meta = json.loads(f.metadata()["sparsetopo"])
    fc = model.classifier[0].topology
    assert shapes["classifier.0.values"] == (fc.nnz,)
    assert shapes["features.3.values"] == (model.features[3].topology.nnz, 3, 3)
    assert shapes["features.0.weight"] == (16, 1, 3, 3)                       # the dense layer, as it is
    assert not any(key.endswith(".weight") and key.startswith(("classifier", "features.3")) for key in shapes)
    recipe = meta["layers"]["classifier.0"]
    assert {key: recipe[key] for key in ("construction", "n_in", "n_out", "k", "version")} == \
        {"construction": "random_regular", "n_in": 1568, "n_out": 128, "k": 13, "version": 1}
    assert recipe["fingerprint"] == fc.fingerprint


def rewrite(path, change):
    """Rewrite a saved file's sparsetopo metadata with ``change(info)``."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        tensors = {key: f.get_tensor(key) for key in f.keys()}
        info = json.loads(f.metadata()["sparsetopo"])
    change(info)
    safetensors.save_file(tensors, str(path), metadata={"sparsetopo": json.dumps(info)})


def test_newer_and_older_construction_versions_are_refused(tmp_path):
    path = sparsetopo.save(SparseLinear(build("regular_rotating", 10, 6, 2)), tmp_path / "layer.safetensors")
    assert isinstance(sparsetopo.load(path), SparseLinear)
    rewrite(path, lambda info: info["layers"][""].update(version=2))
    with pytest.raises(SparsetopoError, match="version 2 of regular_rotating, newer than this sparsetopo's "
                                              "version 1: upgrade sparsetopo"):
        sparsetopo.load(path)
    rewrite(path, lambda info: info["layers"][""].update(version=0))
    with pytest.raises(SparsetopoError, match="version 0 of regular_rotating, whose masks this sparsetopo"):
        sparsetopo.load(path)


def test_damaged_or_foreign_files_are_refused(tmp_path):
    path = sparsetopo.save(sparsify(seeded(0, Custom), "random_edge", k=2), tmp_path / "m.safetensors")
    rewrite(path, lambda info: info["layers"]["a"].update(seed=info["layers"]["a"]["seed"] + 1))
    with pytest.raises(SparsetopoError, match="the mask rebuilt for layer 'a' differs"):
        sparsetopo.load(path, model=Custom())
    foreign = tmp_path / "foreign.safetensors"
    safetensors.save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(SparsetopoError, match="without sparsetopo metadata"):
        sparsetopo.load(foreign)
    (tmp_path / "text.safetensors").write_text("not a model")
    with pytest.raises(SparsetopoError, match="not a safetensors file"):
        sparsetopo.load(tmp_path / "text.safetensors")
    with pytest.raises(SparsetopoError, match="no such file"):
        sparsetopo.load(tmp_path / "missing.safetensors")


def test_loading_into_another_architecture_is_refused(tmp_path):
    path = sparsetopo.save(sparsify(seeded(0, Custom), "random_edge", k=2), tmp_path / "m.safetensors")
    other = nn.Sequential(nn.Linear(12, 20))
    with pytest.raises(SparsetopoError, match="sparse layer 'a', but the model has no module of that name"):
        sparsetopo.load(path, model=other)
    wrong = Custom()
    wrong.a = nn.Linear(12, 21)
    with pytest.raises(SparsetopoError, match="layer 'a' is 12->21 in the model but 12->20 in the file"):
        sparsetopo.load(path, model=wrong)


def test_missing_optional_package_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(SparsetopoError, match=r"needs the 'safetensors' package: pip install 'sparsetopo\[io\]'"):
        sparsetopo.save(nn.Linear(2, 2), tmp_path / "x.safetensors")


@pytest.mark.parametrize("backend", ["sparse", "masked"])
def test_onnx_export_matches_in_onnxruntime(tmp_path, backend):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = trained_a_little(sparsify(seeded(0, cnn), "fibonacci_rotating", density=0.1, backend=backend,
                                      include=["features.3", "classifier"]), images())
    path = sparsetopo.export_onnx(model, tmp_path / "cnn.onnx", input_shape=(1, 1, 28, 28))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = images(7, seed=5)                                   # another batch size: the batch is dynamic
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())
    assert isinstance(model.classifier[0], SparseLinear)   # the model itself is untouched


def test_cli_export(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    model = sparsify(seeded(0, cnn), "random_regular", density=0.25, include=["classifier"])
    saved = sparsetopo.save(model, tmp_path / "cnn.safetensors", input_shape=(1, 1, 28, 28))
    assert main(["export", str(saved), "--onnx", str(tmp_path / "cnn.onnx")]) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "max |difference|" in out and (tmp_path / "cnn.onnx").is_file()
    difference = float(out.rsplit(" ", 1)[1])
    assert difference < 1e-5
    no_shape = sparsetopo.save(model, tmp_path / "noshape.safetensors")
    assert main(["export", str(no_shape), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "give --input-shape" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nothing.safetensors"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_load_onto_cuda(tmp_path):
    model = sparsify(seeded(0, cnn), "random_regular", density=0.25, include=["classifier"], backend="sparse")
    path = sparsetopo.save(model, tmp_path / "cnn.safetensors")
    loaded = sparsetopo.load(path, device="cuda").eval()
    assert {row["backend"] for row in loaded.sparsetopo_summary} == {"masked"}
    x = images()
    with torch.no_grad():
        assert float((loaded(x.cuda()).cpu() - model.eval()(x)).abs().max()) < 1e-5
