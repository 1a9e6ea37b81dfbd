"""explain(): the path of every sparse layer for training and inference, read from the same plan
the layers' forward follows, in Python and on the command line."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

import sparsetopo
from sparsetopo import SparsetopoError
from sparsetopo.cli.app import main
from sparsetopo.nn import SparseMLP
from sparsetopo.nn.plan import BLOCK_PATHS, PATHS

BATCHES = [1, 32, 512]


def paper_mlp():
    return SparseMLP(sparsetopo.build_stack([784, 300, 10], "random_regular", [3, 10]), backend="sparse")


def tutorial_cnn():
    """The CNN of docs/tutorial.md, sparsified as it is there."""
    model = nn.Sequential(OrderedDict(
        features=nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()),
        classifier=nn.Sequential(nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10)),
    ))
    return sparsetopo.sparsify(model, "random_regular", density=0.1, seed=0, include=["features.3", "classifier"])


def user_mlp():
    return sparsetopo.sparsify(nn.Sequential(nn.Linear(64, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                                             nn.Linear(1024, 10)), "random_regular", density=0.3, seed=0)


def block_mlp():
    """A user's MLP on blocks of 16 (a ragged last block on the 100-wide side)."""
    return sparsetopo.sparsify(nn.Sequential(nn.Linear(64, 100), nn.ReLU(), nn.Linear(100, 10)), "random_regular",
                               density=0.3, seed=0, block=16)


MODELS = {"paper_mlp": paper_mlp, "tutorial_cnn": tutorial_cnn, "user_mlp": user_mlp, "block_mlp": block_mlp}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("which", sorted(MODELS))
def test_explain_names_a_path_for_every_layer_and_the_layers_run_it(which, batch):
    model = MODELS[which]()
    plans = sparsetopo.explain(model, batch_size=batch)
    layers = dict(model.named_modules())
    assert [p.name for p in plans] == [n for n, m in layers.items() if hasattr(m, "topology")]
    known = set(PATHS) | set(BLOCK_PATHS)
    for p in plans:
        assert p.train_path in known and p.infer_path in known and p.threads >= 1
    first = layers[plans[0].name]
    x = torch.rand((batch, 1, 28, 28) if which == "tutorial_cnn" else (batch, first.topology.n_in))
    model.eval()
    with torch.no_grad():
        model(x)
    assert [getattr(layers[p.name], "last_path", "masked") for p in plans] == [p.infer_path for p in plans]
    model.train()
    model(x.requires_grad_()).sum().backward()
    assert [getattr(layers[p.name], "last_path", "masked") for p in plans] == [p.train_path for p in plans]
    table = str(plans)
    assert all(p.name in table and p.infer_path in table for p in plans)


def test_auto_runs_the_user_mlps_wide_layer_dense_at_batch_one_and_sparse_to_train():
    model = user_mlp()
    plan = {p.name: p for p in sparsetopo.explain(model, batch_size=1)}
    wide = plan["2"]
    assert wide.backend == "sparse" and wide.infer_path == "dense" and wide.train_path == "tiled"
    assert wide.infer_seconds["dense"] < wide.infer_seconds["sparse"]
    assert wide.train_seconds["sparse"] < wide.train_seconds["dense"]


def test_block_layers_read_one_example_tile_by_tile_and_batches_as_matmuls():
    plan = sparsetopo.explain(block_mlp(), batch_size=1)   # sparsify leaves the output layer dense
    assert [(p.name, p.kind, p.train_path, p.infer_path) for p in plan] == [("0", "block", "block", "block-vector")]
    assert {p.infer_path for p in sparsetopo.explain(block_mlp(), batch_size=32)} == {"block"}


def test_explain_refuses_a_bad_batch_and_a_model_without_sparse_layers():
    with pytest.raises(SparsetopoError, match="batch_size=0"):
        sparsetopo.explain(paper_mlp(), batch_size=0)
    with pytest.raises(SparsetopoError, match="no sparse layer"):
        sparsetopo.explain(nn.Linear(3, 2))


def test_the_cli_prints_the_table_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    path = tmp_path / "mlp.safetensors"
    sparsetopo.save(paper_mlp(), path)
    assert main(["explain", str(path), "--batch", "512"]) == 0
    out = capsys.readouterr().out
    assert "layers.0" in out and "layers.1" in out and "tiled" in out
    for argv in (["explain", str(path), "--batch", "0"], ["explain", str(tmp_path / "missing.safetensors")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
