"""Training recipes beyond the paper's: cross-entropy, Adam, the cosine schedule, the
validation split and early stopping, on every engine; checked against hand-written torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sparsetopo.errors import SparsetopoError
from sparsetopo.train import TrainConfig, build_model, epoch_order, train, train_population
from sparsetopo.train.loop import split_tensors
from sparsetopo.train.recipe import batch_loss, epoch_lr, stop_early, validation_split

MODERN = dict(loss="cross_entropy", optimizer="adam", lr=0.003)


def small(**kw) -> TrainConfig:
    base = dict(dataset="digits", hidden=(20,), construction="random_regular", degrees=(4, 5), epochs=2,
                batch_size=16, limit_train=160, backend="masked", seed=3)
    return TrainConfig(**{**base, **kw})


def dense_params(model):
    """Each layer's effective dense weight and its bias, as float64 numpy arrays."""
    return [(layer.dense_weight().double().numpy(), layer.bias.detach().double().numpy()) for layer in model.layers]


# -- the config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, words", [
    ("loss", "hinge", "unknown loss 'hinge'"),
    ("optimizer", "rmsprop", "unknown optimizer 'rmsprop'"),
    ("lr_schedule", "step", "unknown lr_schedule 'step'"),
    ("validation_fraction", 1.0, "validation_fraction=1.0"),
    ("validation_fraction", -0.1, "validation_fraction=-0.1"),
    ("validation_fraction", "0.1", "validation_fraction='0.1'"),
    ("early_stop", -1, "early_stop=-1"),
    ("early_stop", 3, "needs a validation split"),
])
def test_bad_recipe_fields_are_rejected_naming_the_field(field, value, words):
    with pytest.raises(SparsetopoError, match=words.replace("(", r"\(").replace("[", r"\[")):
        TrainConfig(**{field: value})


def test_defaults_are_the_papers_recipe():
    c = TrainConfig()
    assert (c.loss, c.optimizer, c.lr_schedule, c.validation_fraction, c.early_stop) == \
        ("mse", "sgd_nesterov", "constant", 0.0, 0)


# -- cross-entropy and Adam against hand-written torch ------------------------------------------

def test_cross_entropy_gradient_matches_the_closed_form(digits):
    """dL/dlogits = (softmax - onehot) / B, back-propagated by hand through a sigmoid hidden layer."""
    config = small(**MODERN)
    model = build_model(config, digits.n_features, int(digits.n_classes))
    assert model.output == "linear"
    x = torch.as_tensor(digits.x_train[:16], dtype=torch.float32)
    y = torch.as_tensor(digits.y_train[:16], dtype=torch.int64)
    loss = batch_loss(config, model(x), F.one_hot(y, 10).float(), y)
    loss.backward()

    (w0, b0), (w1, b1) = ((w.T, b) for w, b in dense_params(model))   # (in, out): h = x @ w
    m0 = model.layers[0].mask.double().numpy().T
    m1 = model.layers[1].mask.double().numpy().T
    xd, yd = x.double().numpy(), y.numpy()
    h = 1 / (1 + np.exp(-(xd @ w0 + b0)))
    logits = h @ w1 + b1
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert float(loss.detach()) == pytest.approx(-np.log(p[np.arange(16), yd]).mean(), rel=1e-5)
    delta = (p - np.eye(10)[yd]) / 16
    g_w1, g_b1 = (h.T @ delta) * m1, delta.sum(0)
    back = (delta @ w1.T) * h * (1 - h)
    g_w0, g_b0 = (xd.T @ back) * m0, back.sum(0)
    for got, want in ((model.layers[1].weight.grad, g_w1), (model.layers[1].bias.grad, g_b1),
                      (model.layers[0].weight.grad, g_w0), (model.layers[0].bias.grad, g_b0)):
        got = got.double().numpy()
        np.testing.assert_allclose(got.T if got.ndim == 2 else got, want, rtol=1e-4, atol=1e-7)


def reference_adam(config, dataset, epochs):
    """The whole run written out in plain torch: the same initial weights, batches and masks,
    softmax cross-entropy and the Adam update by its formulas (no torch.optim)."""
    model = build_model(config, dataset.n_features, int(dataset.n_classes))
    params, masks = [], []
    for layer in model.layers:
        params += [layer.dense_weight().double().clone(), layer.bias.detach().double().clone()]
        masks += [layer.mask.double(), None]
    x = torch.as_tensor(dataset.x_train[: config.limit_train], dtype=torch.float64)
    y = torch.as_tensor(dataset.y_train[: config.limit_train], dtype=torch.int64)
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    b1, b2, eps, t = 0.9, 0.999, 1e-8, 0
    for epoch in range(1, epochs + 1):
        lr = epoch_lr(config, epoch)
        order = epoch_order(config.seed, epoch, x.shape[0])
        for start in range(0, x.shape[0], config.batch_size):
            batch = order[start: start + config.batch_size]
            leaves = [p.clone().requires_grad_() for p in params]
            a = x[batch]
            for l in range(len(model.layers)):
                w, b = leaves[2 * l], leaves[2 * l + 1]
                a = a @ (w * masks[2 * l]).t() + b   # weights are (out, in), as nn.Linear's
                if l < len(model.layers) - 1:
                    a = torch.sigmoid(a)
            logp = a - torch.logsumexp(a, dim=1, keepdim=True)
            loss = -logp[torch.arange(len(batch)), y[batch]].mean()
            grads = torch.autograd.grad(loss, leaves)
            t += 1
            for i, g in enumerate(grads):
                m[i] = b1 * m[i] + (1 - b1) * g
                v[i] = b2 * v[i] + (1 - b2) * g * g
                m_hat, v_hat = m[i] / (1 - b1 ** t), v[i] / (1 - b2 ** t)
                params[i] = params[i] - lr * m_hat / (v_hat.sqrt() + eps)
    return [p.numpy() for p in params]


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_adam_cross_entropy_training_matches_hand_written_torch(digits, schedule):
    config = small(**MODERN, lr_schedule=schedule, epochs=3)
    result = train(config, dataset=digits)
    assert result.backend == "autograd/masked"
    want = reference_adam(config, digits, config.epochs)
    got = [a for pair in dense_params(result.model) for a in pair]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=2e-5)
    # the reference really moved the weights: a wrong update (say SGD) would not match
    start = [a for pair in dense_params(build_model(config, 64, 10)) for a in pair]
    assert max(np.abs(g - s).max() for g, s in zip(got, start)) > 1e-2


def test_sparse_backend_and_torch_population_match_train_under_adam(digits):
    """Every engine a modern recipe can run on computes the same numbers as train()'s masked loop."""
    configs = [small(**MODERN, seed=s, construction=c) for s, c in ((0, "random_regular"), (1, "regular_rotating"),
                                                                     (2, "random_edge"))]
    reference = [train(c, dataset=digits) for c in configs]
    sparse = [train(TrainConfig(**{**c.to_dict(), "backend": "sparse"}), dataset=digits) for c in configs]
    stacked = train_population(configs, dataset=digits, engine="torch", max_members=3)
    assert {r.backend for r in sparse} == {"autograd/sparse"}
    assert {r.backend for r in stacked} == {"torch-population/masked"}
    for ref, others in zip(reference, zip(sparse, stacked)):
        want = dense_params(ref.model)
        for other in others:
            for (gw, gb), (ww, wb) in zip(dense_params(other.model), want):
                np.testing.assert_allclose(gw, ww, atol=1e-5)
                np.testing.assert_allclose(gb, wb, atol=1e-5)
            assert [h.train_loss for h in other.history] == pytest.approx([h.train_loss for h in ref.history],
                                                                           rel=1e-5)


def test_masked_weights_stay_exactly_zero_under_adam(digits):
    fast = {**MODERN, "lr": 0.05}                 # a large rate: any leak would show
    config = small(**fast, epochs=4)
    result = train(config, dataset=digits)
    stacked = train_population([config, small(**fast, epochs=4, seed=9)], dataset=digits,
                               engine="torch", max_members=2)[0]
    for model in (result.model, stacked.model):
        for layer in model.layers:
            pruned = layer.mask == 0
            assert pruned.any()
            assert torch.count_nonzero(layer.weight.detach()[pruned]) == 0
            assert torch.all(layer.weight.detach()[~pruned] != 0)   # connected weights did move off 0...
    # ... and so did Adam's moments of the connected weights only
    model = build_model(config, 64, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    x = torch.as_tensor(digits.x_train[:32], dtype=torch.float32)
    y = torch.as_tensor(digits.y_train[:32], dtype=torch.int64)
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    for layer in model.layers:
        state = optimizer.state[layer.weight]
        pruned = layer.mask == 0
        assert torch.count_nonzero(state["exp_avg"][pruned]) == 0
        assert torch.count_nonzero(state["exp_avg_sq"][pruned]) == 0
        assert torch.count_nonzero(layer.weight.detach()[pruned]) == 0


# -- which engine runs which recipe ---------------------------------------------------------------

def test_fused_engines_run_only_the_papers_recipe(digits):
    paper = small(backend="sparse")
    assert train(paper, dataset=digits).backend == "fused/sparse"
    modern = small(**MODERN, backend="sparse")
    assert train(modern, dataset=digits).backend == "autograd/sparse"
    with pytest.raises(SparsetopoError, match="engine='fused' computes MSE with Nesterov SGD only"):
        train_population([modern, small(**MODERN, backend="sparse", seed=4)], dataset=digits, engine="fused")
    auto = train_population([modern, small(**MODERN, backend="sparse", seed=4)], dataset=digits)
    assert {r.backend for r in auto} == {"torch-population/masked"}
    adam_mse = small(optimizer="adam", lr=0.003)
    assert train(TrainConfig(**{**adam_mse.to_dict(), "backend": "sparse"}), dataset=digits).backend == \
        "autograd/sparse"


def test_a_stack_of_one_goes_to_train(digits):
    """784-300-10-sized members fill a stack alone; auto then hands each to train()."""
    configs = [TrainConfig(dataset="synthetic", hidden=(300,), degrees=(3, None), epochs=1, limit_train=64,
                           batch_size=32, seed=s, **MODERN) for s in (0, 1)]
    from sparsetopo.data import load_dataset

    data = load_dataset("synthetic")
    results = train_population(configs, dataset=data)
    assert {r.backend for r in results} == {"autograd/sparse"}
    for config, got in zip(configs, results):
        want = train(config, dataset=data)
        assert got.history[0].train_loss == want.history[0].train_loss


# -- the learning-rate schedule -------------------------------------------------------------------

def test_cosine_schedule_values():
    c = small(lr=0.4, epochs=4, lr_schedule="cosine")
    assert [epoch_lr(c, e) for e in (1, 2, 3, 4)] == pytest.approx(
        [0.4, 0.2 * (1 + math.cos(math.pi / 4)), 0.2, 0.2 * (1 + math.cos(3 * math.pi / 4))])
    assert epoch_lr(small(lr=0.4, epochs=4), 3) == 0.4


def test_fused_and_population_engines_follow_the_schedule(digits):
    configs = [small(lr=0.5, epochs=3, lr_schedule="cosine", seed=s) for s in (0, 1)]
    masked = [train(c, dataset=digits) for c in configs]
    fused = [train(TrainConfig(**{**c.to_dict(), "backend": "sparse"}), dataset=digits) for c in configs]
    population = train_population(configs, dataset=digits, engine="fused")
    stack = train_population(configs, dataset=digits, engine="torch", max_members=2)
    constant = train(small(lr=0.5, epochs=3, seed=0), dataset=digits)
    assert fused[0].backend == "fused/sparse"
    for i, ref in enumerate(masked):
        for other in (fused[i], population[i], stack[i]):
            for (gw, _), (ww, _) in zip(dense_params(other.model), dense_params(ref.model)):
                np.testing.assert_allclose(gw, ww, atol=2e-5)
    # epoch 1 runs at the full rate either way; later epochs differ
    assert masked[0].history[0].train_loss == pytest.approx(constant.history[0].train_loss, rel=1e-6)
    assert masked[0].history[-1].train_loss != pytest.approx(constant.history[-1].train_loss, rel=1e-4)


# -- the validation split and early stopping ------------------------------------------------------

def test_validation_split_is_carved_from_training_data_only(digits):
    keep, held = validation_split(160, 0.1)
    assert len(held) == 16 and len(keep) == 144
    assert set(keep).isdisjoint(held) and set(keep) | set(held) == set(range(160))
    again_keep, again_held = validation_split(160, 0.1)
    assert np.array_equal(held, again_held)
    x_train, y_train, x_val, y_val, x_test, y_test, _ = split_tensors(small(validation_fraction=0.1), digits)
    assert x_val.shape[0] == 16 and x_train.shape[0] == 144
    first = torch.as_tensor(digits.x_train[:160], dtype=torch.float32)
    assert torch.equal(x_val, first[torch.from_numpy(held)])
    assert torch.equal(x_test, torch.as_tensor(digits.x_test, dtype=torch.float32))   # the test set is untouched
    # the same examples whatever the run's seed (population members share them)
    other = split_tensors(small(validation_fraction=0.1, seed=11), digits)
    assert torch.equal(other[2], x_val)
    assert validation_split(160, 0.0)[1].size == 0


def test_read_only_arrays_are_shared_without_a_warning(digits):
    """A sweep task's data come read-only from Ray's object store: the tensors share that
    memory (no copy per task) and torch's non-writable warning is not printed per task."""
    import dataclasses
    import warnings

    frozen = {k: np.array(getattr(digits, k)) for k in ("x_train", "y_train", "x_test", "y_test")}
    for array in frozen.values():
        array.flags.writeable = False
    shared = dataclasses.replace(digits, **frozen)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x_train, _, _, _, x_test, y_test, _ = split_tensors(small(), shared)
    assert x_train.data_ptr() == frozen["x_train"].ctypes.data and x_test.data_ptr() == frozen["x_test"].ctypes.data
    assert torch.equal(y_test, torch.from_numpy(digits.y_test.astype(np.int64)))


def test_stop_early_rule():
    assert not stop_early([0.5, 0.6, 0.6], 2)
    assert stop_early([0.5, 0.6, 0.6, 0.59], 2)          # best at epoch 2, two epochs without a better one
    assert not stop_early([0.5, 0.6, 0.6, 0.59], 0)
    assert not stop_early([], 3)


def test_early_stop_ends_runs_identically_on_every_engine(digits):
    # a vanishing learning rate: validation accuracy never improves after the first epoch
    stalled = [small(epochs=8, lr=1e-9, validation_fraction=0.2, early_stop=2, seed=s) for s in (0, 1)]
    moving = small(epochs=3, lr=0.5, validation_fraction=0.2, early_stop=50, seed=2)
    for config in stalled:
        result = train(config, dataset=digits)
        assert len(result.history) == 3 and result.status == "ok"
        assert all(h.val_accuracy is not None for h in result.history)
    assert len(train(moving, dataset=digits).history) == 3
    for engine in ("fused", "torch"):
        results = train_population(stalled, dataset=digits, engine=engine, max_members=2)
        assert [len(r.history) for r in results] == [3, 3]
        assert {r.status for r in results} == {"ok"}
    plain = train(small(epochs=2), dataset=digits)
    assert plain.history[0].val_accuracy is None


def test_resume_continues_schedule_and_early_stop(digits, tmp_path):
    config = small(**MODERN, epochs=4, lr_schedule="cosine", validation_fraction=0.2, early_stop=3)
    whole = train(config, dataset=digits)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        def stop_after_two(record):
            seen.append(record)
            if len(seen) == 2:
                raise KeyboardInterrupt
        train(config, dataset=digits, checkpoint_dir=tmp_path, on_epoch=stop_after_two)
    resumed = train(config, dataset=digits, checkpoint_dir=tmp_path, resume=True)
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in whole.history]
    for (gw, gb), (ww, wb) in zip(dense_params(resumed.model), dense_params(whole.model)):
        np.testing.assert_array_equal(gw, ww)
