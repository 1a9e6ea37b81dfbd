"""save / load of block layers: the tiles' connected weights and the block sizes in the recipe,
an exact round trip, and files without block sizes reading as they did."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError, build
from sparsetopo.io import read_metadata
from sparsetopo.nn import BlockSparseLinear, SparseLinear, SparseMLP, sparsify

from test_io import Custom, seeded, trained_a_little

st = pytest.importorskip("safetensors.torch")


def blocked_net():
    """Ragged blocks on both sides of the first layer (70 = 4 x 16 + 6, 50 = 6 x 8 + 2), an even
    second layer, and a dense head: every weight moved off its initial value."""
    model = nn.Sequential(nn.Linear(70, 50), nn.ReLU(), nn.Linear(50, 32), nn.ReLU(), nn.Linear(32, 3))
    model = sparsify(seeded(0, lambda: model), "random_regular", density=0.3, seed=1, block=(16, 8),
                     include=["0", "2"])
    assert all(isinstance(model[i], BlockSparseLinear) for i in (0, 2))
    return trained_a_little(model, torch.randn(8, 70, generator=torch.Generator().manual_seed(0)))


def assert_same(loaded, model, x, exact=True):
    """Same block layers, tiles and state; the same outputs (to float rounding when ``exact`` is
    False: another backend for the neuron-level layers sums in another order)."""
    for name, module in model.named_modules():
        if isinstance(module, BlockSparseLinear):
            twin = loaded.get_submodule(name)
            assert isinstance(twin, BlockSparseLinear) and twin.topology.block == module.topology.block
            assert twin.topology.fingerprint == module.topology.fingerprint
            assert torch.equal(twin.tiles, module.tiles)   # the padding of ragged tiles stays 0 as well
    for (key, value), (other, theirs) in zip(sorted(loaded.state_dict().items()), sorted(model.state_dict().items())):
        assert key == other and torch.equal(value, theirs), key
    with torch.no_grad():
        if exact:
            assert torch.equal(loaded(x), model(x))
        else:
            torch.testing.assert_close(loaded(x), model(x), rtol=1e-6, atol=1e-6)


def test_block_layers_round_trip_exactly_without_the_class(tmp_path):
    model = blocked_net()
    path = sparsetopo.save(model, tmp_path / "blocks.safetensors")
    recipes = read_metadata(path)["layers"]
    assert {name: (r["kind"], r["block"]) for name, r in recipes.items()} == {"0": ("block", [16, 8]),
                                                                              "2": ("block", [16, 8])}
    tensors = st.load_file(str(path))
    assert tensors["0.values"].shape == (model[0].topology.nnz,) and "0.tiles" not in tensors
    x = torch.randn(5, 70, generator=torch.Generator().manual_seed(1))
    loaded = sparsetopo.load(path).eval()
    assert_same(loaded, model, x)
    assert loaded.sparsetopo_summary == model.sparsetopo_summary


def test_block_layers_load_into_a_dense_instance_and_a_meta_one(tmp_path):
    x = torch.randn(6, 12, generator=torch.Generator().manual_seed(0))
    model = trained_a_little(sparsify(seeded(1, Custom), "regular_rotating", density=0.5, seed=2, block=4), x)
    assert isinstance(model.a, BlockSparseLinear)
    path = sparsetopo.save(model, tmp_path / "custom.safetensors")
    assert_same(sparsetopo.load(path, model=seeded(5, Custom)).eval(), model, x)
    with torch.device("meta"):
        instance = Custom()
    assert_same(sparsetopo.load(path, model=instance).eval(), model, x)


def test_a_sparse_mlp_of_block_and_neuron_layers_round_trips(tmp_path):
    """The backend asked for goes to the neuron-level layers; block layers keep their one path."""
    topologies = [build("regular_rotating", 64, 48, 2, block=16), build("random_regular", 48, 10, 4, seed=3)]
    model = SparseMLP(topologies, seed=4, backend="sparse")
    assert [type(layer) for layer in model.layers] == [BlockSparseLinear, SparseLinear]
    path = sparsetopo.save(model, tmp_path / "mlp.safetensors")
    x = torch.rand(3, 64, generator=torch.Generator().manual_seed(2))
    for backend in (None, "masked"):
        loaded = sparsetopo.load(path, backend=backend)
        assert isinstance(loaded, SparseMLP) and loaded.layers[1].backend == (backend or "sparse")
        assert_same(loaded, model, x, exact=backend is None)


def test_a_neuron_layer_on_a_block_topology_keeps_its_class(tmp_path):
    layer = SparseLinear(build("random_regular", 40, 24, 1, seed=2, block=8), gen=np.random.default_rng(1))
    loaded = sparsetopo.load(sparsetopo.save(layer, tmp_path / "one.safetensors"))
    assert type(loaded) is SparseLinear and loaded.topology.block == (8, 8)
    assert loaded.topology.fingerprint == layer.topology.fingerprint
    assert torch.equal(loaded.connected_weights(), layer.connected_weights())


def test_neuron_level_recipes_carry_no_block_sizes(tmp_path):
    """Files of models without block layers are written as before block topologies existed."""
    model = sparsify(seeded(0, Custom), "random_regular", density=0.5, seed=1)
    recipes = read_metadata(sparsetopo.save(model, tmp_path / "plain.safetensors"))["layers"]
    assert recipes and all("block" not in r and r["kind"] == "linear" for r in recipes.values())


@pytest.mark.parametrize("block, match", [([16], r"block=\[16\] .*two positive sizes"),
                                          ([0, 8], r"block=\[0, 8\]"), ("16", "block='16'")])
def test_a_damaged_block_recipe_is_refused(tmp_path, block, match):
    path = sparsetopo.save(blocked_net(), tmp_path / "blocks.safetensors")
    tensors = st.load_file(str(path))
    with st.safe_open(str(path), framework="pt") as f:
        info = json.loads(f.metadata()["sparsetopo"])
    info["layers"]["0"]["block"] = block
    st.save_file(tensors, str(path), metadata={"sparsetopo": json.dumps(info)})
    with pytest.raises(SparsetopoError, match=match):
        sparsetopo.load(path)


def test_a_block_file_into_a_model_of_other_widths_is_refused(tmp_path):
    path = sparsetopo.save(blocked_net(), tmp_path / "blocks.safetensors")
    other = nn.Sequential(nn.Linear(70, 51), nn.ReLU(), nn.Linear(51, 32), nn.ReLU(), nn.Linear(32, 3))
    with pytest.raises(SparsetopoError, match="'0' is 70->51 in the model but 70->50 in the file"):
        sparsetopo.load(path, model=other)
