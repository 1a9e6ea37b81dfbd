"""Population training: each stacked member must be the network train() gives it alone."""

import math

import pytest
import torch

import sparsetopo.train.loop as train_module
import sparsetopo.train.population as population
from sparsetopo import SparsetopoError
from sparsetopo.train import MEMBER_FIELDS, TrainConfig, population_key, train, train_population



# Members differ in construction, degrees, seed and init; limit_train=410 leaves a last
# batch of 26 examples, so a short final batch is exercised.
MEMBERS = [
    dict(construction="random_regular", degrees=(8, 5), seed=0, init="glorot"),
    dict(construction="regular_rotating", degrees=(4, 10), seed=1, init="glorot_sparse"),
    dict(construction="random_edge", degrees=(16, 3), seed=2, init="glorot"),
    dict(construction="fibonacci_rotating", degrees=(5, 7), seed=3, init="glorot"),
    dict(construction="fully_connected", degrees=None, seed=4, init="glorot"),
]


def members(**protocol):
    """The MEMBERS under ``protocol``; with two hidden layers each degree list gains a middle
    entry (a TrainConfig checks that it has one degree per layer)."""
    base = dict(dataset="digits", hidden=(32,), epochs=3, lr=0.5, limit_train=410)
    base.update(protocol)
    deep = len(base["hidden"]) == 2
    return [TrainConfig(**{**base, **m, "degrees": (m["degrees"][0], 6, 4) if deep and m["degrees"] else m["degrees"]})
            for m in MEMBERS]


def assert_same_run(pop, alone, n_test):
    assert pop.config == alone.config and pop.status == alone.status
    assert [h.epoch for h in pop.history] == [h.epoch for h in alone.history]
    for a, b in zip(pop.history, alone.history):
        assert abs(a.test_accuracy - b.test_accuracy) <= 1.0 / n_test + 1e-12   # within one example
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-5, abs=1e-7)
    for la, lb in zip(pop.model.layers, alone.model.layers):
        assert torch.allclose(la.connected_weights(), lb.connected_weights(), rtol=0, atol=1e-4)
        assert torch.allclose(la.bias.detach(), lb.bias.detach(), rtol=0, atol=1e-4)
    def topology(layers):  # the provenance; "backend" names the engine, which differs on purpose
        return [{k: v for k, v in layer.items() if k != "backend"} for layer in layers]

    assert pop.parameters == alone.parameters and topology(pop.layers) == topology(alone.layers)
    assert pop.backend in ("fused-population/sparse", "torch-population/masked")
    for sa, sb in zip(pop.weight_stats, alone.weight_stats):
        assert sa["nnz"] == sb["nnz"] and sa["std"] == pytest.approx(sb["std"], abs=1e-4)


@pytest.mark.parametrize("engine", ["auto", "torch"])
@pytest.mark.parametrize("protocol", [
    dict(),                                               # the paper's protocol (Nesterov momentum)
    dict(dropout=(0.2, 0.5)),                             # per-member dropout streams
    dict(hidden=(24, 16), momentum=0.0, activation="tanh", batch_size=50),  # two hidden layers, plain SGD
], ids=["paper", "dropout", "deeper-plain-sgd"])
def test_population_members_equal_individually_trained_networks(digits, protocol, engine):
    # "auto" takes the fused numba engine for the sigmoid protocols and torch for tanh
    configs = members(**protocol)
    seen = []
    # the dropout case also runs as consecutive stacks of at most 2 networks (2 + 2 + 1)
    results = train_population(configs, dataset=digits, on_epoch=lambda i, record: seen.append((i, record.epoch)),
                               max_members=2 if "dropout" in protocol else None, engine=engine)
    assert sorted(seen) == [(i, e) for i in range(len(configs)) for e in (1, 2, 3)]
    for config, pop in zip(configs, results):
        assert_same_run(pop, train(config, dataset=digits), len(digits.x_test))
    # members really differ from one another (no shared state leaks between them)
    assert len({round(r.history[-1].train_loss, 9) for r in results}) == len(results)


def test_masked_weights_stay_exactly_zero(digits):
    for result in train_population(members(dropout=(0.2, 0.5)), dataset=digits):
        for layer in result.model.layers:
            mask = torch.from_numpy(layer.topology.mask())
            weight = layer.dense_weight()
            assert torch.all(weight[~mask] == 0.0)
            assert torch.count_nonzero(weight[mask]) == layer.topology.nnz


@pytest.mark.parametrize("field,value", [("lr", 0.1), ("hidden", (16,)), ("dropout", (0.2, 0.5)),
                                         ("epochs", 2), ("limit_train", 300)])
def test_members_with_different_population_keys_are_rejected(digits, field, value):
    configs = members()
    configs[2] = TrainConfig(**{**configs[2].to_dict(), field: value})
    assert population_key(configs[2]) != population_key(configs[0])
    with pytest.raises(SparsetopoError, match=rf"configs\[2\] has {field}=.*population_key"):
        train_population(configs, dataset=digits)


def test_population_key_ignores_exactly_the_member_fields():
    a = TrainConfig(dataset="digits", hidden=(32,))
    b = TrainConfig(dataset="digits", hidden=(32,), seed=9, construction="random_edge", degrees=(4, 3),
                    init="glorot_sparse")
    assert population_key(a) == population_key(b)
    assert {name for name, _ in population_key(a)} | set(MEMBER_FIELDS) == set(a.to_dict())
    hash(population_key(a))


def test_no_configs_or_bad_values_are_rejected(digits):
    with pytest.raises(SparsetopoError, match="no configs"):
        train_population([], dataset=digits)
    with pytest.raises(SparsetopoError, match="epochs=-1"):
        train_population([TrainConfig(dataset="digits", epochs=-1)], dataset=digits)
    with pytest.raises(SparsetopoError, match="max_members=0"):
        train_population(members(), dataset=digits, max_members=0)


@pytest.mark.parametrize("engine", ["fused", "torch"])
def test_a_diverging_member_is_frozen_without_affecting_the_others(digits, monkeypatch, engine):
    original = train_module.build_model

    def poisoned(config, n_features, n_classes):
        """Seed 3's network starts with one NaN weight: its loss is NaN from the first step."""
        model = original(config, n_features, n_classes)
        if config.seed == 3:
            layer = model.layers[0]
            row, col = layer.topology.rows[0], layer.topology.indices[0]
            with torch.no_grad():
                if layer.backend == "masked":
                    layer.weight[row, col] = float("nan")
                else:                                   # sparse backend: connected weights in CSR order
                    layer.values[0] = float("nan")
        return model

    monkeypatch.setattr(train_module, "build_model", poisoned)
    monkeypatch.setattr(population, "build_model", poisoned)
    configs = members()
    results = train_population(configs, dataset=digits, engine=engine)
    assert [r.status for r in results] == ["ok", "ok", "ok", "diverged", "ok"]
    bad = results[3]
    assert len(bad.history) == 1 and not math.isfinite(bad.history[0].train_loss)
    alone = train(configs[3], dataset=digits)
    assert alone.status == "diverged" and len(alone.history) == 1
    for i in (0, 1, 2, 4):
        assert len(results[i].history) == 3
        assert_same_run(results[i], train(configs[i], dataset=digits), len(digits.x_test))


@pytest.mark.parametrize("backend", ["masked", "sparse"])
@pytest.mark.parametrize("protocol", [
    dict(),
    pytest.param(dict(hidden=(40, 24), degrees=(6, 5, None), batch_size=7, lr=0.3, dropout=(0.2, 0.5)),
                 marks=pytest.mark.slow),                 # deep, dropout: autograd on masked layers, batch 7
    dict(momentum=0.0, batch_size=64),                    # plain SGD, big batches
], ids=["paper", "deep-dropout", "plain-sgd"])
def test_fused_engine_matches_train_for_many_constructions_degrees_and_seeds(digits, protocol, backend):
    """The fused numba engine against train() (autograd on masked layers, the sequential
    fused epoch on sparse ones) for every construction, several degrees and seeds; and its
    numbers do not depend on how many threads share the members."""
    constructions = ["random_edge", "random_rotating", "random_regular", "regular_rotating",
                     "long_short_rotating", "fibonacci_rotating", "fully_connected"]
    base = dict(dataset="digits", hidden=(32,), epochs=2, lr=0.5, limit_train=300, backend=backend)
    base.update(protocol)
    configs = []
    for i, construction in enumerate(constructions):
        degrees = base.get("degrees") or ((2, 3), (8, None), (16, 5))[i % 3]
        if construction == "fully_connected":
            degrees = None
        configs.append(TrainConfig(**{**base, "construction": construction, "degrees": degrees, "seed": 10 + i,
                                      "init": ("glorot", "glorot_sparse")[i % 2]}))
    one = train_population(configs, dataset=digits, engine="fused", threads=1)
    two = train_population(configs, dataset=digits, engine="fused", threads=2)
    for config, a, b in zip(configs, one, two):
        assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
        for la, lb in zip(a.model.layers, b.model.layers):
            assert torch.equal(la.connected_weights(), lb.connected_weights())
        assert_same_run(a, train(config, dataset=digits), len(digits.x_test))


def test_engine_and_threads_are_checked(digits):
    with pytest.raises(SparsetopoError, match="engine='fused' trains sigmoid"):
        train_population(members(activation="tanh"), dataset=digits, engine="fused")
    with pytest.raises(SparsetopoError, match="unknown engine"):
        train_population(members(), dataset=digits, engine="gpu")
    with pytest.raises(SparsetopoError, match="threads=0"):
        train_population(members(), dataset=digits, threads=0)


def test_fused_seconds_are_per_member_core_seconds(digits):
    """Each member's epoch seconds are the epoch's wall time times the threads over the members
    (what one network costs one core), so summing members gives the population's core time."""
    results = train_population(members(epochs=1), dataset=digits, engine="fused", threads=1)
    assert len({r.history[0].seconds for r in results}) == 1
    assert all(r.history[0].seconds > 0 and r.seconds >= r.history[0].seconds for r in results)


def test_fused_members_on_the_sparse_backend_are_bit_identical_to_train(digits):
    """The population engine runs the sequential fused epoch's own body and kernels
    (kernels.train_batches), so a sparse-backend member without dropout, which train() trains
    with that fused epoch, ends with exactly the same weights, not merely close ones (the epoch
    loss is summed from the same batch losses by a different numpy call: equal to ~1e-16)."""
    configs = [TrainConfig(**{**c.to_dict(), "backend": "sparse"}) for c in members()]
    for config, pop in zip(configs, train_population(configs, dataset=digits, engine="fused", threads=1)):
        alone = train(config, dataset=digits)
        assert [h.train_loss for h in pop.history] == pytest.approx([h.train_loss for h in alone.history], rel=1e-12)
        assert [h.test_accuracy for h in pop.history] == [h.test_accuracy for h in alone.history]
        for la, lb in zip(pop.model.layers, alone.model.layers):
            assert torch.equal(la.connected_weights(), lb.connected_weights())
            assert torch.equal(la.bias.detach(), lb.bias.detach())
