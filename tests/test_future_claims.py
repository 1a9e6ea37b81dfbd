"""Claims F1-F5 (report/future.py) on synthetic stores written with the store API: for each of
F1-F4 one store where its rule holds and one where it does not."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from sparsetopo.report import make_report
from sparsetopo.report.future import pooled_lead, split_architectures
from sparsetopo.report.results import load_table
from sparsetopo.report.stats import make_rng
from sparsetopo.sweep import SweepStore

SPARSE = ("random_edge", "regular_rotating", "random_rotating")
DENSITIES = {"cnn": (0.1, 0.25, 0.5), "lstm": (0.1, 0.25)}


def write_runs(db, architecture: str, lead: float, permuted_lead: float, sparse_gap: float, seeds=range(3)):
    """Runs of ``architecture`` in the store ``db``: the rotating constructions beat random_edge
    by ``lead`` (channels or pixels in order) and by ``permuted_lead`` (permuted); the best
    sparse network at each density trails dense by ``sparse_gap``; the network's algebraic
    connectivity rises with accuracy. Small seed noise."""
    rng = np.random.default_rng(0)
    dense_accuracy = 0.9
    with SweepStore(db) as store:
        for permute in (None, 1):
            advantage = lead if permute is None else permuted_lead
            for construction in (*SPARSE, "fully_connected"):
                for density in ((1.0,) if construction == "fully_connected" else DENSITIES[architecture]):
                    for seed in seeds:
                        if construction == "fully_connected":
                            accuracy = dense_accuracy
                        else:   # the best construction (rotating when advantage > 0) sits sparse_gap below dense
                            top = dense_accuracy - sparse_gap
                            accuracy = top - max(advantage, 0) + (advantage if construction != "random_edge" else 0)
                        accuracy += rng.normal(0, 0.001)
                        config = {"architecture": architecture, "density": density, "construction": construction,
                                  "seed": seed, "permute_inputs": permute, "hidden": [16]}
                        store.add_result({
                            "run_id": f"{architecture}-{construction}-{density}-{seed}-{permute}",
                            "dataset": "fashion-mnist", "hidden": "16", "construction": construction,
                            "seed": seed, "permute_inputs": permute, "status": "ok", "epochs": 1,
                            "test_accuracy": accuracy, "density": density, "config": json.dumps(config),
                            "metrics": {"layers": [{}], "network": {"algebraic_connectivity": accuracy * 10}},
                        })


def report_claims(tmp_path, *stores):
    db = tmp_path / "sweep.sqlite"
    for architecture, lead, permuted_lead, gap in stores:
        write_runs(db, architecture, lead, permuted_lead, gap)
    report = make_report(db, tmp_path / "out", seed=0)
    return {c.id: c for c in report.claims}


@pytest.mark.parametrize("lead, verdict", [(0.02, "supported"), (-0.02, "not supported")])
def test_f1_reads_the_lead_over_random_edges_in_channel_order(tmp_path, lead, verdict):
    claims = report_claims(tmp_path, ("cnn", lead, 0.0, 0.005))
    assert claims["F1"].verdict == verdict
    assert claims["F1"].value == pytest.approx(lead, abs=0.002)
    assert claims["F1"].numbers["other_order"]["value"] == pytest.approx(0.0, abs=0.002)
    assert set(claims) == {"F1", "F2", "F5"}   # no lstm runs: no F3, F4; no MLP runs: no C1-C8


@pytest.mark.parametrize("gap, verdict", [(0.005, "supported"), (0.03, "not supported")])
def test_f2_asks_whether_the_best_25_percent_cnn_is_within_a_point_of_dense(tmp_path, gap, verdict):
    claims = report_claims(tmp_path, ("cnn", 0.01, 0.0, gap))
    assert claims["F2"].verdict == verdict
    assert claims["F2"].value == pytest.approx(-gap, abs=0.002)
    assert claims["F2"].numbers["best"] in ("regular_rotating", "random_rotating")


@pytest.mark.parametrize("permuted_lead, verdict", [(0.02, "supported"), (-0.02, "not supported")])
def test_f3_reads_the_lead_with_pixels_permuted_within_rows(tmp_path, permuted_lead, verdict):
    # a raster-order lead of the other sign: F3 must read the permuted runs (W_hh's graph alone)
    claims = report_claims(tmp_path, ("lstm", -permuted_lead, permuted_lead, 0.01))
    assert claims["F3"].verdict == verdict
    assert claims["F3"].value == pytest.approx(permuted_lead, abs=0.002)
    assert claims["F3"].numbers["other_order"]["value"] == pytest.approx(-permuted_lead, abs=0.002)


@pytest.mark.parametrize("gap, verdict", [(0.01, "supported"), (0.05, "not supported")])
def test_f4_asks_whether_a_10_percent_lstm_is_within_two_points_of_dense(tmp_path, gap, verdict):
    claims = report_claims(tmp_path, ("lstm", 0.0, 0.0, gap))
    assert claims["F4"].verdict == verdict
    assert claims["F4"].value == pytest.approx(-gap, abs=0.002)


def test_f5_and_the_documents_cover_both_architectures(tmp_path):
    claims = report_claims(tmp_path, ("cnn", 0.02, 0.0, 0.005), ("lstm", 0.02, 0.02, 0.01))
    assert set(claims) == {"F1", "F2", "F3", "F4", "F5"}
    # connectivity is accuracy * 10 in these stores: a perfect rank correlation in each
    assert claims["F5"].verdict == "supported"
    assert set(claims["F5"].numbers["by_architecture"]) == {"cnn", "lstm"}
    assert claims["F5"].numbers["by_architecture"]["cnn"]["value"] == pytest.approx(1.0)
    assert claims["F5"].value == pytest.approx(1.0) and claims["F5"].ci_low > 0
    for note in claims["F5"].notes:   # written as every other number and interval of the report
        assert re.fullmatch(r"(cnn|lstm): rho -?\d\.\d{3}, interval \[-?\d\.\d{3}, -?\d\.\d{3}\], \d+ runs", note), note
    written = {c["id"]: c for c in json.loads((tmp_path / "out" / "claims.json").read_text())}
    assert written["F3"]["verdict"] == "supported" and written["F2"]["verdict"] == "supported"
    for name in ("report.md", "report.html"):
        text = (tmp_path / "out" / name).read_text()
        assert "F4" in text and "within 2 points of the dense LSTM" in text
    for kind in ("cnn", "lstm"):   # a figure per architecture, both orders
        assert (tmp_path / "out" / f"future_{kind}.png").stat().st_size > 10_000
        assert f"future_{kind}.png" in (tmp_path / "out" / "report.md").read_text()


def test_mlp_runs_keep_their_claims_beside_the_other_architectures(tmp_path):
    db = tmp_path / "sweep.sqlite"
    write_runs(db, "cnn", 0.02, 0.0, 0.005)
    table = load_table(db)
    mlp, others, notes = split_architectures(table)
    assert mlp.empty and len(others) == len(table) and "left out of claims C1-C8" in notes[0]


def test_the_pooled_lead_has_no_interval_with_one_seed(tmp_path):
    db = tmp_path / "sweep.sqlite"
    write_runs(db, "cnn", 0.02, 0.0, 0.005, seeds=range(1))
    _, runs, _ = split_architectures(load_table(db))
    estimate, cells = pooled_lead(runs[runs["permute_inputs"].isna()], make_rng(0, "t"))
    assert estimate.value == pytest.approx(0.02, abs=0.002) and not estimate.has_interval
    assert len(cells) == 2 * len(DENSITIES["cnn"])


def test_the_docs_table_script_writes_each_claim_as_the_report_does(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    report_claims(tmp_path, ("cnn", 0.02, 0.0, 0.005), ("lstm", -0.02, -0.02, 0.05))
    script = Path(__file__).resolve().parents[1] / "examples" / "future_table.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "out" / "claims.json")],
                          capture_output=True, text=True, check=True)
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ") for line in done.stdout.splitlines()[2:]}
    assert sorted(rows) == ["F1", "F2", "F3", "F4", "F5"]   # the C claims of the same file are not rows
    report = (tmp_path / "out" / "report.md").read_text()
    for claim in json.loads((tmp_path / "out" / "claims.json").read_text()):
        if claim["id"] in rows:
            _, statement, measured, ci, runs, verdict = rows[claim["id"]]
            # the report's own claims row holds the same interval, value and verdict
            line = next(l for l in report.splitlines() if l.startswith(f"| {claim['id']} |"))
            assert f"| {ci} |" in line and measured.split(" ")[0] in line
            assert verdict.strip(" |*\n") == claim["verdict"] and int(runs) == claim["n_runs"]
    assert rows["F3"][5].strip(" |*") == "not supported"
    assert subprocess.run([sys.executable, str(script)], capture_output=True).returncode == 2
