"""Sparse 1-d, 2-d and 3-d convolutions, grouped and on channel blocks, against an independent
masked-dense reference (``F.convNd`` with the weight times a mask built from the topology's
edge list), on both backends; optimizer steps, state_dict and file round trips; sparsify's
summary of convolutional models."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.nn import SparseConv1d, SparseConv2d, SparseConv3d, sparsify, summary
from sparsetopo.nn.conv import conv_backend

LAYERS = {1: SparseConv1d, 2: SparseConv2d, 3: SparseConv3d}


def reference_mask(layer) -> torch.Tensor:
    """The ``(out, in/groups, 1, ...)`` 0/1 mask of ``layer`` from its topology's edge list,
    repeated for every group (not from the layer's own buffers or indices)."""
    t = layer.topology
    mask = torch.zeros(layer.out_channels, t.n_in)
    for g in range(layer.groups):
        for i, j in zip(t.rows.tolist(), t.indices.tolist()):
            mask[g * t.n_out + j, i] = 1.0
    return mask.reshape(*mask.shape, *(1,) * layer.dims)


def reference_forward(layer, x, weight, bias):
    pad = layer.padding
    if layer.padding_mode != "zeros":
        amounts = []
        for i in reversed(range(layer.dims)):
            total = layer.dilation[i] * (layer.kernel_size[i] - 1) if pad == "same" else 2 * pad[i]
            amounts += [total // 2, total - total // 2]
        x, pad = F.pad(x, amounts, mode=layer.padding_mode), 0
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[layer.dims]
    return conv(x, weight * reference_mask(layer), bias, layer.stride, pad, layer.dilation, layer.groups)


def rel_err(a, ref) -> float:
    a, ref = a.detach(), ref.detach()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


# (dims, construction, n_in, n_out (per group), k, block, groups, kernel, stride, padding, dilation, padding_mode)
CASES = {
    "1d strided dilated": (1, "random_regular", 6, 10, 3, 1, 1, 5, 2, 1, 2, "zeros"),
    "2d uneven kernel": (2, "fibonacci_rotating", 6, 10, 3, 1, 1, (3, 2), (2, 1), (1, 2), 1, "zeros"),
    "3d": (3, "random_regular", 4, 6, 2, 1, 1, 3, 1, 1, (1, 2, 1), "zeros"),
    "2d grouped": (2, "regular_rotating", 3, 4, 2, 1, 3, 3, 1, 1, 1, "zeros"),
    "1d grouped reflect": (1, "random_regular", 4, 6, 2, 1, 2, 3, 1, "same", 1, "reflect"),
    "2d blocks of 16": (2, "random_regular", 32, 48, 1, 16, 1, 3, 1, 1, 1, "zeros"),
    "2d blocks, uneven channels": (2, "random_rotating", 20, 36, 2, (8, 16), 1, 3, 2, 1, 1, "zeros"),
    "1d blocks, grouped": (1, "regular_rotating", 16, 32, 2, 8, 2, 3, 1, 1, 1, "zeros"),
    "3d blocks, circular": (3, "random_regular", 12, 8, 1, 4, 1, 3, 1, "same", 1, "circular"),
}


def make(case, backend, seed=0):
    dims, construction, n_in, n_out, k, block, groups, kernel, stride, padding, dilation, mode = CASES[case]
    t = build(construction, n_in, n_out, k, seed=seed, block=block)
    layer = LAYERS[dims](t, kernel, stride, padding, dilation, groups, padding_mode=mode,
                         gen=np.random.default_rng(seed), backend=backend)
    with torch.no_grad():
        layer.bias.copy_(torch.linspace(-1, 1, layer.out_channels))
    return layer


def sample_input(layer, batch=3, side=9, seed=1):
    return torch.randn(batch, layer.in_channels, *(side,) * layer.dims, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("backend", ["masked", "grouped"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_gradients_equal_the_masked_dense_reference(case, backend):
    layer = make(case, backend)
    assert layer.backend == backend
    x = sample_input(layer)
    xs, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    ys, yr = layer(xs), reference_forward(layer, xr, w, b)
    assert ys.shape == yr.shape
    g = torch.randn(ys.shape, generator=torch.Generator().manual_seed(2))
    ys.backward(g)
    yr.backward(g)
    assert rel_err(ys, yr) < 1e-5
    assert rel_err(xs.grad, xr.grad) < 1e-5
    assert rel_err(layer.bias.grad, b.grad) < 1e-5
    connected = reference_mask(layer).expand_as(layer.weight) == 1
    assert rel_err(layer.weight.grad[connected], w.grad[connected]) < 1e-5
    assert float(layer.weight.grad[~connected].abs().max()) == 0.0   # pruned kernels never move
    with torch.no_grad():                                             # one sample without a batch dimension
        assert rel_err(layer(x[0]), yr[0]) < 1e-5


def test_the_reference_can_tell_a_wrong_mask():
    """The comparison above fails when the mask is not the topology's: a pruned kernel made
    non-zero behind the layer's back changes the output."""
    layer = make("2d grouped", "masked")
    x = sample_input(layer)
    with torch.no_grad():
        layer.weight.add_(1.0)   # direct writes bypass the rule (module docstring)
        assert rel_err(layer(x), reference_forward(layer, x, layer.weight, layer.bias)) > 1e-3


@pytest.mark.parametrize("backend", ["masked", "grouped"])
@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-2),
    lambda p: torch.optim.AdamW(p, lr=0.01),
])
def test_pruned_kernels_stay_exactly_zero_after_optimizer_steps(optimizer, backend):
    layer = make("2d blocks, uneven channels", backend)
    pruned = reference_mask(layer).expand_as(layer.weight) == 0
    before = layer.weight.detach().clone()
    opt = optimizer(layer.parameters())
    for step in range(3):
        opt.zero_grad()
        layer(sample_input(layer, seed=step)).square().mean().backward()
        opt.step()
    assert float(layer.weight.detach()[pruned].abs().max()) == 0.0
    assert float((layer.weight.detach() - before)[~pruned].abs().min()) > 0.0   # every connected kernel moved


@pytest.mark.parametrize("case", ["1d grouped reflect", "2d blocks, uneven channels", "3d"])
def test_state_dict_round_trips_with_the_dense_twin(case):
    layer = make(case, "auto")
    x = sample_input(layer)
    twin = layer.to_dense()
    assert type(twin) is getattr(nn, f"Conv{layer.dims}d") and twin.groups == layer.groups
    fresh = copy.deepcopy(twin)
    assert set(layer.state_dict()) == set(fresh.state_dict())
    fresh.load_state_dict(layer.state_dict())          # sparse -> dense: same keys, same shapes
    with torch.no_grad():
        assert rel_err(fresh(x), layer(x)) < 1e-6
        dense = copy.deepcopy(twin)
        dense.weight.normal_(generator=torch.Generator().manual_seed(3))   # every kernel non-zero
        other = make(case, "auto", seed=0)
        other.load_state_dict(dense.state_dict())       # dense -> sparse: masked on load
        assert rel_err(other(x), reference_forward(other, x, dense.weight, dense.bias)) < 1e-5
        assert float(other.weight[reference_mask(other).expand_as(other.weight) == 0].abs().max()) == 0.0


def conv1d_stack(groups: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(8, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 64, 3, groups=groups),
                         nn.ReLU(), nn.Conv1d(64, 64, 3), nn.ReLU(), nn.Conv1d(64, 64, 3, groups=64))


def test_save_and_load_rebuild_every_kind_of_convolution(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    model = sparsify(conv1d_stack(), "random_regular", density=0.25, block=8)
    x = torch.randn(2, 8, 20)
    path = sparsetopo.save(model, tmp_path / "conv1d.safetensors")
    loaded = sparsetopo.load(path)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert [type(m).__name__ for m in loaded] == [type(m).__name__ for m in model]
    assert loaded[2].groups == 2 and loaded[2].backend == "grouped" and model[2].backend == "grouped"
    again = sparsetopo.load(path, model=conv1d_stack())
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    with pytest.raises(SparsetopoError, match="groups=1 in the model but groups=2 in the file"):
        sparsetopo.load(path, model=conv1d_stack(groups=1))


class Conv1dNet(nn.Module):
    """A 1-d CNN classifier, the issue's "Conv1d net": two convolutions and a linear head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(12, 64, 7, padding=3)
        self.conv2 = nn.Conv1d(64, 128, 5, padding=2)
        self.head = nn.Linear(128, 10)

    def forward(self, x):
        return self.head(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=2))


def test_a_conv1d_net_is_sparse_in_every_layer_and_the_summary_counts_it():
    torch.manual_seed(0)
    dense = Conv1dNet()
    model = sparsify(copy.deepcopy(dense), "random_regular", density=0.25)
    report = summary(model)
    assert report.weights == sum(p.numel() for p in dense.parameters() if p.dim() >= 2)
    assert report.sparse_share >= 0.95 and [layer.sparse for layer in report.layers] == [True, True, True]
    rows = {row["name"]: row for row in model.sparsetopo_summary}
    assert rows["conv2"]["kind"] == "conv1d" and rows["conv2"]["dense_connections"] == 64 * 128 * 5
    assert rows["conv2"]["connections"] == int((model.conv2.dense_weight() != 0).sum())
    x = torch.randn(4, 12, 30)
    with torch.no_grad():
        assert rel_err(model.conv1(x), reference_forward(model.conv1, x, dense.conv1.weight, dense.conv1.bias)) < 1e-5


def test_depthwise_convolutions_stay_dense_with_their_reason_and_grouped_ones_are_sparsified():
    torch.manual_seed(0)
    block = nn.Sequential(nn.Conv2d(16, 32, 1), nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.ReLU(),
                          nn.Conv2d(32, 64, 3, padding=1, groups=4), nn.Conv2d(64, 16, 1))
    model = sparsify(copy.deepcopy(block), "random_regular", density=0.25, strict=True)
    rows = {row.name: row for row in summary(model).layers}
    assert not rows["1"].sparse and rows["1"].reason.startswith("depthwise (groups=32")
    assert [rows[n].sparse for n in ("0", "3", "4")] == [True, True, True]
    report = summary(model)
    assert report.weights == sum(p.numel() for p in block.parameters() if p.dim() >= 2)   # groups counted once each
    assert report.sparse_share == pytest.approx(1 - block[1].weight.numel() / report.weights)
    grouped = model[3]
    assert grouped.groups == 4 and (grouped.topology.n_in, grouped.topology.n_out) == (8, 16)
    row = next(r for r in model.sparsetopo_summary if r["name"] == "3")
    assert row["dense_connections"] == block[3].weight.numel() and row["density"] == 0.25
    assert row["connections"] == int((grouped.dense_weight().abs().sum(dim=(2, 3)) > 0).sum()) * 9
    assert grouped.weight.shape == block[3].weight.shape
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert model(x).shape == block(x).shape


def test_auto_runs_channel_blocks_grouped_and_everything_else_masked():
    model = sparsify(nn.Sequential(nn.Conv2d(3, 64, 3), nn.Conv2d(64, 64, 3), nn.Conv2d(64, 128, 3)),
                     "random_regular", density=0.25, block=16)
    assert [m.backend for m in model] == ["masked", "grouped", "grouped"]   # 3 channels: blocks of 3 x 16
    assert [m.topology.density for m in model[1:]] == [0.25, 0.25]
    plain = sparsify(nn.Sequential(nn.Conv2d(64, 64, 3)), "random_regular", density=0.25)
    assert plain[0].backend == "masked"
    assert sparsify(nn.Sequential(nn.Conv2d(64, 64, 3)), "random_regular", density=0.25, block=16,
                    ).sparsetopo_summary[0]["block"] == [16, 16]


@pytest.mark.parametrize("block,density,backend", [
    (16, 0.5, "grouped"), (32, 0.25, "grouped"), (8, 0.25, "grouped"), (8, 0.5, "masked"), (16, 0.75, "masked"),
    (4, 0.25, "masked"), (1, 0.25, "masked")])
def test_auto_follows_the_measured_rule(block, density, backend):
    t = build("random_regular", 128, 128, round(density * 128 / block), block=block)
    assert t.density == density
    assert conv_backend(t) == backend and conv_backend(t, "masked") == "masked"
