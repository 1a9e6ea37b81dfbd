"""The report's permutation null: the raster/permuted table, claim L1's rule on stores built for
it, the figure, and the spectra that the permutation leaves alone."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from sparsetopo.report import make_report, results
from sparsetopo.report.locality import compare_orders, connectivity_agreement, locality_table, pooled_difference
from sparsetopo.report.stats import make_rng
from sparsetopo.sweep import load_results, load_spec, run_sweep
from sparsetopo.sweep.spec import expand

sys.path.insert(0, str(Path(__file__).parent))
from test_report import write_store  # noqa: E402

SPARSE = ("random_edge", "regular_rotating", "random_regular")
K_IN = (3, 10, 30)


def store_frame(advantage_raster: float, advantage_permuted: float, seeds=range(4)) -> pd.DataFrame:
    """Runs of 784-100-10 networks, each in raster order and permuted (seed 1): regular_rotating
    beats random_edge by the given advantages, random_regular loses 1 point to it; small seed noise."""
    rng = np.random.default_rng(0)
    rows = []
    for permute in (None, 1):
        advantage = advantage_raster if permute is None else advantage_permuted
        for c in (*SPARSE, "fully_connected"):
            for k in ((100,) if c == "fully_connected" else K_IN):
                for s in seeds:
                    base = 0.7 + 0.05 * np.log10(k) + {"regular_rotating": advantage, "random_regular": -0.01}.get(c, 0)
                    rows.append(dict(
                        run_id=f"r{len(rows)}", position=len(rows), dataset="digits", hidden="100",
                        construction=c, degrees=f"{k},10", density_in=k / 100, density=k / 100, seed=s,
                        permute_inputs=permute, epochs=5, lr=0.1, init="glorot", status="ok", seconds=1.0,
                        test_accuracy=base + rng.normal(0, 0.002),
                        # the graph's measure depends on the construction, degree and seed, never on the order
                        alg_conn_in=0.01 * k + 0.001 * s + (0.5 if c == "regular_rotating" else 0.0),
                        alg_conn_net=0.001 * k))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("raster, permuted, verdict", [
    (0.03, 0.0, "supported"),        # the advantage vanishes without the alignment: locality
    (0.03, 0.03, "not supported"),   # it survives the permutation: the graph's own
])
def test_the_l1_rule_on_stores_built_for_it(tmp_path, raster, permuted, verdict):
    db = tmp_path / "sweep.sqlite"
    write_store(store_frame(raster, permuted), db)
    report = make_report(db, tmp_path / "out", seed=0)
    l1 = next(c for c in report.claims if c.id == "L1")
    assert l1.verdict == verdict
    assert l1.numbers["winning_cells"] == len(K_IN)       # regular_rotating at each density
    assert l1.value == pytest.approx(permuted, abs=0.003)
    assert l1.numbers["raster_mean_advantage"]["value"] == pytest.approx(raster, abs=0.003)
    claims = {c["id"]: c for c in json.loads((tmp_path / "out" / "claims.json").read_text())}
    assert claims["L1"]["verdict"] == verdict
    # the paper's claims rest on the raster-order runs only
    assert any("on permuted inputs are left out of claims C1-C8" in n for n in report.notes)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Permutation null: topology or input locality" in text and f"Claim L1: {verdict}" in text
    null = json.loads((tmp_path / "out" / "locality_null.json").read_text())
    assert null["permutation_seed"] == 1 and null["claim"]["verdict"] == verdict


def test_l1_is_not_supported_when_no_construction_beats_random_edges():
    claim = compare_orders(results.normalise(store_frame(-0.01, -0.01)), seed=0).claim
    assert claim.verdict == "not supported" and claim.numbers["winning_cells"] == 0
    assert "no advantage for input locality to explain" in claim.notes[0]


def test_the_table_has_both_orders_and_equal_connectivity():
    table = results.normalise(store_frame(0.03, 0.0))
    null = compare_orders(table, seed=0)
    assert set(null.table["order"]) == {"raster", "permuted"}
    row = null.table.query("order == 'raster' and construction == 'regular_rotating' and k_in == 10").iloc[0]
    assert row["difference"] == pytest.approx(0.03, abs=0.004) and row["ci_low"] > 0
    row = null.table.query("order == 'permuted' and construction == 'regular_rotating' and k_in == 10").iloc[0]
    assert row["ci_low"] <= 0 <= row["ci_high"]
    cells, largest = connectivity_agreement(null.table)
    assert cells == 2 * len(K_IN) and largest == 0.0
    header, rows = locality_table(null.table)
    assert header[4:6] == ["raster minus random_edge (pt)", "permuted minus random_edge (pt)"]
    regular = [r for r in rows if r[2] == "regular_rotating"]
    assert [r[3] for r in regular] == ["3%", "10%", "30%"]
    assert float(regular[1][4].split()[0]) == pytest.approx(3.0, abs=0.3) and regular[1][6] == "0.6015 / 0.6015"
    # a connectivity that differed between the orders would show
    broken = null.table.copy()
    broken.loc[broken["order"].eq("permuted"), "alg_conn_in"] += 0.25
    assert connectivity_agreement(broken)[1] == pytest.approx(0.25)


def test_pooled_difference_averages_cells_and_resamples_seeds_jointly():
    def series(*values):
        return pd.Series(values, index=range(len(values)))

    rng = np.random.default_rng(1)
    a, b = series(*(0.9 + rng.normal(0, 0.01, 6))), series(*(0.8 + rng.normal(0, 0.01, 6)))
    one = pooled_difference([(a, b)], make_rng(0, "t"))
    assert one.value == pytest.approx(a.mean() - b.mean()) and one.low < one.value < one.high
    # one cell counted three times is still one cell: the same interval, not a narrower one
    three = pooled_difference([(a, b)] * 3, make_rng(0, "t"))
    assert (three.value, three.low, three.high) == pytest.approx((one.value, one.low, one.high))
    # two cells: the mean of their differences
    two = pooled_difference([(a, b), (series(*[0.5] * 6), series(*[0.5] * 6))], make_rng(0, "t"))
    assert two.value == pytest.approx(one.value / 2) and two.low == pytest.approx(one.low / 2)
    assert np.isnan(pooled_difference([(series(1.0), series(0.5, 0.6))], make_rng(0, "t")).low)


def test_the_figure_is_drawn(tmp_path):
    db = tmp_path / "sweep.sqlite"
    write_store(store_frame(0.03, 0.0), db)
    report = make_report(db, tmp_path / "out", seed=0)
    figure = next(f for f in report.figures if f.name == "locality_null")
    assert not figure.skipped and figure.pdf.stat().st_size > 0
    image = mpimg.imread(figure.png)
    assert image.shape[1] > 800 and image[..., :3].std() > 0.05


def test_a_store_without_permuted_runs_has_no_l1(tmp_path):
    db = tmp_path / "sweep.sqlite"
    write_store(store_frame(0.03, 0.0).query("permute_inputs.isna()"), db)
    report = make_report(db, tmp_path / "out", seed=0)
    assert "L1" not in report.verdicts() and not (tmp_path / "out" / "locality_null.json").exists()


SPEC = """
[protocol]
dataset = "digits"
epochs = 1
lr = 0.5
limit_train = 200
[grid.a]
constructions = ["random_edge", "regular_rotating", "random_regular"]
hidden = [16]
degrees_in = [3]
permute_inputs = [false, 2]
seeds = 2
"""


def test_permuted_and_raster_runs_of_a_real_sweep_share_their_spectra(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    db = tmp_path / "sweep.sqlite"
    run_sweep(load_spec(spec), db, workers=1)
    runs = load_results(db)
    assert len(runs) == 12 and runs["alg_conn_in"].notna().all()
    pairs = runs.pivot_table(index=["construction", "seed"], columns=runs["permute_inputs"].fillna(-1),
                             values="alg_conn_in")
    assert np.array_equal(pairs[-1.0].to_numpy(), pairs[2.0].to_numpy())
    # the layer fingerprints (the graphs themselves) agree too, while the accuracies may differ
    prints = runs.assign(fp=runs["layers"].map(lambda t: json.loads(t)[0]["fingerprint"]))
    by_order = prints.pivot_table(index=["construction", "seed"], columns=prints["permute_inputs"].fillna(-1),
                                  values="fp", aggfunc="first")
    assert (by_order[-1.0] == by_order[2.0]).all()
    report = make_report(db, tmp_path / "out", seed=0)
    assert "L1" in report.verdicts()
    assert connectivity_agreement(report.locality.table) == (2, 0.0)


def test_the_locality_preset_has_the_documented_grid():
    runs = expand(load_spec("locality"))
    assert len(runs) == 200
    assert {c.permute_inputs for c in runs} == {None, 1}
    for order in (None, 1):
        mine = [c for c in runs if c.permute_inputs == order]
        assert len(mine) == 100 and {c.seed for c in mine} == {0, 1, 2, 3}
        assert len({c.construction for c in mine}) == 7
        assert {c.degrees[0] for c in mine if c.degrees} == {3, 9, 30, 90}   # 1, 3, 10, 30 % of 300
    assert {(c.hidden, c.epochs, c.lr, c.limit_train, c.loss, c.init) for c in runs} == {
        ((300,), 15, 0.1, 10000, "mse", "glorot")}
