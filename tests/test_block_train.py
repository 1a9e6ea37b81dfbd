"""Block networks through TrainConfig, train(), populations, sweep specs and the CLI."""

import json

import pytest
import torch

import sparsetopo.nn.mlp as mlp
from sparsetopo import SparsetopoError
from sparsetopo.cli import main
from sparsetopo.nn import BlockSparseLinear, SparseLinear
from sparsetopo.sweep import expand, parse_spec, run_id
from sparsetopo.sweep.worker import result_row
from sparsetopo.train import TrainConfig, train, train_population
from sparsetopo.train.population import SHARED_BLOCK_MAX_BATCH, trains_one_by_one


def small(**kw):
    base = dict(dataset="digits", hidden=(40,), degrees=(2, None), epochs=2, lr=0.5, batch_size=16,
                limit_train=300, block=8)
    base.update(kw)
    return TrainConfig(**base)


def test_old_run_ids_are_unchanged_and_block_enters_the_id_above_one():
    # ids computed by the code before TrainConfig had a block field
    assert run_id(TrainConfig()) == "699059cc204ada6b"
    assert run_id(TrainConfig(dataset="digits", hidden=(100,), degrees=(10, None), epochs=3, seed=2,
                              batch_size=8)) == "73ae6a78c91a6f45"
    assert run_id(TrainConfig(dataset="digits", hidden=(100, 60), construction="random_edge", degrees=(5, None, 3),
                              loss="cross_entropy", permute_inputs=1)) == "283e8a315a934864"
    assert run_id(TrainConfig(block=1)) == run_id(TrainConfig())
    assert len({run_id(TrainConfig(block=b)) for b in (1, 4, 16)}) == 3


@pytest.mark.parametrize("block", [0, -3, True, 2.5, "4"])
def test_a_bad_block_is_refused_naming_it(block):
    with pytest.raises(SparsetopoError, match=r"block=.* must be a whole number of neurons per block, >= 1"):
        TrainConfig(block=block)


def test_layer_blocks_make_a_narrow_side_one_block_and_full_degrees_count_blocks():
    config = TrainConfig(block=16)
    assert config.layer_blocks([784, 300, 10]) == [(16, 16), (16, 10)]
    assert config.layer_degrees([784, 300, 10]) == [19, 1]        # ceil(300/16), ceil(10/10)
    assert TrainConfig().layer_degrees([784, 300, 10]) == [300, 10]


@pytest.mark.parametrize("recipe, engine", [({}, "fused/block"), ({"hidden": (44,)}, "fused/block"),
                                            ({"loss": "cross_entropy"}, "autograd/block"),
                                            ({"batch_size": 100}, "autograd/block")])
def test_train_runs_block_layers_as_masked_dense_does(digits, monkeypatch, recipe, engine):
    """The paper's recipe trains a block network on the fused epoch (its lifted connections) up
    to a batch of 48, any other recipe or a larger batch on the autograd loop; both compute what masked-dense layers on the same
    topologies compute. hidden=44 with blocks of 8 leaves a ragged last block."""
    config = small(**recipe)
    result = train(config, dataset=digits)
    assert result.backend == engine and result.status == "ok"
    assert all(isinstance(layer, BlockSparseLinear) for layer in result.model.layers)
    assert [layer["block"] for layer in result.layers] == [[8, 8], [8, 8]]
    assert result.parameters == sum(layer.topology.nnz + layer.topology.n_out for layer in result.model.layers)
    for layer in result.model.layers:  # tile entries outside the topology (ragged padding) stay 0
        outside = torch.ones(layer.tiles.numel(), dtype=torch.bool)
        outside[layer.tile_index()] = False
        assert int(outside.sum()) == layer.tiles.numel() - layer.topology.nnz
        assert not layer.tiles.detach().reshape(-1)[outside].any()
    # the reference: the same topologies as masked-dense SparseLinear layers, same init, same loop
    monkeypatch.setattr(mlp, "BlockSparseLinear", lambda t, init, gen: SparseLinear(t, init, gen, backend="masked"))
    reference = train(config, dataset=digits)
    assert reference.backend == "autograd/masked"
    for block, masked in zip(result.model.layers, reference.model.layers):
        assert block.topology.fingerprint == masked.topology.fingerprint
        torch.testing.assert_close(block.dense_weight(), masked.dense_weight(), rtol=1e-4, atol=1e-5)
    assert [h.train_loss for h in result.history] == pytest.approx([h.train_loss for h in reference.history],
                                                                   rel=1e-5)
    assert [h.test_accuracy for h in result.history] == pytest.approx([h.test_accuracy for h in reference.history],
                                                                      abs=0.01)


def test_block_one_keeps_the_fused_path(digits):
    result = train(small(block=1, backend="sparse", epochs=1), dataset=digits)
    assert result.backend == "fused/sparse"
    assert "block" not in result.layers[0]


def test_populations_train_members_alone_where_train_runs_them_fused(digits):
    configs = [small(seed=s, epochs=1) for s in (0, 1)]
    results = train_population(configs, dataset=digits)
    assert [r.backend for r in results] == ["fused/block"] * 2
    alone = train(configs[1], dataset=digits)
    assert torch.equal(results[1].model.layers[0].tiles, alone.model.layers[0].tiles)
    with pytest.raises(SparsetopoError, match=r"engine='fused' does not compute block layers \(block=8\)"):
        train_population(configs, dataset=digits, engine="fused")


def test_auto_trains_block_members_alone_only_where_that_is_faster():
    assert trains_one_by_one(small())                                   # the fused epoch, batch 16
    assert trains_one_by_one(small(batch_size=SHARED_BLOCK_MAX_BATCH + 1))
    assert not trains_one_by_one(small(batch_size=64))                 # above the fused epoch's batches
    assert not trains_one_by_one(small(batch_size=SHARED_BLOCK_MAX_BATCH))
    assert not trains_one_by_one(small(loss="cross_entropy"))          # the autograd loop, batch 16
    assert not trains_one_by_one(small(block=1))                       # ordinary networks: the population engines


@pytest.mark.parametrize("recipe, engine", [({"batch_size": 64}, "auto"), ({"batch_size": 64}, "torch"),
                                            ({"loss": "cross_entropy", "optimizer": "adam", "lr": 0.01,
                                              "activation": "relu", "dropout": (0.2, 0.5)}, "auto"),
                                            ({"epochs": 6, "early_stop": 2}, "torch")])
def test_block_populations_share_one_stack_and_equal_train(digits, recipe, engine):
    """Members that differ in construction, degrees and seed (hidden 44: a ragged last block)
    train in one stack, each layer one block layer over every member, and end as train() ends
    each of them alone; members stopping early leave the stack without disturbing the rest
    (the last case: two stop after epoch 3, two after epoch 5)."""
    members = [dict(seed=0), dict(seed=1, construction="random_regular"), dict(seed=2, degrees=(3, None)),
               dict(seed=3, construction="random_edge", degrees=(1, None))]
    configs = [small(**{"hidden": (44,), "epochs": 4, "validation_fraction": 0.2, "early_stop": 1, **recipe, **m})
               for m in members]
    results = train_population(configs, dataset=digits, engine=engine)
    assert [r.backend for r in results] == ["torch-population/block"] * 4
    for config, result in zip(configs, results):
        alone = train(config, dataset=digits)
        assert result.status == alone.status and len(result.history) == len(alone.history)
        for ours, theirs in zip(result.model.layers, alone.model.layers):
            assert isinstance(ours, BlockSparseLinear)
            torch.testing.assert_close(ours.tiles, theirs.tiles, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-4, atol=1e-5)
        assert [h.train_loss for h in result.history] == pytest.approx([h.train_loss for h in alone.history],
                                                                       rel=1e-5)
    if recipe.get("early_stop") == 2:
        assert len({len(r.history) for r in results}) > 1, "no member left the stack before the others"


def test_a_store_row_records_the_block_and_the_first_layers_real_density(digits):
    result = train(small(epochs=1), dataset=digits)
    row = result_row(result, measures=False)
    t = result.model.layers[0].topology
    assert row["block"] == 8 and row["k_in"] == 2
    assert row["density_in"] == t.nnz / (t.n_in * t.n_out)


SPEC = """
[protocol]
dataset = "digits"
epochs = 1
[grid.blocks]
hidden = [40]
block = [1, 4, 16]
densities_in = [0.25]
"""


def test_a_sweep_block_axis_counts_degrees_in_blocks_and_keeps_each_value():
    configs = expand(parse_spec(SPEC))
    assert [c.block for c in configs] == [1, 4, 16]
    # 0.25 of the first layer's outputs: 40 neurons, 10 blocks of 4, 3 blocks of 16
    assert [c.degrees for c in configs] == [(10, None), (2, None), (1, None)]
    assert len({run_id(c) for c in configs}) == 3
    assert run_id(configs[0]) == run_id(TrainConfig(dataset="digits", epochs=1, hidden=(40,), degrees=(10, None)))


@pytest.mark.parametrize("extra,fragment", [
    ("block = [0]", "block=0 must be a block size >= 1"),
    ("block = [\"x\"]", "block='x' must be an integer"),
])
def test_a_bad_sweep_block_is_refused(extra, fragment):
    with pytest.raises(SparsetopoError, match=fragment):
        expand(parse_spec(SPEC.replace("block = [1, 4, 16]", extra)))


def test_a_sweep_degree_beyond_the_blocks_is_refused_naming_them():
    text = SPEC.replace("densities_in = [0.25]", "degrees_in = [5]").replace("[1, 4, 16]", "[16]")
    with pytest.raises(SparsetopoError, match=r"k=5 is out of range .* in 3 output blocks \(block=16\)"):
        expand(parse_spec(text))


def test_cli_train_with_block(capsys, digits):
    code = main(["train", "--dataset", "digits", "--hidden", "40", "-k", "2,full", "--block", "8", "--epochs",
                 "1", "--limit-train", "200", "--json"])
    out, _ = capsys.readouterr()
    payload = json.loads(out)
    assert code == 0 and payload["backend"] == "fused/block" and payload["config"]["block"] == 8


@pytest.mark.parametrize("argv,fragment", [
    (["train", "--dataset", "digits", "--block", "0"], "block=0"),
    (["train", "--dataset", "digits", "--block", "x"], "'x'"),
    (["train", "--dataset", "digits", "--block", "8", "-k", "30,full"], "ceil(40/8) = 5"),
    (["topology", "regular_rotating", "--n-in", "64", "--n-out", "40", "-k", "2", "--block", "0"], "block (inputs)=0"),
    (["topology", "regular_rotating", "--n-in", "64", "--n-out", "40", "-k", "2", "--block", "1,2,3"], "pair"),
])
def test_cli_bad_block_exits_2_with_one_line(capsys, argv, fragment):
    code = main(argv + (["--hidden", "40", "--epochs", "1"] if argv[0] == "train" else []))
    _, err = capsys.readouterr()
    assert code == 2 and fragment in err and "Traceback" not in err and err.count("\n") == 1


def test_cli_topology_with_block_describes_blocks(capsys):
    code = main(["topology", "regular_rotating", "--n-in", "64", "--n-out", "40", "-k", "2", "--block", "16,8",
                 "--json", "--no-metrics"])
    info = json.loads(capsys.readouterr().out)
    assert code == 0 and info["block"] == [16, 8] and info["k"] == 2
    assert info["nnz"] == 64 * 2 * 8 and info["out_degree"]["min"] == 16
