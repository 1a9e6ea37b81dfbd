"""Population training: each stacked member must be the network train() gives it alone."""

import math
import time

import pytest
import torch

import sparsetopo.train.loop as train_module
import sparsetopo.train.roster as roster
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
    engines = {"fused-population/sparse", "fused-population/masked", "torch-population/masked"}
    assert {layer["backend"] for layer in pop.layers} <= engines   # engine and kernel, per layer
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
            mask = torch.from_numpy(layer.topology.mask().T)   # (out, in), as the weight
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
                    layer.weight[col, row] = float("nan")   # (out, in)
                else:                                   # sparse backend: connected weights in CSR order
                    layer.values[0] = float("nan")
        return model

    monkeypatch.setattr(train_module, "build_model", poisoned)
    monkeypatch.setattr(roster, "build_model", poisoned)
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


def test_fused_seconds_are_each_members_own_on_one_thread_and_shared_on_more(mnist_shaped):
    """On one thread (a sweep worker) each member is clocked on its own, so a 1% member's
    epochs are much shorter than its fully connected sibling's; on two threads the members
    share the epoch's wall time (times the threads, over the members). Either way a member's
    run seconds cover its epochs, and the members' seconds add up to the call's core time."""
    base = dict(dataset="synthetic", hidden=(300,), epochs=3, lr=0.1, limit_train=300)
    configs = [TrainConfig(**base, construction="fully_connected", seed=0),
               TrainConfig(**base, construction="regular_rotating", degrees=(3, None), seed=1)]
    started = time.perf_counter()
    dense, sparse = train_population(configs, dataset=mnist_shaped, engine="fused", threads=1)
    wall = time.perf_counter() - started
    assert min(h.seconds for h in dense.history) > 2 * min(h.seconds for h in sparse.history)
    assert all(r.seconds >= sum(h.seconds for h in r.history) > 0 for r in (dense, sparse))
    assert dense.seconds + sparse.seconds <= wall
    shared = train_population(configs, dataset=mnist_shaped, engine="fused", threads=2)
    assert [h.seconds for h in shared[0].history] == [h.seconds for h in shared[1].history]


def test_fused_members_on_the_sparse_backend_are_bit_identical_to_train(digits):
    """The population engine runs the sequential fused epoch's own body and kernels
    (kernels.train_batches), so a sparse-backend member without dropout, which train() trains
    with that fused epoch, ends with exactly the same weights, not merely close ones (the epoch
    loss is summed from the same batch losses by a different numpy call: equal to ~1e-16)."""
    configs = [TrainConfig(**{**c.to_dict(), "backend": "sparse"}) for c in members()]
    pooled = train_population(configs, dataset=digits, engine="fused", threads=1, layer_kernel="sparse")
    for config, pop in zip(configs, pooled):
        alone = train(config, dataset=digits)
        assert [h.train_loss for h in pop.history] == pytest.approx([h.train_loss for h in alone.history], rel=1e-12)
        assert [h.test_accuracy for h in pop.history] == [h.test_accuracy for h in alone.history]
        for la, lb in zip(pop.model.layers, alone.model.layers):
            assert torch.equal(la.connected_weights(), lb.connected_weights())
            assert torch.equal(la.bias.detach(), lb.bias.detach())


@pytest.fixture(scope="module")
def mnist_shaped():
    """MNIST-shaped data (784 features, 10 classes), small enough for a test."""
    from sparsetopo.data import load_dataset

    return load_dataset("synthetic", limit_train=300, limit_test=200)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("protocol", [
    dict(hidden=(100,)),
    dict(hidden=(100,), dropout=(0.2, 0.5)),
    dict(hidden=(100, 48)),
], ids=["paper", "dropout", "deep"])
def test_mnist_shaped_members_on_either_layer_kernel_equal_train(mnist_shaped, protocol, threads):
    """784-input networks, every construction from sparse to fully connected: the population
    engine with its layers held dense (GEMMs with the mask) or as CSR, or as the cost model
    picks, trains each member as train() trains it alone, and names each layer's kernel."""
    from sparsetopo.nn.plan import member_prefers_dense as prefers_dense

    deep = len(protocol["hidden"]) == 2
    cells = [("fully_connected", None), ("random_edge", (8, 5)), ("random_rotating", (30, 5)),
             ("random_regular", (60, 10)), ("regular_rotating", (90, 10)), ("long_short_rotating", (40, 7)),
             ("fibonacci_rotating", (20, 3))]
    configs = [TrainConfig(dataset="synthetic", **protocol, epochs=2, lr=0.5, limit_train=300, seed=i,
                           construction=c, degrees=None if d is None else (d[0], 24, d[1]) if deep else d)
               for i, (c, d) in enumerate(cells)]
    kernels = {}
    for layer_kernel in ("masked", "sparse", "auto"):
        kernels[layer_kernel] = train_population(configs, dataset=mnist_shaped, engine="fused", threads=threads,
                                                 layer_kernel=layer_kernel)
    for i, config in enumerate(configs):
        alone = train(config, dataset=mnist_shaped)
        for layer_kernel, results in kernels.items():
            assert_same_run(results[i], alone, len(mnist_shaped.x_test))
        assert {l["backend"] for l in kernels["masked"][i].layers} == {"fused-population/masked"}
        assert {l["backend"] for l in kernels["sparse"][i].layers} == {"fused-population/sparse"}
        picked = [l["backend"].split("/")[1] for l in kernels["auto"][i].layers]
        expected = ["masked" if prefers_dense(t.nnz, t.n_in, t.n_out) else "sparse"
                    for t in (layer.topology for layer in alone.model.layers)]
        assert picked == expected
    assert "masked" in {l["backend"].split("/")[1] for r in kernels["auto"] for l in r.layers}


def test_masked_kernel_keeps_pruned_weights_exactly_zero(mnist_shaped):
    configs = [TrainConfig(dataset="synthetic", hidden=(100,), construction="random_regular", degrees=(70, 10),
                           epochs=2, lr=0.5, limit_train=300, seed=s, dropout=(0.2, 0.5)) for s in (0, 1)]
    for result in train_population(configs, dataset=mnist_shaped, engine="fused", layer_kernel="masked"):
        for layer in result.model.layers:
            mask = torch.from_numpy(layer.topology.mask().T)   # (out, in), as the weight
            assert torch.all(layer.dense_weight()[~mask] == 0.0)
            assert torch.count_nonzero(layer.dense_weight()[mask]) == layer.topology.nnz


def test_unknown_layer_kernel_is_refused(digits):
    with pytest.raises(SparsetopoError, match="unknown layer_kernel 'gemm'"):
        train_population(members(), dataset=digits, layer_kernel="gemm")
