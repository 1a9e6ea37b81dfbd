"""sparsify leaves nothing dense silently: the summary of every weight layer, its reasons, the
share of weights made sparse (against a count taken from the dense model), and the warning."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError
from sparsetopo.nn import CoverageWarning, SparseLinear, sparsify, summary


class Recurrent(nn.Module):
    """An LSTM classifier: an embedding whose max_norm a mask cannot follow, the recurrent gates
    and a 3-class head that 10% cannot reach."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(400, 16, max_norm=1.0)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.fc = nn.Linear(32, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        out, _ = self.lstm(self.embed(x))
        return self.head(torch.relu(self.fc(out[:, -1])))


def matrix_weights(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.dim() >= 2)


def test_every_weight_layer_is_listed_with_its_reason_and_the_share_matches_the_dense_count():
    torch.manual_seed(0)
    dense = Recurrent()
    with pytest.warns(CoverageWarning) as record:
        model = sparsify(copy.deepcopy(dense), "random_regular", density=0.1)
    assert len(record) == 1 and "'embed', 'head'" in str(record[0].message)
    report = sparsetopo.summary(model)
    assert [(layer.name, layer.sparse) for layer in report.layers] == [
        ("embed", False), ("lstm", True), ("fc", True), ("head", False)]
    reasons = {layer.name: layer.reason for layer in report.layers}
    assert reasons["embed"] == "max_norm=1.0 renormalises the stored table in place, which a mask cannot follow"
    assert reasons["lstm"] == "random_regular, density 0.0938, gates share a topology, backend masked"  # k = 3 of 32
    assert reasons["head"] == "too small: density=0.1 gives k = 0 for 3 outputs"
    assert isinstance(model.fc, SparseLinear) and type(model.head) is nn.Linear
    assert report.weights == matrix_weights(dense)
    sparse = dense.fc.weight.numel() + dense.lstm.weight_ih_l0.numel() + dense.lstm.weight_hh_l0.numel()
    assert report.sparse_share == pytest.approx(sparse / matrix_weights(dense))
    text = str(report)
    assert all(name in text for name in ("lstm", "fc", "head")) and f"{report.sparse_share:.1%}" in text
    assert model(torch.randint(0, 400, (2, 5))).shape == (2, 3)  # the dense head still runs


def test_strict_raises_at_the_first_layer_that_would_stay_dense():
    with pytest.raises(SparsetopoError, match=r"density=0.1 gives k = round\(0.1 \* 3\) = 0 for layer 'head'"):
        sparsify(Recurrent(), "random_regular", density=0.1, strict=True, exclude=["embed"])
    with pytest.raises(SparsetopoError, match=r"embedding 'embed': max_norm=1.0 .* exclude=\['embed'\]"):
        sparsify(Recurrent(), "random_regular", density=0.1, strict=True)


def test_no_warning_when_the_user_chose_what_stays_dense():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        model = sparsify(model, "random_regular", density=0.25, exclude=["0", "2"])
    dense = summary(model).dense
    assert [(layer.name, layer.chosen) for layer in dense] == [("0", True), ("2", True)]
    assert dense[0].reason == "excluded ('0')"
    included = sparsify(nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)), "random_regular", density=0.5, include=["1"])
    assert [(layer.name, layer.reason) for layer in summary(included).dense] == [("0", "not in include")]


def test_attention_and_transformer_layers_are_sparse_with_out_proj_counted_in_its_attention():
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", CoverageWarning)
        model = sparsify(layer, "random_regular", density=0.25)
    report = summary(model)
    assert [(row.name, row.sparse, row.weights) for row in report.layers] == [
        ("self_attn", True, 4 * 16 * 16), ("linear1", True, 16 * 32), ("linear2", True, 32 * 16)]
    assert report.sparse_share == 1.0
    assert report.weights == matrix_weights(nn.TransformerEncoderLayer(16, 2, dim_feedforward=32))
    excluded = summary(sparsify(nn.TransformerEncoderLayer(16, 2, dim_feedforward=32), "random_regular",
                                density=0.25, exclude=["self_attn"]))
    assert [(row.name, row.reason, row.chosen) for row in excluded.dense] == [
        ("self_attn", "excluded ('self_attn')", True), ("self_attn.out_proj", "excluded ('self_attn')", True)]


def test_a_model_never_sparsified_reports_every_layer_dense():
    report = summary(nn.Sequential(nn.Linear(4, 4), nn.Conv1d(2, 2, 3), nn.Embedding(5, 2), nn.Bilinear(2, 2, 2)))
    assert report.sparse_share == 0.0
    assert [(layer.reason, layer.chosen) for layer in report.layers] == [
        ("not sparsified", True), ("not sparsified", True), ("not sparsified", True),
        ("Bilinear is not a type sparsify replaces (Linear, Conv1d, Conv2d, Conv3d, LSTM, GRU, RNN, "
         "MultiheadAttention, Embedding)", False)]
