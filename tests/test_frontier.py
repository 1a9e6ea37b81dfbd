"""Claims B1-B4, held to synthetic stores built so that each claim is supported in one and not
supported in another, the accuracy table, the Pareto figure, and their place in the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sparsetopo.report import frontier, results, stats

SPARSE = ["regular_rotating", "fibonacci_rotating", "random_regular", "random_edge", "butterfly"]
DENSITIES = (0.03, 0.1, 0.3)
HIDDEN = 320   # 80 blocks of 4, 20 of 16: block 16 cannot reach 3% (1 of 20 blocks is 5%)


def base_accuracy(row) -> float:
    return 0.80 + 0.05 * np.log10(row["density_in"] / 0.03)


def make_runs(accuracy=base_accuracy, seconds=lambda row: 10.0 * row["density_in"] / row["block"] ** 0.5 + 1,
              blocks=(1, 4, 16), constructions=SPARSE, seeds=(0, 1, 2, 3), permuted=True, noise=0.002,
              seed=0, raw=False) -> pd.DataFrame:
    """Runs of 784-320-10 at each construction, block, density, seed and (optionally) a permuted
    input order; block runs sit at the density their whole number of output blocks gives."""
    rng = np.random.default_rng(seed)
    rows = []
    for construction in [*constructions, "fully_connected"]:
        for block in blocks if construction != "fully_connected" else (1,):
            for density in DENSITIES if construction != "fully_connected" else (1.0,):
                for order in ("raster", "permuted") if permuted else ("raster",):
                    for s in seeds:
                        blocks_out = -(-HIDDEN // block)
                        k_in = max(1, int(np.floor(density * blocks_out + 0.5)))   # as sweeps round
                        row = {"run_id": f"r{len(rows)}", "position": len(rows), "status": "ok", "dataset": "fashion-mnist",
                               "hidden": str(HIDDEN), "construction": construction, "block": block,
                               "density_in": k_in / blocks_out, "k_in": k_in, "k_out": 10,
                               "seed": s, "dropout_in": 0.0, "dropout_hidden": 0.0, "epochs": 10,
                               "batch_size": 32, "lr": 0.5, "momentum": 0.9, "init": "glorot", "backend": "auto",
                               "permute_inputs": 7 if order == "permuted" else None, "order": order}
                        row["test_accuracy"] = float(accuracy(row) + rng.normal(0, noise))
                        row["seconds"] = float(seconds(row) * (1 + rng.normal(0, 0.02)))
                        rows.append(row)
    frame = pd.DataFrame(rows).drop(columns="order")
    return frame if raw else results.normalise(frame)


def run(cid, frame):
    checks = {"B1": frontier.check_b1, "B2": frontier.check_b2, "B3": frontier.check_b3, "B4": frontier.check_b4}
    return checks[cid](frontier._prepare(frame), stats.make_rng(0, cid))


def with_block_loss(loss):
    return lambda row: base_accuracy(row) - (loss if row["block"] == 16 else 0.0)


def test_b1_supported_when_blocks_keep_the_accuracy_and_not_when_they_lose_points():
    assert run("B1", make_runs(with_block_loss(0.002))).verdict == "supported"
    lost = run("B1", make_runs(with_block_loss(0.03)))
    assert lost.verdict == "not supported" and lost.value == pytest.approx(-0.03, abs=0.003)


def test_b2_follows_which_kind_reaches_accuracy_sooner():
    fast_blocks = make_runs(seconds=lambda row: 10.0 * row["density_in"] / (3.0 if row["block"] > 1 else 1.0) + 1)
    assert run("B2", fast_blocks).verdict == "supported"
    slow_blocks = make_runs(accuracy=lambda row: base_accuracy(row) - (0.02 if row["block"] > 1 else 0.0),
                            seconds=lambda row: 10.0 * row["density_in"] * (3.0 if row["block"] > 1 else 1.0) + 1)
    claim = run("B2", slow_blocks)
    assert claim.verdict == "not supported" and claim.value < 0


def locality(raster_lead, permuted_lead):
    def accuracy(row):
        lead = 0.0
        if row["construction"] in frontier.ROTATING:
            lead = raster_lead if row["permute_inputs"] is None else permuted_lead
        return base_accuracy(row) + lead
    return accuracy


def test_b3_supported_when_the_lead_vanishes_under_permutation_and_not_when_it_reverses():
    assert run("B3", make_runs(locality(0.02, 0.0))).verdict == "supported"
    assert run("B3", make_runs(locality(-0.02, 0.0))).verdict == "not supported"
    claim = run("B3", make_runs(locality(0.02, 0.0), permuted=False))
    assert claim.verdict == "inconclusive" and "permuted" in claim.notes[0]


def butterfly_gap(gap):
    return lambda row: base_accuracy(row) + (gap if row["construction"] == "butterfly" else 0.0)


def test_b4_reads_at_least_as_accurate_as_within_half_a_point():
    assert run("B4", make_runs(butterfly_gap(-0.001))).verdict == "supported"
    assert run("B4", make_runs(butterfly_gap(-0.03))).verdict == "not supported"


def test_one_seed_gives_no_interval_and_an_inconclusive_verdict():
    for cid in ("B1", "B2", "B4"):
        claim = run(cid, make_runs(seeds=(0,)))
        assert claim.verdict == "inconclusive" and claim.ci_low is None, cid


def test_fronts_are_the_best_accuracy_within_each_budget():
    times, accuracy = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.9, 0.7])
    assert frontier.fronts(times, accuracy, np.array([0.5, 1.0, 2.5, 9.0])).tolist() == [-np.inf, 0.5, 0.9, 0.9]


def test_table_matches_each_block_to_its_block_1_density(tmp_path):
    frame = make_runs(with_block_loss(0.01), noise=0.0, permuted=False)
    header, rows = frontier.accuracy_table(frontier._prepare(frame))
    assert header[-3:] == ["block 1", "block 4", "block 16"]
    row = next(r for r in rows if r[1] == "regular_rotating" and r[2] == "10%")
    assert row[-1].endswith("(-1.00)") and row[-2].endswith("(+0.00)")   # 10% is 8 of 80 and 2 of 20 blocks
    sparsest = next(r for r in rows if r[1] == "regular_rotating" and r[2] == "3.12%")   # 10 of 320
    assert sparsest[-1] == ""   # 1 of 20 blocks is 5%: no block-16 partner within the factor
    assert {r[0] for r in rows} == {f"hidden {HIDDEN}"}   # the hidden sizes as the store writes them


def test_the_report_gets_the_claims_the_table_and_the_figure(tmp_path):
    from test_report import write_store

    from sparsetopo.report import make_report

    write_store(make_runs(raw=True), tmp_path / "s.sqlite")
    summary = make_report(tmp_path / "s.sqlite", tmp_path / "out")
    ids = [c.id for c in summary.claims]
    assert {"B1", "B2", "B3", "B4"} <= set(ids)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "Accuracy per second" in text and "| block 16 |" in text
    assert (tmp_path / "out" / "frontier.png").stat().st_size > 10_000 and (tmp_path / "out" / "frontier.pdf").exists()
    assert "left out of claims C1-C8" in text


def test_training_seconds_are_the_epochs_not_the_run_s_compilation_or_evaluation():
    frame = make_runs(with_block_loss(0.0), noise=0.0, permuted=False, raw=True)
    frame["epochs_done"] = 10
    frame["seconds_per_epoch"] = frame["seconds"] / 10
    first = frame.index[0]
    frame.loc[first, "seconds"] += 30.0   # a worker's first run: its kernels compiled before epoch 1
    prepared = frontier._prepare(results.normalise(frame))
    assert prepared["seconds"].to_numpy() == pytest.approx((frame["seconds_per_epoch"] * 10).to_numpy())
    old = frame.drop(columns=["seconds_per_epoch", "epochs_done"])   # stores without epoch clocks
    assert frontier._prepare(results.normalise(old)).loc[first, "seconds"] == frame.loc[first, "seconds"]
