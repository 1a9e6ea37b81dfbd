"""Sparse recurrent layers: nn.LSTM, nn.GRU and nn.RNN masked in place by sparsify.

The reference is built without the layer's own masks: each topology is rebuilt from the seed
recipe (``derive_seed(seed, "topology", name)``) and a plain torch layer gets its weights
multiplied by the dense 0/1 adjacency of those topologies.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError
from sparsetopo.nn import sparsify, summary
from sparsetopo.nn.recurrent import GATES, SparseGRU, SparseLSTM, SparseRNN
from sparsetopo.seeding import derive_seed
from sparsetopo.topology import build

CASES = [(nn.LSTM, {}, "shared"), (nn.LSTM, {}, "per_gate"), (nn.LSTM, {"proj_size": 5}, "shared"),
         (nn.GRU, {}, "shared"), (nn.GRU, {}, "per_gate"), (nn.RNN, {"nonlinearity": "relu"}, "shared")]


def recurrent(kind, extra, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    return kind(6, 8, num_layers=2, bidirectional=True, batch_first=True, **extra)


def reference_masks(module: nn.Module, name: str, gates: str, density: float, seed: int) -> dict:
    """The dense 0/1 matrix of every weight, from topologies rebuilt by the seed recipe."""
    masks = {}
    for pname, weight in module.named_parameters():
        if not pname.startswith("weight_"):
            continue
        gate_names = GATES[module.mode] if pname.startswith(("weight_ih", "weight_hh")) else ("",)
        n_out, n_in = weight.shape[0] // len(gate_names), weight.shape[1]
        k = int(density * n_out + 0.5)
        names = [f"{name}.{pname}"] * len(gate_names) if gates == "shared" or len(gate_names) == 1 else \
            [f"{name}.{pname}.{gate}" for gate in gate_names]
        masks[pname] = torch.cat([torch.from_numpy(build("random_regular", n_in, n_out, k, seed=derive_seed(
            seed, "topology", n)).mask().T.astype("float32")) for n in names])
    return masks


def masked_reference(dense: nn.Module, masks: dict) -> nn.Module:
    reference = copy.deepcopy(dense)
    with torch.no_grad():
        for pname, mask in masks.items():
            getattr(reference, pname).mul_(mask)
    return reference


class Classifier(nn.Module):
    def __init__(self, kind=nn.LSTM):
        super().__init__()
        self.rnn = kind(16, 64, num_layers=2, batch_first=True)
        self.fc = nn.Linear(64, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(torch.relu(self.fc(out[:, -1])))


@pytest.mark.parametrize("kind,extra,gates", CASES)
def test_outputs_and_gradients_equal_the_masked_dense_reference(kind, extra, gates):
    dense = recurrent(kind, extra)
    model = sparsify(nn.Sequential(copy.deepcopy(dense)), "random_regular", density=0.5, seed=3, gates=gates)
    layer = model[0]
    assert type(layer) is {nn.LSTM: SparseLSTM, nn.GRU: SparseGRU, nn.RNN: SparseRNN}[kind]
    masks = reference_masks(dense, "0", gates, 0.5, 3)
    assert set(masks) == set(layer.topologies)   # every layer, direction and (projection) matrix
    reference = masked_reference(dense, masks)
    x = torch.randn(3, 7, 6, generator=torch.Generator().manual_seed(1), requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, state = layer(x)
    ref_out, ref_state = reference(x_ref)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=1e-5)
    for got, want in zip(state if isinstance(state, tuple) else (state,),
                         ref_state if isinstance(ref_state, tuple) else (ref_state,)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    (out.pow(2).sum() + sum(s.sum() for s in (state if isinstance(state, tuple) else (state,)))).backward()
    (ref_out.pow(2).sum() + sum(s.sum() for s in (ref_state if isinstance(ref_state, tuple) else (ref_state,)))).backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-6, rtol=1e-5)
    for pname, mask in masks.items():
        grad = getattr(layer, pname).grad
        assert float(grad[mask == 0].abs().max()) == 0.0, pname      # pruned entries get no gradient
        torch.testing.assert_close(grad, getattr(reference, pname).grad * mask, atol=1e-6, rtol=1e-5)
        assert 0 < float(mask.mean()) < 1


@pytest.mark.parametrize("gates", ["shared", "per_gate"])
def test_gate_rule_shares_or_separates_the_topologies_of_the_gates(gates):
    layer = sparsify(nn.LSTM(10, 12), "random_regular", density=0.25, gates=gates)
    blocks = layer.topologies["weight_ih_l0"]
    assert len(blocks) == 4
    fingerprints = {t.fingerprint for t in blocks}
    assert len(fingerprints) == (1 if gates == "shared" else 4)
    assert layer.topologies["weight_ih_l0"][0].fingerprint != layer.topologies["weight_hh_l0"][0].fingerprint
    with pytest.raises(SparsetopoError, match="unknown gates='gate'.*shared, per_gate"):
        sparsify(nn.LSTM(10, 12), "random_regular", density=0.25, gates="gate")


@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-3),
    lambda p: torch.optim.AdamW(p, lr=0.01)])
def test_pruned_entries_stay_exactly_zero_through_training(optimizer):
    model = sparsify(Classifier(nn.GRU), "random_regular", density=0.25, seed=1)
    before = {p: w.detach().clone() for p, w in model.rnn.named_parameters()}
    opt = optimizer(model.parameters())
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x, y = torch.randn(8, 5, 16, generator=gen), torch.randint(0, 4, (8,), generator=gen)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for pname in model.rnn.topologies:
        weight, mask = getattr(model.rnn, pname).detach(), getattr(model.rnn, f"{pname}_mask")
        assert float(weight[mask == 0].abs().max()) == 0.0, pname
        assert not torch.equal(weight[mask == 1], before[pname][mask == 1]), pname   # it did train


def test_a_recurrent_classifier_is_at_least_95_percent_sparse():
    dense = Classifier()
    model = sparsify(copy.deepcopy(dense), "random_regular", density=0.25)
    report = sparsetopo.summary(model)
    matrices = sum(p.numel() for p in dense.parameters() if p.dim() >= 2)
    assert report.weights == matrices
    assert [(row.name, row.kind, row.sparse) for row in report.layers] == [
        ("rnn", "SparseLSTM", True), ("fc", "SparseLinear", True), ("head", "SparseLinear", True)]
    assert report.sparse_share == 1.0
    assert report.layers[0].weights == sum(p.numel() for n, p in dense.rnn.named_parameters() if n.startswith("weight"))
    assert report.layers[0].reason == "random_regular, density 0.25, gates share a topology, backend masked"
    row = model.sparsetopo_summary[0]
    assert row["kind"] == "lstm" and row["connections"] == int(0.25 * report.layers[0].weights)
    assert (row["density"], row["gates"], row["k"]) == (0.25, "shared", [16])


def test_a_recurrent_layer_too_small_for_the_density_stays_dense_and_is_reported():
    with pytest.raises(SparsetopoError, match=r"gives k = round\(0.05 \* 8\) = 0 for layer 'rnn.weight_ih_l0'"):
        sparsify(_small(), "random_regular", density=0.05, strict=True)
    model = sparsify(_small(), "random_regular", density=0.05, exclude=["out"])
    reasons = {row.name: row.reason for row in summary(model).dense}
    assert reasons["rnn"] == "too small: density=0.05 gives k = 0 for 8 outputs" and type(model.rnn) is nn.RNN


def _small() -> nn.Module:
    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.big = nn.Linear(64, 64)
            self.rnn = nn.RNN(64, 8)
            self.out = nn.Linear(8, 2)
    return Small()


def test_dense_state_dict_loads_masked_and_the_sparse_one_loads_into_the_dense_twin():
    dense = recurrent(nn.LSTM, {}, seed=2)
    kept = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=5)
    fresh = sparsify(recurrent(nn.LSTM, {}, seed=9), "random_regular", density=0.25, seed=5, keep_weights=False)
    assert list(fresh.state_dict()) == list(dense.state_dict())       # torch's keys and shapes
    fresh.load_state_dict(dense.state_dict())                          # masked on load
    for key, value in kept.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    twin = recurrent(nn.LSTM, {}, seed=7)
    twin.load_state_dict(kept.state_dict())                            # and the reverse, strict
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(twin(x)[0], kept(x)[0], atol=0, rtol=0)
        torch.testing.assert_close(kept.to_dense()(x)[0], kept(x)[0], atol=0, rtol=0)
    assert type(kept.to_dense()) is nn.LSTM


def test_fresh_weights_follow_the_seed_and_leave_biases_zero():
    one = sparsify(nn.GRU(6, 8), "random_regular", density=0.5, seed=4, keep_weights=False)
    two = sparsify(nn.GRU(6, 8), "random_regular", density=0.5, seed=4, keep_weights=False)
    for key, value in one.state_dict().items():
        assert torch.equal(value, two.state_dict()[key]), key
    assert float(one.bias_ih_l0.detach().abs().max()) == 0.0
    mask = one.weight_ih_l0_mask == 1
    assert float(one.weight_ih_l0.detach()[~mask].abs().max()) == 0.0
    assert bool((one.weight_ih_l0.detach()[mask] != 0).all())


def test_meta_model_sparsified_then_materialised_and_loaded():
    dense = Classifier(nn.GRU)
    kept = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=4, backend="masked")
    meta = sparsify(copy.deepcopy(dense).to("meta"), "random_regular", density=0.25, seed=4)
    assert meta.rnn.weight_ih_l0_mask.is_meta
    meta.to_empty(device="cpu")          # uninitialised storage: the masks are rebuilt from the topologies
    for pname in kept.rnn.topologies:
        assert torch.equal(getattr(meta.rnn, f"{pname}_mask"), getattr(kept.rnn, f"{pname}_mask")), pname
    meta.load_state_dict(dense.state_dict())
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(meta(x), kept(x))


def test_save_and_load_round_trip_with_connected_values_only(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors import safe_open

    model = sparsify(Classifier(), "random_regular", density=0.25, seed=6, gates="per_gate")
    path = sparsetopo.save(model, tmp_path / "lstm.safetensors")
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
    assert "rnn.weight_ih_l0.values" in keys and "rnn.weight_ih_l0" not in keys and "rnn.bias_ih_l0" in keys
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(0))
    for target in (Classifier(), Classifier().to("meta")):
        loaded = sparsetopo.load(path, model=target)
        assert loaded.rnn.gates == "per_gate"
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
    other = sparsify(Classifier(), "random_regular", density=0.25, seed=6)   # shared gates: other masks
    with pytest.raises(SparsetopoError, match="layer 'rnn' of the model has other connections than the file's"):
        sparsetopo.load(path, model=other)
    with pytest.raises(SparsetopoError, match=r"layer 'rnn' is a GRU in the model but an nn.LSTM in the file"):
        sparsetopo.load(path, model=Classifier(nn.GRU))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["masked_layers"]["rnn"]["matrices"]["weight_ih_l0"][0].pop("fingerprint"),
     "masked layer 'rnn' has matrix 'weight_ih_l0': a topology without a valid 'fingerprint'"),
    (lambda m: m["masked_layers"]["rnn"].pop("gates"), "masked layer 'rnn' has"),
    (lambda m: m["masked_layers"]["rnn"]["matrices"]["weight_hh_l0"][1].update(version=99),
     "layer 'rnn.weight_hh_l0' was built by version 99 of random_regular"),
    (lambda m: m["masked_layers"]["rnn"]["matrices"]["weight_hh_l0"][1].update(seed=12345),
     "the masks rebuilt for 'weight_hh_l0' of layer 'rnn' differ from the saved ones")])
def test_a_damaged_masked_layer_recipe_is_one_clear_error(tmp_path, edit, message):
    st = pytest.importorskip("safetensors.torch")
    from safetensors import safe_open

    path = sparsetopo.save(sparsify(Classifier(), "random_regular", density=0.25), tmp_path / "lstm.safetensors")
    with safe_open(str(path), "pt") as f:
        meta, tensors = json.loads(f.metadata()["sparsetopo"]), {k: f.get_tensor(k) for k in f.keys()}
    edit(meta)
    st.save_file(tensors, str(path), metadata={"sparsetopo": json.dumps(meta)})
    with pytest.raises(SparsetopoError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sparsetopo.load(path, model=Classifier())


def test_onnx_export_of_a_sparse_lstm_classifier_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from sparsetopo.onnx import export_onnx, onnx_difference

    model = sparsify(Classifier(), "random_regular", density=0.25, seed=3)
    export_onnx(model, tmp_path / "lstm.onnx", input_shape=(1, 5, 16))
    x = torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(0))
    assert onnx_difference(model, tmp_path / "lstm.onnx", x) < 1e-4
