"""The protocol's ``permute_inputs``: one fixed permutation of the input features, the same for
train and test data, in the config, the run id, the spec, the store, the CLI and every engine."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from sparsetopo.data import Dataset, input_permutation
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep import SweepStore, load_results
from sparsetopo.sweep.spec import expand, parse_spec, run_id
from sparsetopo.train import TrainConfig, train, train_population
from sparsetopo.train.population import check_population, population_key


def small(**kw) -> TrainConfig:
    base = dict(dataset="digits", hidden=(16,), degrees=(4, None), construction="regular_rotating", epochs=2,
                lr=0.5, limit_train=300, seed=3)
    return TrainConfig(**{**base, **kw})


def by_hand(dataset: Dataset, perm: np.ndarray) -> Dataset:
    """``dataset`` with the columns of its train and test images reordered by ``perm``."""
    return Dataset(dataset.name, dataset.x_train[:, perm], dataset.y_train, dataset.x_test[:, perm],
                   dataset.y_test, n_classes=dataset.n_classes, source="permuted by hand")


def test_the_permutation_depends_on_its_seed_only():
    perm = input_permutation(5, 64)
    assert sorted(perm.tolist()) == list(range(64)) and not np.array_equal(perm, np.arange(64))
    assert np.array_equal(perm, input_permutation(5, 64))
    assert not np.array_equal(perm, input_permutation(6, 64))


ENGINES = {
    "fused": {},                                                      # train()'s fused epoch (MSE + Nesterov SGD)
    "autograd": {"optimizer": "adam", "lr": 0.01, "dropout": (0.2, 0.0)},   # train()'s autograd loop
}


@pytest.mark.parametrize("engine", [*ENGINES, "population"])
def test_a_permuted_run_equals_a_run_on_data_permuted_by_hand(digits, engine):
    permuted = small(permute_inputs=5, **ENGINES.get(engine, {}))
    plain = replace(permuted, permute_inputs=None)
    perm = input_permutation(5, digits.n_features)
    hand = by_hand(digits, perm)
    if engine == "population":
        others = [replace(permuted, construction="random_edge"), replace(permuted, seed=4)]
        a = train_population([permuted, *others], dataset=digits)[0]
        b = train_population([plain, *(replace(c, permute_inputs=None) for c in others)], dataset=hand)[0]
        assert a.backend.startswith("fused-population")
    else:
        a, b = train(permuted, dataset=digits), train(plain, dataset=hand)
    assert a.test_accuracy == b.test_accuracy
    for la, lb in zip(a.model.layers, b.model.layers):
        assert torch.equal(la.dense_weight(), lb.dense_weight()) and torch.equal(la.bias, lb.bias)
    # The same network, up to the order of the first layer's inputs: with its first layer's rows put back
    # in pixel order, it computes on the unpermuted images what the trained one computes on permuted ones.
    x = torch.as_tensor(digits.x_test)
    weights = [layer.dense_weight().t() for layer in a.model.layers]   # (in, out): h @ w
    weights[0] = weights[0][torch.from_numpy(np.argsort(perm))]
    h = x
    for w, layer in zip(weights, a.model.layers):
        h = torch.sigmoid(h @ w + layer.bias.detach())
    a.model.eval()
    with torch.no_grad():
        assert torch.allclose(h, a.model(x[:, torch.from_numpy(perm)]), atol=1e-5)
    # and the permutation did change the data the network saw
    unpermuted = train(plain, dataset=digits)
    assert not torch.equal(unpermuted.model.layers[0].dense_weight(), a.model.layers[0].dense_weight())


def test_resume_of_a_permuted_run_equals_the_uninterrupted_run(digits, tmp_path, interrupted_training):
    config = small(permute_inputs=2, epochs=3)
    whole = train(config, dataset=digits)
    interrupted_training(config, digits, tmp_path, after=1)
    resumed = train(config, dataset=digits, checkpoint_dir=tmp_path, resume=True)
    assert [h.test_accuracy for h in resumed.history] == [h.test_accuracy for h in whole.history]
    with pytest.raises(SparsetopoError, match="different configuration"):
        train(replace(config, permute_inputs=3), dataset=digits, checkpoint_dir=tmp_path, resume=True)


def test_the_permutation_seed_changes_the_run_id_and_none_keeps_the_old_one():
    config = small()
    ids = {run_id(replace(config, permute_inputs=p)) for p in (None, 0, 1, 2)}
    assert len(ids) == 4
    # a config without a permutation keeps the id it had before the field existed
    assert "permute_inputs" not in config.to_dict() or run_id(config) == run_id(replace(config, permute_inputs=None))
    assert run_id(replace(config, permute_inputs=1)) == run_id(replace(config, permute_inputs=1))


def test_populations_group_only_runs_with_the_same_permutation():
    a, b = small(permute_inputs=1), small(permute_inputs=2)
    assert population_key(a) != population_key(b) != population_key(replace(a, permute_inputs=None))
    assert population_key(a) == population_key(replace(a, seed=9, construction="random_edge"))
    with pytest.raises(SparsetopoError, match="permute_inputs"):
        check_population([a, b])


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_a_bad_permutation_seed_is_refused_naming_it(value):
    with pytest.raises(SparsetopoError, match="permute_inputs"):
        small(permute_inputs=value)


SPEC = """
[protocol]
dataset = "digits"
epochs = 1
[grid.a]
constructions = ["random_edge"]
hidden = [8]
degrees_in = [2]
permute_inputs = {value}
"""


def test_the_spec_takes_false_for_raster_order_and_a_seed_for_a_permutation():
    runs = expand(parse_spec(SPEC.format(value="[false, 4]")))
    assert [c.permute_inputs for c in runs] == [None, 4]
    assert len({run_id(c) for c in runs}) == 2
    assert [c.permute_inputs for c in expand(parse_spec(SPEC.format(value="false")))] == [None]


@pytest.mark.parametrize("value", ["-1", "1.5", "true", '"a"', "[1, -2]"])
def test_the_spec_refuses_a_bad_permutation_seed(value):
    with pytest.raises(SparsetopoError, match=r"\[grid.a\] permute_inputs=.* must be .*seed >= 0"):
        parse_spec(SPEC.format(value=value))


@pytest.mark.parametrize("value", ["-1", "1.5", "x"])
def test_the_cli_refuses_a_bad_permutation_seed_in_one_line(tmp_path, value):
    result = subprocess.run([sys.executable, "-m", "sparsetopo", "train", "--dataset", "digits", "--epochs", "1",
                             f"--permute-inputs={value}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("sparsetopo: error:") and "permute" in lines[0], result.stderr


def test_the_cli_trains_on_permuted_inputs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparsetopo", "train", "--dataset", "digits", "--hidden", "8",
                             "-k", "2,full", "--epochs", "1", "--permute-inputs", "7", "--json"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert '"permute_inputs": 7' in result.stdout


def test_the_store_records_the_permutation_and_old_stores_open(tmp_path):
    db = tmp_path / "old.sqlite"
    SweepStore(db).close()
    with sqlite3.connect(db) as con:   # a store written before the column existed
        pd.DataFrame([{"run_id": "a", "construction": "random_edge", "test_accuracy": 0.5}]).to_sql(
            "runs", con, index=False, if_exists="replace")
    SweepStore(db).close()             # opening it adds the column
    frame = load_results(db)
    assert "permute_inputs" in frame and frame["permute_inputs"].isna().all()

    from sparsetopo.sweep.worker import result_row

    config = small(permute_inputs=6, epochs=1)
    row = result_row(train(config), measures=False)
    assert row["permute_inputs"] == 6 and row["run_id"] == run_id(config)
    with SweepStore(db) as store:
        store.add_result(row)
    stored = load_results(db).set_index("run_id")
    assert stored.loc[run_id(config), "permute_inputs"] == 6
