"""sparsify: the topologies in any PyTorch model, checked against the dense originals."""

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.nn import SparseConv2d, SparseLinear, initial_weights, sparsify
from sparsetopo.seeding import derive_seed, rng


def seeded(seed, make):
    """Build a dense torch model from ``seed`` without touching torch's global RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 30), nn.Tanh(), nn.Linear(30, 24))
        self.skip = nn.Linear(20, 24, bias=False)

    def forward(self, x):
        return self.body(x) + self.skip(x)


class Net(nn.Module):
    """Nested modules, a Conv2d, a Linear reached under two names and called twice."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.block = Block()
        self.shared = nn.Linear(24, 24)
        self.again = self.shared  # the same module under a second name
        self.head = nn.Linear(24, 5)

    def forward(self, image, x):
        h = self.block(x) + self.conv(image).mean(dim=(2, 3)).repeat(1, 3)
        return self.head(torch.tanh(self.again(torch.tanh(self.shared(h)))))


def inputs(seed=0, batch=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 6, 6, generator=gen), torch.randn(batch, 20, generator=gen)


def sparse_names(model):
    return sorted(name for name, m in model.named_modules(remove_duplicate=False)
                  if isinstance(m, (SparseLinear, SparseConv2d)))


def test_replaces_every_linear_and_conv_in_nested_modules_and_keeps_sharing():
    model = sparsify(seeded(0, Net), "random_regular", density=0.5, seed=3)
    assert sparse_names(model) == ["again", "block.body.0", "block.body.2", "block.skip", "conv", "head", "shared"]
    assert model.again is model.shared                     # one layer, replaced at both places
    assert isinstance(model.conv, SparseConv2d) and model.block.skip.bias is None
    assert [row["name"] for row in model.sparsetopo_summary] == ["conv", "block.body.0", "block.body.2",
                                                                 "block.skip", "shared", "head"]
    image, x = inputs()
    out = model(image, x)
    assert out.shape == (6, 5)
    out.sum().backward()                                   # the shared layer is called twice: both calls train it


def test_include_and_exclude_select_exactly_the_named_layers():
    model = sparsify(seeded(0, Net), "regular_rotating", k=2, include=["block"], exclude=["block.skip"])
    assert sparse_names(model) == ["block.body.0", "block.body.2"]
    assert type(model.block.skip) is nn.Linear and type(model.conv) is nn.Conv2d
    model = sparsify(seeded(0, Net), "regular_rotating", k=2, include=[nn.Conv2d, "head"])
    assert sparse_names(model) == ["conv", "head"]
    model = sparsify(seeded(0, Net), "regular_rotating", k=2, exclude=nn.Linear)
    assert sparse_names(model) == ["conv"]
    model = sparsify(seeded(0, Net), "regular_rotating", k=2, include="again")  # an alias selects the layer
    assert sparse_names(model) == ["again", "shared"]


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_density_one_keeps_the_function_of_the_original(backend):
    original = seeded(1, Net)
    image, x = inputs(1)
    with torch.no_grad():
        expected = original(image, x)
    model = sparsify(seeded(1, Net), "fibonacci_rotating", density=1.0, backend=backend)
    assert {row["backend"] for row in model.sparsetopo_summary if row["kind"] == "linear"} == {backend}
    with torch.no_grad():
        got = model(image, x)
    assert float((got - expected).abs().max()) < 1e-6


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_sequence_inputs_of_any_leading_shape(backend):
    dense = seeded(2, lambda: nn.Linear(12, 7))
    x = torch.randn(4, 5, 12, generator=torch.Generator().manual_seed(0))
    layer = sparsify(seeded(2, lambda: nn.Linear(12, 7)), "random_rotating", density=1.0, backend=backend)
    assert isinstance(layer, SparseLinear)                 # a model that is one layer is replaced
    with torch.no_grad():
        assert float((layer(x) - dense(x)).abs().max()) < 1e-6


def test_keep_weights_copies_the_connected_entries():
    dense = seeded(3, lambda: nn.Sequential(nn.Linear(16, 9), nn.Conv2d(4, 6, 3)))
    model = sparsify(seeded(3, lambda: nn.Sequential(nn.Linear(16, 9), nn.Conv2d(4, 6, 3))), "random_edge",
                     density=0.4, seed=5, backend="sparse")
    rows, cols = (torch.from_numpy(a.astype(np.int64)) for a in (model[0].topology.rows, model[0].topology.indices))
    assert torch.equal(model[0].values.detach(), dense[0].weight.detach()[cols, rows])
    assert torch.equal(model[0].bias.detach(), dense[0].bias.detach())
    rows, cols = (torch.from_numpy(a.astype(np.int64)) for a in (model[1].topology.rows, model[1].topology.indices))
    assert torch.equal(model[1].connected_weights(), dense[1].weight.detach()[cols, rows])
    pruned = model[1].mask.squeeze() == 0
    assert pruned.any() and float(model[1].weight.detach()[pruned].abs().max()) == 0.0


def test_seeds_come_from_the_seed_and_the_layer_name():
    model = sparsify(seeded(0, Net), "random_regular", density=0.5, seed=7, keep_weights=False, init="glorot")
    layer = model.block.body[0]
    expected = build("random_regular", 20, 30, 15, seed=derive_seed(7, "topology", "block.body.0"))
    assert layer.topology.fingerprint == expected.fingerprint
    assert torch.equal(layer.connected_weights(),
                       torch.from_numpy(initial_weights(expected, "glorot", rng(7, "init", "block.body.0"))))
    assert float(layer.bias.detach().abs().max()) == 0.0
    again = sparsify(seeded(0, Net), "random_regular", density=0.5, seed=7, keep_weights=False)
    assert torch.equal(again.block.body[0].connected_weights(), layer.connected_weights())
    # two layers of the same shape get different masks: their names differ
    assert model.shared.topology.fingerprint != model.again.topology.fingerprint or model.shared is model.again
    other = sparsify(seeded(0, Net), "random_regular", density=0.5, seed=8)
    assert other.block.body[0].topology.fingerprint != layer.topology.fingerprint


@pytest.mark.parametrize("backend", ["masked", "sparse"])
def test_after_training_pruned_weights_are_zero_or_absent(backend):
    model = sparsify(seeded(4, Net), "random_rotating", density=0.3, seed=1, backend=backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        image, x = torch.randn(8, 3, 6, 6, generator=gen), torch.randn(8, 20, generator=gen)
        loss = model(image, x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for name, module in model.named_modules():
        if isinstance(module, SparseConv2d) or (isinstance(module, SparseLinear) and module.backend == "masked"):
            mask = module.mask.expand_as(module.weight)
            assert float(module.weight.detach()[mask == 0].abs().max()) == 0.0, name
            assert float(module.weight.detach()[mask == 1].abs().min()) > 0.0, name
        elif isinstance(module, SparseLinear):                 # sparse: only the connections exist
            assert module.values.shape == (module.topology.nnz,) and not hasattr(module, "weight"), name


# -- bad arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,message", [
    (dict(density=0.5, k=3), "exactly one of density"),
    (dict(), "exactly one of density"),
    (dict(density=1.5), "density=1.5 must be a fraction in (0, 1]"),
    (dict(density=0.08, strict=True), "density=0.08 gives k = round(0.08 * 5) = 0 for layer 'head' (5 outputs)"),
    (dict(k=9, exclude=["conv"], strict=True), "k=9 is too large for layer 'head', which has 5 outputs"),
    (dict(k=2, include=["bodyy"]), "include entry 'bodyy' matches no nn.Linear or convolution"),
    (dict(k=2, exclude=["nothing"]), "exclude entry 'nothing' matches no"),
    (dict(k=2, include=[nn.LSTM]), "include entry LSTM matches no"),
    (dict(k=2, include=["block"], exclude=["block"]), "nothing to sparsify"),
    (dict(k=2, backend="fast"), "unknown backend 'fast'"),
])
def test_bad_arguments_name_the_layer_and_the_value(kwargs, message):
    with pytest.raises(SparsetopoError) as err:
        sparsify(seeded(0, Net), "regular_rotating", **kwargs)
    assert message in str(err.value)


def test_unknown_construction_and_a_model_of_depthwise_convolutions_are_refused():
    with pytest.raises(SparsetopoError, match="unknown construction 'ring'"):
        sparsify(seeded(0, Net), "ring", k=2)
    depthwise = nn.Sequential(nn.Conv2d(4, 8, 3, groups=4), nn.Flatten())
    with pytest.raises(SparsetopoError, match=r"nothing to sparsify.*layer '0': depthwise \(groups=4"):
        sparsify(depthwise, "regular_rotating", k=2, strict=True)


def test_sparse_backend_needs_cpu_float32():
    model = seeded(0, lambda: nn.Sequential(nn.Linear(8, 4))).double()
    with pytest.raises(SparsetopoError, match="layer '0' is torch.float64"):
        sparsify(model, "regular_rotating", k=2, backend="sparse")
    model = sparsify(seeded(0, lambda: nn.Sequential(nn.Linear(8, 4))).double(), "regular_rotating", k=2)
    assert model[0].backend == "masked" and model[0].weight.dtype == torch.float64


def test_package_exposes_sparsify_lazily():
    assert sparsetopo.sparsify is sparsify


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_on_cuda_auto_is_masked_and_outputs_match():
    model = seeded(0, Net).cuda()
    image, x = inputs()
    expected = model(image.cuda(), x.cuda())
    sparse = sparsify(model, "random_regular", density=1.0)
    assert {row["backend"] for row in sparse.sparsetopo_summary} == {"masked"}
    assert float((sparse(image.cuda(), x.cuda()) - expected).abs().max()) < 1e-5
