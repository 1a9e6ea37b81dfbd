"""`sparsetopo analyze`: graph measures joined to accuracy, correlations checked against scipy."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from sparsetopo.cli import main
from sparsetopo.report.correlations import correlations, measure_table
from sparsetopo.spectral import layer_measures
from sparsetopo.sweep import load_results, run_sweep
from sparsetopo.train import TrainConfig, build_model


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("analyze") / "sweep.sqlite"
    configs = [
        TrainConfig(dataset="digits", hidden=(16,), construction=c, degrees=(k, None), epochs=1, lr=0.5,
                    limit_train=300, seed=s)
        for c in ("regular_rotating", "random_regular", "fibonacci_rotating")
        for k in (1, 2, 4, 8)
        for s in (0, 1)
    ]
    run_sweep(configs, path, executor="inline", population=False)
    return path


def test_measures_are_those_of_the_runs_own_topologies(store):
    runs = load_results(store)
    table = measure_table(runs)
    assert len(table) == 24 and table["algebraic_connectivity_in"].notna().all()
    for row in runs.head(5).itertuples():
        config = TrainConfig.from_dict(json.loads(row.config))
        first = build_model(config, 64, 10).layers[0].topology
        got = table.loc[table["run_id"] == row.run_id, "spectral_gap_in"].item()
        assert got == pytest.approx(layer_measures(first)["spectral_gap"], rel=1e-9)


def test_correlations_match_scipy(store):
    runs = load_results(store)
    table = measure_table(runs)
    result = correlations(runs, seed=3)
    for scope, group, part in [("all", "all", table), ("construction", "random_regular",
                                                       table[table["construction"] == "random_regular"])]:
        for measure in ("spectral_gap_in", "density_in", "algebraic_connectivity_net"):
            row = result[(result["scope"] == scope) & (result["group"] == group) & (result["measure"] == measure)].iloc[0]
            x, y = part[measure].to_numpy(float), part["test_accuracy"].to_numpy(float)
            assert row["n"] == len(part)
            assert row["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
            assert row["spearman"] == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-9)
            assert row["spearman_low"] <= row["spearman"] <= row["spearman_high"]
    again = correlations(runs, seed=3)
    pd.testing.assert_frame_equal(result, again)  # seeded bootstrap


def test_cli_writes_csv_and_figure(store, tmp_path, capsys):
    assert main(["analyze", "--db", str(store), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "spectral_gap_in" in out and "spearman" in out
    csv = pd.read_csv(tmp_path / "correlations.csv")
    assert set(csv["scope"]) == {"all", "construction", "hidden"}
    import matplotlib.image as mpimg

    image = mpimg.imread(tmp_path / "correlations.png")
    assert image[..., :3].std() > 0.05 and (tmp_path / "correlations.pdf").stat().st_size > 1000


def test_cli_missing_store_is_a_one_line_error(tmp_path, capsys):
    assert main(["analyze", "--db", str(tmp_path / "none.sqlite")]) == 2
    err = capsys.readouterr().err
    assert "none.sqlite" in err and err.count("\n") == 1
