"""sparsify(..., block=b): block layers in any model, checked against masked-dense originals."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.nn import BlockSparseLinear, SparseConv2d, SparseLinear, sparsify
from sparsetopo.seeding import derive_seed, rng


def model(seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Flatten(), nn.Linear(8 * 4 * 4, 100), nn.Tanh(),
                             nn.Linear(100, 40))


def masked_reference(dense: nn.Linear, topology) -> torch.Tensor:
    """The dense layer's weight, (out, in) as nn.Linear's, times the topology's neuron-level mask
    (the topology's adjacency is (in, out), so it is transposed)."""
    return dense.weight.detach() * torch.from_numpy(topology.mask()).float().t()


def test_block_one_is_todays_sparsify_exactly():
    plain = sparsify(model(), "random_regular", density=0.3, seed=2)
    one = sparsify(model(), "random_regular", density=0.3, seed=2, block=1)
    assert plain.sparsetopo_summary == one.sparsetopo_summary
    assert all("block" not in row for row in one.sparsetopo_summary)
    assert str(sparsetopo.summary(plain)) == str(sparsetopo.summary(one))
    for a, b in zip(plain.state_dict().values(), one.state_dict().values()):
        assert torch.equal(a, b)


def test_linear_layers_become_block_layers_with_the_dense_weights_at_their_tiles():
    dense = model()
    sparse = sparsify(copy.deepcopy(dense), "regular_rotating", density=0.25, seed=1, block=16)
    for i, n_in, n_out in ((2, 128, 100), (4, 100, 40)):
        layer = sparse[i]
        assert isinstance(layer, BlockSparseLinear)
        t = layer.topology
        assert (t.block_in, t.block_out) == (16, 16) and (t.n_in, t.n_out) == (n_in, n_out)
        # density counts output blocks: k = round(0.25 * ceil(n_out / 16)), halves up
        assert t.k == math.floor(0.25 * math.ceil(n_out / 16) + 0.5)
        assert t.fingerprint == build("regular_rotating", n_in, n_out, t.k, seed=derive_seed(1, "topology", str(i)),
                                      block=16).fingerprint
        assert torch.equal(layer.dense_weight(), masked_reference(dense[i], t))
        assert torch.equal(layer.bias, dense[i].bias)
    x = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    reference = copy.deepcopy(dense)
    for i in (2, 4):
        reference[i].weight.data = masked_reference(dense[i], sparse[i].topology)
    reference[0] = sparse[0]   # the convolution, checked on its own below
    torch.testing.assert_close(sparse(x), reference(x), rtol=1e-5, atol=1e-5)


def test_summary_rows_name_the_block_size_and_the_exact_density():
    sparse = sparsify(model(), "regular_rotating", density=0.25, block=16, include=[nn.Linear])
    rows = {row["name"]: row for row in sparse.sparsetopo_summary}
    for name in ("2", "4"):
        t = sparse.get_submodule(name).topology
        assert rows[name]["block"] == [16, 16] and rows[name]["backend"] == "block"
        assert rows[name]["kind"] == "linear"
        assert rows[name]["density"] == t.nnz / (t.n_in * t.n_out)
        assert rows[name]["connections"] == t.nnz
    report = sparsetopo.summary(sparse)
    reasons = {layer.name: layer.reason for layer in report.layers}
    assert "blocks of 16x16" in reasons["2"] and f"density {sparse[2].topology.density:.3g}" in reasons["2"]
    assert report.sparse_share == pytest.approx((128 * 100 + 100 * 40) / (128 * 100 + 100 * 40 + 8 * 3 * 9))


def test_fresh_weights_come_from_the_layers_own_stream_and_frozen_layers_stay_frozen():
    dense = model()
    dense[2].weight.requires_grad_(False)
    dense[4].bias.requires_grad_(False)
    sparse = sparsify(dense, "random_edge", k=2, seed=4, block=(16, 8), keep_weights=False, include=[nn.Linear])
    expected = BlockSparseLinear(sparse[2].topology, gen=rng(4, "init", "2"))
    assert torch.equal(sparse[2].tiles, expected.tiles)
    assert not sparse[2].tiles.requires_grad and sparse[2].bias.requires_grad
    assert sparse[4].tiles.requires_grad and not sparse[4].bias.requires_grad
    assert sparse[4].topology.block == (16, 8)


def test_a_layer_narrower_than_its_block_is_one_block_on_that_side():
    sparse = sparsify(nn.Linear(64, 10), "fully_connected", density=1.0, block=32)
    assert sparse.topology.block == (32, 10) and sparse.topology.density == 1.0


def test_convolutions_take_channel_blocks_and_compute_masked():
    dense = model()
    sparse = sparsify(copy.deepcopy(dense), "regular_rotating", k=1, block=4, include=[nn.Conv2d])
    conv = sparse[0]
    assert isinstance(conv, SparseConv2d) and conv.topology.block == (3, 4)
    mask = torch.from_numpy(conv.topology.mask()).float().t()[:, :, None, None]   # (out, in, 1, 1)
    x = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = nn.functional.conv2d(x, dense[0].weight * mask, dense[0].bias, padding=1)
    torch.testing.assert_close(conv(x), expected, rtol=1e-5, atol=1e-6)


def test_block_layers_are_refused_too_small_and_bad_blocks_named():
    with pytest.raises(SparsetopoError, match=r"block=0 is out of range"):
        sparsify(model(), "regular_rotating", density=0.5, block=0)
    with pytest.raises(SparsetopoError, match=r"block=\(2, 3, 4\) must be one integer or a pair"):
        sparsify(model(), "regular_rotating", density=0.5, block=(2, 3, 4))
    with pytest.raises(SparsetopoError, match=r"backend='sparse'.*block=4.*leave backend='auto'"):
        sparsify(model(), "regular_rotating", density=0.5, block=4, backend="sparse")
    # 40 outputs in blocks of 16 are 3 blocks: 0.1 of 3 rounds to 0
    with pytest.raises(SparsetopoError, match=r"k = round\(0.1 \* 3\) = 0 .*3 output blocks of 16"):
        sparsify(model(), "regular_rotating", density=0.1, block=16, include=["4"], strict=True)
    with pytest.raises(SparsetopoError, match=r"k=4 is too large .*3 output blocks of 16.*1 <= k <= 3"):
        sparsify(model(), "regular_rotating", k=4, block=16, include=["4"], strict=True)


def test_a_trained_block_model_keeps_its_pruned_weights_at_zero():
    sparse = sparsify(model(), "random_regular", density=0.5, block=16, include=[nn.Linear])
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    for _ in range(3):
        opt.zero_grad()
        sparse(x).pow(2).mean().backward()
        opt.step()
    for i in (2, 4):
        off = torch.from_numpy(~sparse[i].topology.mask()).t()   # (out, in), as dense_weight
        assert torch.count_nonzero(sparse[i].dense_weight()[off]) == 0
        assert isinstance(sparse[i], BlockSparseLinear) and not isinstance(sparse[i], SparseLinear)
    assert np.isfinite(sparse[2].connected_weights().numpy()).all()


def test_draw_topology_renders_a_block_layer(tmp_path):
    pytest.importorskip("matplotlib")
    from sparsetopo.report.pictures import draw_topology

    path = tmp_path / "blocks.png"
    draw_topology(build("regular_rotating", 64, 40, 2, block=8), path)
    assert path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
