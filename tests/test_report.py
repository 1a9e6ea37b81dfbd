"""Synthetic results tables shaped like the sweep store's, for the report's tests.

``make_runs`` builds one row per (hidden, construction, degrees, dropout, seed, backend) with
an accuracy given by ``accuracy(row)`` plus seeded noise, so each test can make a claim hold,
fail, or be undecidable by changing one knob.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pandas as pd

SPARSE = ("regular_rotating", "fibonacci_rotating", "long_short_rotating", "random_rotating",
          "random_regular", "random_edge")
BONUS = {"regular_rotating": 0.004, "fibonacci_rotating": 0.006, "long_short_rotating": 0.0,
         "random_rotating": -0.01, "random_regular": -0.005, "random_edge": -0.02, "fully_connected": 0.0}


def default_accuracy(row) -> float:
    if row["construction"] == "fully_connected":
        return 0.95
    d = row["density_in"]
    drop = 0.35 * np.exp(-d / 0.025) + 0.004 * (10 - row["k_out"])
    bonus = BONUS[row["construction"]] * (2.0 if d < 0.1 else 1.0)
    return 0.95 - drop + bonus


def default_seconds(row) -> float:
    if row["backend"] == "sparse":
        return 0.1 + 0.9 * row["density"]
    return 1.0


def make_runs(hidden=(100, 300), k_in=(3, 6, 15, 30, 60, 90), k_out=(3, 10), constructions=SPARSE,
              seeds=(0, 1, 2), accuracy=default_accuracy, noise=0.002, dropout=True, deep=True,
              backends=("masked",), seconds=default_seconds, dataset="digits", weight_slope=-0.5,
              hidden_slope=-0.3, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n_in, n_out = 64, 10
    rows = []

    def add(hidden_sizes, construction, degrees, drop, s, backend):
        h1 = hidden_sizes[0]
        sizes = [n_in, *hidden_sizes, n_out]
        conns = sum(sizes[l] * degrees[l] for l in range(len(degrees)))
        dense = sum(sizes[l] * sizes[l + 1] for l in range(len(degrees)))
        row = {
            "run_id": f"r{len(rows)}", "position": len(rows), "status": "ok", "dataset": dataset,
            "hidden": ",".join(map(str, hidden_sizes)), "hidden1": h1, "n_hidden_layers": len(hidden_sizes),
            "construction": construction, "degrees": ",".join(map(str, degrees)),
            "k_in": degrees[0], "k_out": degrees[-1], "density_in": degrees[0] / h1,
            "density": conns / dense, "dropout_in": drop[0], "dropout_hidden": drop[1],
            "epochs": 50, "batch_size": 32, "lr": 0.5, "momentum": 0.9, "init": "glorot",
            "backend": backend, "seed": s, "parameters": conns + sum(sizes[1:]),
        }
        acc = accuracy(row)
        if drop[0] > 0:
            acc -= 0.003
        row["test_accuracy"] = float(np.clip(acc + rng.normal(0, noise), 0, 1))
        row["train_loss"] = float(0.1 * (1 - row["test_accuracy"]))
        spe = seconds(row) * (1 + rng.normal(0, 0.02))
        row["seconds_per_epoch"] = spe
        row["seconds"] = spe * 50
        scale = (degrees[0] / 10) ** weight_slope * (h1 / 100) ** hidden_slope
        w = {"max": 1.2 * scale + rng.normal(0, 0.01), "min": -1.1 * scale + rng.normal(0, 0.01),
             "mean": 0.0, "std": 0.3 * scale + rng.normal(0, 0.003), "nnz": conns}
        row["weight_stats"] = json.dumps([w, w])
        row["history"] = json.dumps([{"epoch": 50, "train_loss": row["train_loss"],
                                      "test_accuracy": row["test_accuracy"], "seconds": spe}])
        for k in ("max", "min", "mean", "std"):
            row[f"w0_{k}"] = w[k]
            row[f"wlast_{k}"] = w[k]
        row["alg_conn_in"] = None
        row["spectral_gap_in"] = None
        row["alg_conn_net"] = None
        rows.append(row)

    drops = [(0.0, 0.0)] + ([(0.2, 0.5)] if dropout else [])
    for backend in backends:
        for s in seeds:
            for drop in drops:
                for h in hidden:
                    add([h], "fully_connected", [h, n_out], drop, s, backend)
                    for c in constructions:
                        for ki in k_in:
                            for ko in k_out:
                                if ki < h:
                                    add([h], c, [ki, ko], drop, s, backend)
            if deep:
                add([60, 30], "fully_connected", [60, 30, n_out], (0.0, 0.0), s, backend)
                for c in ("regular_rotating", "fibonacci_rotating"):
                    for frac in (0.1, 0.3, 0.6):
                        add([60, 30], c, [round(60 * frac), round(30 * frac), n_out], (0.0, 0.0), s, backend)
    return pd.DataFrame(rows)


def write_store(frame: pd.DataFrame, path) -> None:
    """A real store's tables, its runs table replaced by ``frame``."""
    from sparsetopo.sweep import SweepStore

    SweepStore(path).close()
    with sqlite3.connect(path) as con:
        frame.to_sql("runs", con, index=False, if_exists="replace")


# ================================================================================================
# The tests
# ================================================================================================

import matplotlib.image as mpimg  # noqa: E402
import pytest  # noqa: E402

from sparsetopo.cli.app import main as cli_main  # noqa: E402
from sparsetopo.report import claims, figures, graph, make_report, results, stats  # noqa: E402

ALLOWED = {"supported", "not supported", "inconclusive"}


def table(**kw) -> pd.DataFrame:
    return results.normalise(make_runs(**kw))


def check(cid, frame, seed=0):
    return claims.CHECKS[cid](frame, stats.make_rng(seed, cid))


def flat(value):
    return lambda row: 0.95 if row["construction"] == "fully_connected" else value


# -- stats -------------------------------------------------------------------------------------

def test_bootstrap_is_seeded_and_needs_two_runs():
    a, b = [0.9, 0.91, 0.92], [0.8, 0.82]
    one = stats.diff_ci(a, b, stats.make_rng(3, "x"))
    two = stats.diff_ci(a, b, stats.make_rng(3, "x"))
    assert one == two and one.low <= one.value <= one.high
    assert not stats.diff_ci(a, [0.8], stats.make_rng(0)).has_interval
    assert stats.verdict_above(stats.Estimate(0.0, 0.1, 0.2, 3), 0.05) == "supported"
    assert stats.verdict_above(stats.Estimate(0.0, -0.2, -0.1, 3), 0.05) == "not supported"
    assert stats.verdict_above(stats.Estimate(0.0, 0.0, 0.1, 3), 0.05) == "inconclusive"


def test_average_ranks_match_scipy():
    from scipy import stats as ss

    r = np.random.default_rng(0)
    for _ in range(50):
        x = r.integers(0, 4, size=15).astype(float)
        y = r.normal(size=15)
        assert np.allclose(stats.average_ranks(x), ss.rankdata(x))
        assert np.isclose(stats.rank_correlation(x, y), ss.spearmanr(x, y).statistic)


# -- claims: holds / fails / inconclusive ---------------------------------------------------------

C1_GRID = dict(hidden=(300,), constructions=("regular_rotating",), k_in=(3, 6, 15, 30, 60), k_out=(10,),
               dropout=False, deep=False)


def test_c1_holds_fails_inconclusive():
    held = check("C1", table(**C1_GRID))
    assert held.verdict == "supported", held
    assert held.numbers["density_in_checked"] == pytest.approx(0.1)
    assert held.numbers["first_drop_density_in"] < 0.1  # the drop comes only well below 10%
    assert check("C1", table(**C1_GRID, accuracy=flat(0.90))).verdict == "not supported"
    undecided = check("C1", table(**{**C1_GRID, "seeds": (0,)}))
    assert undecided.verdict == "inconclusive" and undecided.ci_low is None


C2_GRID = dict(hidden=(100, 300), constructions=("regular_rotating", "fibonacci_rotating"), k_in=(30, 60, 90),
               k_out=(10,), dropout=False, deep=False)


def test_c2_holds_fails_inconclusive():
    held = check("C2", table(**C2_GRID, accuracy=flat(0.955)))
    assert held.verdict == "supported" and held.numbers["hidden"] == 300
    assert check("C2", table(**C2_GRID, accuracy=flat(0.93))).verdict == "not supported"
    # at the threshold (-0.5 point) the interval straddles it
    assert check("C2", table(**C2_GRID, accuracy=flat(0.945), noise=0.003)).verdict == "inconclusive"
    assert check("C2", table(**{**C2_GRID, "constructions": ("random_edge",)})).verdict == "inconclusive"


C3_GRID = dict(hidden=(100,), k_in=(3, 6, 30), k_out=(10,), dropout=False, deep=False)


def test_c3_holds_fails_inconclusive():
    held = check("C3", table(**C3_GRID))
    assert held.verdict == "supported", held.numbers
    assert held.numbers["friedman_p"] < 0.05
    same = table(**C3_GRID, noise=0.0005, accuracy=lambda r: 0.95 - 0.1 * (r["k_in"] < 10))
    failed = check("C3", same)
    assert failed.verdict == "not supported" and failed.numbers["verdict_differ"] == "not supported"
    dense_only = check("C3", table(**{**C3_GRID, "k_in": (15, 30, 60)}))  # nothing below 10%: Fibonacci untestable
    assert dense_only.verdict == "inconclusive" and dense_only.numbers["verdict_differ"] == "supported"


C4_GRID = dict(hidden=(300,), constructions=("regular_rotating", "fibonacci_rotating"), k_in=(30, 60),
               k_out=(10,), deep=False)


def test_c4_holds_fails_inconclusive():
    assert check("C4", table(**C4_GRID, accuracy=flat(0.96))).verdict == "supported"

    def flips(row):
        if row["construction"] == "fully_connected":
            return 0.95
        return 0.93 if row["dropout_in"] > 0 else 0.96
    failed = check("C4", table(**C4_GRID, accuracy=flips))
    assert failed.verdict == "not supported" and failed.numbers["sign_agreement"] == 0.0
    assert check("C4", table(**C4_GRID, dropout=False)).verdict == "inconclusive"


C5_GRID = dict(hidden=(100,), constructions=(), k_out=(10,), dropout=False, deep=True)


def test_c5_holds_fails_inconclusive():
    held = check("C5", table(**C5_GRID))
    assert held.verdict == "supported" and 0.2 <= held.numbers["density_mean"] <= 0.4
    assert check("C5", table(**C5_GRID, accuracy=flat(0.93))).verdict == "not supported"
    assert check("C5", table(**C5_GRID, seeds=(0,))).verdict == "inconclusive"
    assert check("C5", table(**{**C5_GRID, "deep": False})).verdict == "inconclusive"


C6_GRID = dict(hidden=(300,), constructions=("regular_rotating", "random_edge", "random_regular"),
               k_in=(3, 6, 15, 30, 60), k_out=(10,), dropout=False, deep=False, noise=0.01)


def test_c6_holds_fails_inconclusive():
    frame = table(**C6_GRID)
    held = check("C6", frame.assign(alg_conn_net=frame["test_accuracy"] * 10))
    assert held.verdict == "supported", held.numbers
    noise = np.random.default_rng(5).random(len(frame))
    assert check("C6", frame.assign(alg_conn_net=noise)).verdict == "not supported"
    tie = check("C6", frame.assign(alg_conn_net=frame["density_in"]))  # same ranks as density: no difference
    assert tie.verdict == "inconclusive"


C7_GRID = dict(hidden=(100, 300), constructions=("regular_rotating",), k_in=(3, 6, 15, 30, 60), k_out=(10,),
               dropout=False, deep=False)


def test_c7_holds_fails_inconclusive():
    held = check("C7", table(**C7_GRID))
    assert held.verdict == "supported" and held.value < 0
    assert check("C7", table(**C7_GRID, weight_slope=0.5)).verdict == "not supported"
    one_size = check("C7", table(**{**C7_GRID, "hidden": (100,)}))  # no second hidden size
    assert one_size.verdict == "inconclusive"
    assert one_size.numbers["rho_w0_max_vs_hidden_size"] is None


C8_GRID = dict(hidden=(100,), constructions=("regular_rotating",), k_in=(6, 30), k_out=(10,), dropout=False,
               deep=False, backends=("masked", "sparse"))


def test_c8_holds_fails_inconclusive():
    held = check("C8", table(**C8_GRID))
    assert held.verdict == "supported" and held.numbers["best_backend"] == "sparse" and held.value < 1
    slower = check("C8", table(**C8_GRID, seconds=lambda r: 0.5 if r["construction"] == "fully_connected" else 1.0))
    assert slower.verdict == "not supported"
    assert check("C8", table(**C8_GRID, seeds=(0,))).verdict == "inconclusive"


def test_every_claim_on_an_empty_slice_is_inconclusive():
    empty = table(hidden=(100,), constructions=(), dropout=False, deep=False).iloc[:0]
    for c in claims.check_all(empty, empty):
        assert c.verdict == "inconclusive" and c.notes, c.id


# -- graph measures ---------------------------------------------------------------------------------

def networkx_fiedler(topologies) -> float:
    """Independent reference: second smallest Laplacian eigenvalue of the stacked graph, by networkx."""
    import networkx as nx

    graph, offset = nx.Graph(), 0
    sizes = [topologies[0].n_in] + [t.n_out for t in topologies]
    graph.add_nodes_from(range(sum(sizes)))
    for t, n_in in zip(topologies, sizes):
        graph.add_edges_from((offset + int(i), offset + n_in + int(j)) for i, j in zip(t.rows, t.indices))
        offset += n_in
    return float(sorted(nx.laplacian_spectrum(graph))[1])


def test_connectivity_filled_from_rebuilt_topologies():
    from sparsetopo.seeding import derive_seed
    from sparsetopo.topology import build_stack

    frame = table(hidden=(20,), constructions=("regular_rotating", "random_regular"), k_in=(2, 10), k_out=(10,),
                  seeds=(0, 1), dropout=False, deep=False)
    filled, computed = graph.fill_connectivity(frame)
    assert computed == len(frame) and filled["alg_conn_in"].notna().all()
    row = filled[filled["construction"].eq("random_regular") & filled["seed"].eq(1) & filled["k_in"].eq(10)].iloc[0]
    topo = build_stack([64, 20, 10], "random_regular", [10, 10], seed=derive_seed(1, "topology"))
    assert row["alg_conn_in"] == pytest.approx(networkx_fiedler(topo[:1]), rel=1e-6)
    assert row["alg_conn_net"] == pytest.approx(networkx_fiedler(topo), rel=1e-6)
    # every row, deterministic constructions included, against networkx on its own rebuilt graph
    for _, r in filled.iterrows():
        k = int(r["k_in"])
        seed = derive_seed(int(r["seed"]), "topology") if r["construction"] == "random_regular" else 0
        layers = build_stack([64, 20, 10], r["construction"], [k, 10], seed=seed)
        assert r["alg_conn_in"] == pytest.approx(networkx_fiedler(layers[:1]), rel=1e-6, abs=1e-9)


# -- figures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def figure_runs():
    frame = table(hidden=(100, 300), constructions=("regular_rotating", "fibonacci_rotating", "random_regular"),
                  k_in=(3, 6, 15, 30), k_out=(3, 10), seeds=(0, 1), backends=("masked", "sparse"))
    conn = frame["density_in"] * 5 + np.where(frame["construction"].eq("random_regular"), 1.0, 0.0)
    frame = frame.assign(alg_conn_in=conn, alg_conn_net=conn / 2)
    return results.analysis_slice(frame).runs, results.analysis_slice(frame, keep_backends=True).runs


@pytest.mark.parametrize("name", list(figures.FIGURES))
def test_figure_png_and_pdf_are_not_blank(name, figure_runs, tmp_path):
    runs, everything = figure_runs
    fig = figures.FIGURES[name](everything if name == "timing" else runs, tmp_path, stats.make_rng(0, name))
    assert fig.skipped is None and fig.png.suffix == ".png" and fig.pdf.suffix == ".pdf"
    image = mpimg.imread(fig.png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert float(image[..., :3].var()) > 1e-3  # not a blank canvas
    head = fig.pdf.read_bytes()
    assert head.startswith(b"%PDF") and len(head) > 2000


def test_figures_without_their_data_are_skipped_with_a_reason(tmp_path):
    runs = table(hidden=(100,), constructions=("regular_rotating",), k_in=(6,), k_out=(10,), dropout=False,
                 deep=False)
    made = {f.name: f for f in figures.make_figures(runs, runs, tmp_path)}
    assert made["fig4_dropout_deep"].skipped and "dropout" in made["fig4_dropout_deep"].skipped
    assert made["fig2_accuracy_contour"].skipped and made["fig2_accuracy_contour"].png is None
    assert made["edge_matrices"].skipped is None  # needs no runs


# -- documents and CLI ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "sweep.sqlite"
    frame = make_runs(hidden=(40,), constructions=("regular_rotating", "fibonacci_rotating", "random_edge"),
                      k_in=(2, 4, 12, 20), k_out=(3, 10), seeds=(0, 1), deep=True)
    frame.loc[frame.index[:2], "status"] = "diverged"
    frame.loc[frame.index[-3:], "lr"] = 0.01  # a second protocol: left out, with a note
    write_store(frame, path)
    return path


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return make_report(store, out, seed=1)


def test_claims_json_lists_c1_to_c8(report):
    data = json.loads((report.out_dir / "claims.json").read_text())
    assert [c["id"] for c in data] == [f"C{i}" for i in range(1, 9)]
    for c in data:
        assert c["verdict"] in ALLOWED
        assert {"statement", "ci_low", "ci_high", "value", "numbers", "operationalisation"} <= set(c)
        assert c["statement"] and c["operationalisation"]


def test_html_and_markdown_hold_claims_figures_protocol(report):
    page = (report.out_dir / "report.html").read_text()
    assert "<table class='claims'>" in page
    for i in range(1, 9):
        assert f"<td>C{i}</td>" in page
    made = [f for f in report.figures if not f.skipped]
    assert page.count("data:image/png;base64,") == len(made) >= 6
    assert "diverged" in page and "another protocol" in page
    assert "lr" in page and "numpy" in page and "cpu count" in page
    md = (report.out_dir / "report.md").read_text()
    assert "| C8 |" in md and "![Figure 2 (left)" in md and "## Sweep and protocol" in md
    for f in made:
        assert (report.out_dir / f.png.name).is_file() and (report.out_dir / f.pdf.name).is_file()


def test_report_is_deterministic_for_a_seed(store, report, tmp_path):
    again = make_report(store, tmp_path, seed=1)
    assert (tmp_path / "claims.json").read_text() == (report.out_dir / "claims.json").read_text()
    assert again.verdicts() == report.verdicts()


def test_cli_report_from_a_store(store, tmp_path, capsys):
    assert cli_main(["report", "--db", str(store), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "C1 " in out and (tmp_path / "r" / "report.html").is_file()


def test_cli_report_missing_store_is_a_one_line_error(tmp_path, capsys):
    assert cli_main(["report", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.sqlite" in err and "--db" in err


def test_cli_report_rejects_a_file_that_is_not_a_store(tmp_path, capsys):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not sqlite")
    assert cli_main(["report", "--db", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "is not a sparsetopo sweep store" in capsys.readouterr().err


def test_c4_shows_its_own_rule_where_the_threshold_goes():
    """C4's verdict compares two classes, not one interval with -0.5 pt: the table says so."""
    from sparsetopo.report.document import _threshold

    c4 = check("C4", table(**C4_GRID, accuracy=flat(0.96)))
    assert "same class with and without dropout" in c4.rule and "-0.5 pt" in c4.rule
    assert _threshold(c4) == c4.rule
    c1 = check("C1", table(hidden=(100,), constructions=("regular_rotating",), k_in=(5, 10, 50), k_out=(10,),
                           seeds=(0, 1), dropout=False, deep=False))
    assert c1.rule == "" and _threshold(c1) != ""


def test_a_partly_done_sweep_is_stated_in_the_report(tmp_path):
    from sparsetopo.sweep import SweepStore

    path = tmp_path / "partial.sqlite"
    frame = make_runs(hidden=(40,), constructions=("regular_rotating", "random_edge"), k_in=(2, 12), k_out=(10,),
                      seeds=(0, 1), dropout=False, deep=False)
    write_store(frame, path)
    with SweepStore(path) as store:  # the plan holds the stored runs and 5 more
        store.plan([(rid, {}) for rid in frame["run_id"]] + [(f"missing{i}", {}) for i in range(5)])
    summary = make_report(path, tmp_path / "out", seed=0)
    partly = [n for n in summary.notes if "partly done" in n]
    assert partly and f"{len(frame)} of {len(frame) + 5} planned" in partly[0]
    assert "partly done" in (tmp_path / "out" / "report.md").read_text()
