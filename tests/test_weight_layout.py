"""Sparse layers hold torch's weight layout, (out, in), so checkpoints move to and from dense twins."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sparsetopo import SparsetopoError
from sparsetopo.nn import BlockSparseLinear, SparseConv2d, SparseLinear, sparsify
from sparsetopo.topology import build


SQUARE, MIXED = (16, 16, 16, 16), (12, 16, 16, 5)   # square layers: a transposed load would fit silently


def dense_net(seed: int, sizes=MIXED) -> nn.Sequential:
    gen = torch.Generator().manual_seed(seed)
    a, b, c, d = sizes
    net = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    return net


def example(width: int = 12) -> torch.Tensor:
    return torch.randn(7, width, generator=torch.Generator().manual_seed(99))


def test_masked_weight_and_mask_have_nn_linear_shape_and_meaning():
    t = build("random_edge", 12, 7, 3, seed=2)
    layer = SparseLinear(t, gen=np.random.default_rng(0), backend="masked")
    assert layer.weight.shape == layer.mask.shape == (7, 12)
    assert torch.equal(layer.mask.bool(), torch.from_numpy(t.mask().T))    # connection (i, j) at [j, i]
    x = example()
    assert torch.allclose(layer(x), F.linear(x, layer.weight * layer.mask, layer.bias), atol=1e-6)


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_edge_index_is_out_in_on_every_layer(backend):
    t = build("random_edge", 12, 7, 3, seed=2)
    blocked = build("random_edge", 12, 7, 2, seed=2, block=4)
    layers = [(t, SparseLinear(t, gen=np.random.default_rng(0), backend=backend)),
              (t, SparseConv2d(t, 3, gen=np.random.default_rng(0))),
              (blocked, BlockSparseLinear(blocked, gen=np.random.default_rng(0)))]
    for topology, layer in layers:
        outputs, inputs = layer.edge_index()
        assert np.array_equal(outputs.numpy(), topology.indices) and np.array_equal(inputs.numpy(), topology.rows)
        assert torch.equal(layer.dense_weight()[outputs, inputs], layer.connected_weights())
        assert layer.dense_weight().shape[:2] == (7, 12)


@pytest.mark.parametrize("sizes", [SQUARE, MIXED])
@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_dense_checkpoint_loads_masked_and_matches_keep_weights(backend, sizes):
    dense = dense_net(1, sizes)
    kept = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=4, backend=backend)
    fresh = sparsify(dense_net(2, sizes), "random_regular", density=0.25, seed=4, backend=backend,
                     keep_weights=False)
    fresh.load_state_dict(dense.state_dict())
    x = example(sizes[0])
    with torch.no_grad():
        assert torch.equal(fresh(x), kept(x))
        assert not torch.allclose(fresh(x), dense(x), atol=1e-3)          # the pruned entries did go
    for i in (0, 2, 4):
        assert torch.equal(fresh[i].dense_weight(), kept[i].dense_weight())
        if backend == "masked":                                            # pruned entries exactly 0
            assert float(fresh[i].weight.detach()[fresh[i].mask == 0].abs().max()) == 0.0


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_sparsified_state_dict_loads_into_the_dense_twin_and_back(backend):
    sparse = sparsify(dense_net(1), "random_regular", density=0.25, seed=4, backend=backend)
    assert sparse.state_dict().keys() == dense_net(0).state_dict().keys()   # nn.Linear's keys, both backends
    twin = dense_net(2)
    twin.load_state_dict(sparse.state_dict())
    x = example()
    with torch.no_grad():
        assert torch.allclose(twin(x), sparse(x), atol=1e-5)
    again = sparsify(dense_net(3), "random_regular", density=0.25, seed=4, backend=backend, keep_weights=False)
    again.load_state_dict(twin.state_dict())
    for a, b in zip(again.state_dict().values(), sparse.state_dict().values()):
        assert torch.equal(a, b)


def test_sparse_backend_reads_its_values_vector_and_names_a_wrong_weight_shape():
    t = build("random_edge", 12, 7, 3, seed=2)
    layer = SparseLinear(t, gen=np.random.default_rng(0), backend="sparse")
    values = torch.arange(t.nnz, dtype=torch.float32)
    layer.load_state_dict({"values": values, "bias": torch.ones(7)})          # a state_dict of older sparsetopo
    assert torch.equal(layer.values.detach(), values)
    with pytest.raises(RuntimeError, match=r"size mismatch for weight.*\(12, 7\).*\(7, 12\)"):
        layer.load_state_dict({"weight": torch.zeros(12, 7), "bias": torch.ones(7)})
    assert torch.equal(layer.values.detach(), values)                         # nothing half-loaded


def test_dense_conv_checkpoint_loads_with_pruned_kernels_zero():
    conv = nn.Conv2d(4, 6, 3)
    layer = SparseConv2d(build("random_edge", 4, 6, 2, seed=1), 3, gen=np.random.default_rng(0))
    layer.load_state_dict(conv.state_dict())
    pruned = layer.mask.expand_as(layer.weight) == 0
    assert float(layer.weight.detach()[pruned].abs().max()) == 0.0
    assert torch.equal(layer.weight.detach()[~pruned], conv.weight.detach()[~pruned])


@pytest.mark.parametrize("bias", [True, False])
def test_meta_model_sparsified_then_materialised_and_loaded(bias):
    dense = dense_net(1)
    if not bias:   # a layer without bias computes with a derived zero bias, which must be rebuilt too
        dense[2] = nn.Linear(16, 16, bias=False)
        with torch.no_grad():
            dense[2].weight.copy_(torch.randn(16, 16, generator=torch.Generator().manual_seed(5)))
    kept = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=4, backend="masked")
    meta = sparsify(copy.deepcopy(dense).to("meta"), "random_regular", density=0.25, seed=4)
    assert meta[2].mask.is_meta and meta[2].backend == "masked"
    meta.to_empty(device="cpu")            # uninitialised storage: the masks must not be read from it
    for i in (0, 2, 4):
        assert torch.equal(meta[i].mask, kept[i].mask)
    meta.load_state_dict(dense.state_dict())
    x = example()
    with torch.no_grad():
        assert torch.equal(meta(x), kept(x))


def test_meta_convolution_sparsified_then_materialised_and_loaded():
    gen = torch.Generator().manual_seed(3)
    dense = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with torch.no_grad():
        for p in dense.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))
    kept = sparsify(copy.deepcopy(dense), "random_regular", density=0.25, seed=4)
    meta = sparsify(copy.deepcopy(dense).to("meta"), "random_regular", density=0.25, seed=4)
    meta.to_empty(device="cpu")
    meta.load_state_dict(dense.state_dict())
    x = torch.randn(2, 3, 6, 6, generator=gen)
    with torch.no_grad():
        assert torch.equal(meta(x), kept(x))


def test_the_sparse_backend_on_the_meta_device_is_refused_at_sparsify():
    with pytest.raises(SparsetopoError, match="backend='sparse' computes on CPU.*meta.*use backend='masked'"):
        sparsify(dense_net(1).to("meta"), "random_regular", density=0.25, backend="sparse")
