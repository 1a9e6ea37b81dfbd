"""Training engine: the paper's protocol, masks held at zero, determinism, resume, divergence."""

import json

import numpy as np
import pytest
import torch

from sparsetopo import SparsetopoError, build
from sparsetopo.cli import main
from sparsetopo.nn import SparseLinear, SparseMLP
from sparsetopo.nn.init import TRUNCATED_NORMAL_STD, initial_weights
from sparsetopo.train import TrainConfig, train



def small(**kw):
    base = dict(dataset="digits", hidden=(32,), degrees=(8, 5), epochs=3, lr=0.5, limit_train=400)
    base.update(kw)
    return TrainConfig(**base)


def test_masked_weights_stay_exactly_zero_through_momentum_and_dropout(digits):
    result = train(small(dropout=(0.2, 0.5), construction="random_regular", backend="masked"), dataset=digits)
    for layer in result.model.layers:
        mask = torch.from_numpy(layer.topology.mask().T)   # (out, in), as the weight
        assert torch.all(layer.weight.detach()[~mask] == 0.0)
        assert torch.count_nonzero(layer.weight.detach()[mask]) == layer.topology.nnz
        assert layer.weight.grad is None or torch.all(layer.weight.grad[~mask] == 0.0)


def test_result_has_everything_the_analysis_needs(digits):
    cfg = small()
    result = train(cfg, dataset=digits)
    d = result.to_dict()
    assert d["status"] == "ok" and len(d["history"]) == 3
    assert [h["epoch"] for h in d["history"]] == [1, 2, 3]
    assert d["parameters"] == 64 * 8 + 32 + 32 * 5 + 10
    first = d["weight_stats"][0]
    w = result.model.layers[0].connected_weights().double().numpy()
    assert first == pytest.approx({"max": w.max(), "min": w.min(), "mean": w.mean(), "std": w.std(), "nnz": 512})
    assert json.loads(json.dumps(d))["config"]["degrees"] == [8, 5]


def test_same_seed_same_result_and_global_rng_is_never_used(digits):
    cfg = small(dropout=(0.2, 0.5), construction="random_edge")
    torch.manual_seed(1)
    np.random.seed(1)
    a = train(cfg, dataset=digits)
    torch.manual_seed(2)
    np.random.seed(2)
    b = train(cfg, dataset=digits)
    assert [h.test_accuracy for h in a.history] == [h.test_accuracy for h in b.history]
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert train(small(dropout=(0.2, 0.5), construction="random_edge", seed=1), dataset=digits).history != a.history


def test_resume_after_interruption_equals_uninterrupted(digits, tmp_path, interrupted_training):
    cfg = small(epochs=4, dropout=(0.2, 0.5))
    whole = train(cfg, dataset=digits, checkpoint_dir=tmp_path / "whole")
    interrupted_training(cfg, digits, tmp_path / "cut", after=2)
    resumed = train(cfg, dataset=digits, checkpoint_dir=tmp_path / "cut", resume=True)
    assert [h.test_accuracy for h in resumed.history] == [h.test_accuracy for h in whole.history]
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert torch.equal(a.connected_weights(), b.connected_weights()) and torch.equal(a.bias, b.bias)
    with pytest.raises(SparsetopoError, match="different configuration"):
        train(small(epochs=4, lr=0.1), dataset=digits, checkpoint_dir=tmp_path / "cut", resume=True)


def test_resume_reads_a_checkpoint_of_in_out_weights(digits, tmp_path, interrupted_training):
    """Checkpoints written while masked layers held their weight (in, out) have no "layout"."""
    cfg = small(epochs=4, dropout=(0.2, 0.5), construction="random_edge", backend="masked")
    whole = train(cfg, dataset=digits, checkpoint_dir=tmp_path / "whole")
    interrupted_training(cfg, digits, tmp_path / "cut", after=2)
    path = tmp_path / "cut" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    del state["layout"]
    names = [k for k in state["model"] if k.endswith("weight")]
    for number, key in enumerate(state["model"]):   # the optimizer numbers parameters in this order
        if key in names:
            state["model"][key] = state["model"][key].t().contiguous()
            buffers = state["optimizer"]["state"][number]
            buffers["momentum_buffer"] = buffers["momentum_buffer"].t().contiguous()
    torch.save(state, path)
    resumed = train(cfg, dataset=digits, checkpoint_dir=tmp_path / "cut", resume=True)
    assert [h.test_accuracy for h in resumed.history] == [h.test_accuracy for h in whole.history]
    for a, b in zip(whole.model.layers, resumed.model.layers):
        assert torch.equal(a.connected_weights(), b.connected_weights())


def test_divergence_ends_the_run_marked_diverged(digits):
    result = train(small(activation="relu", lr=1e6, epochs=5), dataset=digits)
    assert result.status == "diverged" and len(result.history) < 5


def test_paper_protocol_learns_digits_with_larger_lr(digits):
    cfg = TrainConfig(dataset="digits", hidden=(100,), construction="regular_rotating", degrees=(16, 10),
                      epochs=100, lr=0.5)
    assert train(cfg, dataset=digits).test_accuracy >= 0.92


def test_glorot_normal_matches_keras_definition():
    t = build("random_regular", 400, 300, 300 // 2, seed=0)
    w = initial_weights(t, "glorot", np.random.default_rng(0))
    limit = np.sqrt(2 / (400 + 300))
    assert np.abs(w).max() <= 2 * limit / TRUNCATED_NORMAL_STD + 1e-6
    assert w.std() == pytest.approx(limit, rel=0.02)
    sparse = initial_weights(t, "glorot_sparse", np.random.default_rng(0))
    assert sparse.std() == pytest.approx(np.sqrt(2 / (150 + 200)), rel=0.02)  # in-degree 200, out 150


def test_sparse_linear_matches_dense_reference():
    t = build("fibonacci_rotating", 12, 7, 3)
    layer = SparseLinear(t, gen=np.random.default_rng(3))
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(0))
    dense = layer.weight.detach().numpy() * t.mask().T   # (out, in), as nn.Linear's
    assert layer.weight.shape == (7, 12)
    assert np.allclose(layer(x).detach().numpy(), x.numpy() @ dense.T + layer.bias.detach().numpy(), atol=1e-6)


@pytest.mark.parametrize(
    "kw,fragment",
    [
        (dict(degrees=(8,)), "one degree per layer"),
        (dict(degrees=(8, 11)), "k=11"),
        (dict(epochs=-1), "epochs=-1"),
        (dict(batch_size=0), "batch_size=0"),
        (dict(construction="ring"), "unknown construction 'ring'"),
        (dict(dropout=(0.2,)), "dropout"),
    ],
)
def test_bad_configs_are_rejected(digits, kw, fragment):
    with pytest.raises(SparsetopoError, match=fragment.replace("(", r"\(")):
        train(small(**kw), dataset=digits)


def test_layers_must_chain():
    with pytest.raises(SparsetopoError, match="do not chain"):
        SparseMLP([build("regular_rotating", 5, 4, 2), build("regular_rotating", 3, 2, 1)])


def test_cli_train_json_is_deterministic_apart_from_timings(capsys, tmp_path):
    argv = ["train", "--dataset", "digits", "--hidden", "16", "-k", "4,10", "--epochs", "2", "--lr", "0.5", "--json"]
    outs = []
    for _ in range(2):
        assert main(argv) == 0
        d = json.loads(capsys.readouterr().out)
        for key in ("seconds",):
            d.pop(key)
        for h in d["history"]:
            h.pop("seconds")
        outs.append(d)
    assert outs[0] == outs[1]
    assert set(outs[0]) >= {"config", "test_accuracy", "history", "weight_stats", "parameters", "status"}


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["--dataset", "cifar"], "cifar"),
        (["--dataset", "digits", "-k", "4"], "one degree per layer"),
        (["--dataset", "digits", "-k", "4,11"], "k=11"),
        (["--dataset", "digits", "--epochs", "-2"], "epochs=-2"),
        (["--dataset", "digits", "--batch-size", "-1"], "batch_size=-1"),
        (["--dataset", "digits", "-k", "4,x"], "'x'"),
        (["--dataset", "mnist", "--data-dir", "/nonexistent-dir-for-test"], "nonexistent-dir-for-test"),
        (["--dataset", "mnist", "--data-dir", "{empty}"], "train-images-idx3-ubyte"),
    ],
)
def test_cli_train_bad_input_exits_2_without_traceback(capsys, argv, fragment, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSETOPO_DATA", raising=False)
    argv = [a.replace("{empty}", str(tmp_path)) for a in argv]
    monkeypatch.setattr("urllib.request.urlopen", _no_network)
    code = main(["train", "--hidden", "16", "--epochs", "1", *argv])
    out, err = capsys.readouterr()
    lines = err.rstrip("\n").split("\n")
    assert code == 2 and fragment in err and "Traceback" not in err and lines[0].startswith("sparsetopo: error: ")
    # one line; a failed download is a short first line and one indented line per mirror and hint
    assert len(lines) == 1 or (lines[0].startswith("sparsetopo: error: could not download")
                               and all(line.startswith("  ") for line in lines[1:])), err


def _no_network(*args, **kwargs):
    raise OSError("network disabled in tests")
