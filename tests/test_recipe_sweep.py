"""Recipes in sweep specs, the store and the report: the protocol axis, run ids, claims per
recipe and the random null."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparsetopo.errors import SparsetopoError
from sparsetopo.report import make_report, results
from sparsetopo.report.recipes import claims_table, compare_recipes, null_table, random_null, recipes_in
from sparsetopo.sweep import load_results, load_spec, run_sweep
from sparsetopo.sweep.spec import expand, expand_recipes, parse_spec, run_id, with_fallback
from sparsetopo.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
from test_report import make_runs, write_store  # noqa: E402

SPEC = """
[sweep]
name = "recipes"
[protocol]
dataset = "digits"
epochs = 1
batch_size = 32
limit_train = 96
lr = 0.5

[recipes.paper]
[recipes."paper+sparse_init"]
init = "glorot_sparse"
[recipes.modern]
loss = "cross_entropy"
optimizer = "adam"
lr = 0.003
lr_schedule = "cosine"

[grid.main]
recipes = ["paper", "paper+sparse_init", "modern"]
constructions = ["random_edge", "regular_rotating"]
hidden = [8]
degrees_in = [2]
seeds = 2

[grid.plain]
constructions = ["fully_connected"]
hidden = [8]
"""


def write(tmp_path, text, name="spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- run ids ----------------------------------------------------------------------------------------

#: sha256 of the quick preset's 200 run ids joined by commas, computed before the recipe fields
#: existed: runs stored by earlier versions keep their ids.
QUICK_IDS = "1621ca52d2ebd6d19ac596ad6b3d372a2d3aaafb94aedd2aadb9f3c8d2accccc"


def test_run_ids_of_the_papers_recipe_are_unchanged_by_the_new_fields():
    ids = [run_id(c) for c in expand(load_spec("quick"))]
    assert ids[:3] == ["57bfdce5aeedace8", "20a4bfd95a6fac91", "80ee4f853630d2a6"]
    assert ids[100] == "d8744a54a9514ca2" and ids[-1] == "cfb8ab9953d7c84b"
    assert hashlib.sha256(",".join(ids).encode()).hexdigest() == QUICK_IDS
    # a non-default value of a new field is part of the id
    base = TrainConfig(dataset="digits")
    assert run_id(TrainConfig(dataset="digits", optimizer="adam")) != run_id(base)
    assert run_id(TrainConfig(dataset="digits", validation_fraction=0.1)) != run_id(base)


# -- the protocol axis --------------------------------------------------------------------------------

def test_recipes_expand_as_an_axis_and_are_spelled_out(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    runs = expand_recipes(spec)
    assert [r for _, r in runs] == ["paper"] * 4 + ["paper+sparse_init"] * 4 + ["modern"] * 4 + [None]
    modern = [c for c, r in runs if r == "modern"]
    assert {(c.loss, c.optimizer, c.lr, c.lr_schedule, c.init) for c in modern} == \
        {("cross_entropy", "adam", 0.003, "cosine", "glorot")}
    assert {c.init for c, r in runs if r == "paper+sparse_init"} == {"glorot_sparse"}
    assert {(c.lr, c.loss) for c, r in runs if r == "paper"} == {(0.5, "mse")}   # [protocol] under the recipe
    assert spec.summary()["recipes"]["modern"]["optimizer"] == "adam"
    assert len({run_id(c) for c, _ in runs}) == len(runs)


BAD_RECIPES = [
    ("[grid.main] recipes: unknown recipe 'moden': the spec defines paper, paper+sparse_init, modern",
     SPEC.replace('"paper+sparse_init", "modern"]', '"paper+sparse_init", "moden"]')),
    ("[recipes.modern] unknown field 'optimiser': did you mean 'optimizer'?",
     SPEC.replace('optimizer = "adam"', 'optimiser = "adam"')),
    ("[recipes.modern] unknown optimizer 'adamw': choose one of sgd_nesterov, adam",
     SPEC.replace('optimizer = "adam"', 'optimizer = "adamw"')),
    ("[recipes.modern] lr_schedule=3 must be a string", SPEC.replace('lr_schedule = "cosine"', "lr_schedule = 3")),
    ("[recipes.modern] construction: a recipe says how networks train, not which network",
     SPEC.replace('lr_schedule = "cosine"', 'construction = "random_edge"')),
    ("[recipes.modern] early_stop=2 needs a validation split", SPEC.replace('lr_schedule = "cosine"', "early_stop = 2")),
    ('[recipes."paper+sparse_init"] sets the same training as [recipes.paper]',
     SPEC.replace('init = "glorot_sparse"', 'init = "glorot"')),
    ("[grid.main] sets lr, which recipe 'modern' sets too",
     SPEC.replace("degrees_in = [2]", "degrees_in = [2]\nlr = 0.1")),
    ("[grid.plain] recipes: unknown recipe 'paper': the spec defines none",
     SPEC.split("[recipes.paper]")[0] + '[grid.plain]\nrecipes = ["paper"]\nhidden = [8]\n'),
]


@pytest.mark.parametrize("needle, text", BAD_RECIPES, ids=[b[0][:40] for b in BAD_RECIPES])
def test_bad_recipes_are_rejected_before_anything_trains(tmp_path, needle, text):
    path = write(tmp_path, text)
    with pytest.raises(SparsetopoError) as info:
        load_spec(path)
    assert needle in str(info.value)
    db = tmp_path / "never.sqlite"
    with pytest.raises(SparsetopoError):
        run_sweep(path, db, executor="inline")
    assert not db.exists()


def test_fallback_dataset_when_the_data_set_is_not_on_this_machine(tmp_path, monkeypatch):
    from sparsetopo.data import mnist

    text = SPEC.replace('dataset = "digits"', 'dataset = "fashion-mnist"').replace(
        'name = "recipes"', 'name = "recipes"\nfallback_dataset = "digits"')
    spec = parse_spec(text)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSETOPO_DATA", raising=False)
    source = mnist.SOURCES["fashion-mnist"]
    monkeypatch.setitem(mnist.SOURCES, "fashion-mnist",
                        mnist.IdxSource(source.name, source.mirrors, source.md5, system_dirs=()))
    fallen = with_fallback(spec)
    assert fallen.protocol["dataset"] == "digits" and "not found on this machine" in fallen.departures[-1]
    # with the files present the spec is kept as it is
    folder = tmp_path / "idx"
    folder.mkdir()
    for name in mnist.FILES:
        (folder / name).write_bytes(b"")
    assert with_fallback(spec, data_dir=folder).protocol["dataset"] == "fashion-mnist"
    with pytest.raises(SparsetopoError, match="fallback_dataset='nope' is not a data set"):
        parse_spec(text.replace('fallback_dataset = "digits"', 'fallback_dataset = "nope"'))


def test_the_store_records_each_runs_recipe(tmp_path):
    db = tmp_path / "runs.sqlite"
    summary = run_sweep(write(tmp_path, SPEC), db, executor="inline")
    assert summary.stored == 13
    frame = load_results(db)
    assert frame["recipe"].value_counts().to_dict() == {"paper": 4, "paper+sparse_init": 4, "modern": 4}
    assert frame["recipe"].isna().sum() == 1   # [grid.plain] names no recipe
    modern = frame[frame["recipe"].eq("modern")]
    assert set(modern["loss"]) == {"cross_entropy"} and set(modern["optimizer"]) == {"adam"}
    assert set(modern["lr_schedule"]) == {"cosine"}
    # the paper's recipe trains in a population: CSR for the 64->8 layer at degree 2, BLAS for the full 8->10
    assert set(frame[frame["recipe"].eq("paper")]["backend"]) == {"fused-population/sparse,fused-population/masked"}
    assert recipes_in(results.load_table(db)) == ["paper", "paper+sparse_init", "modern"]


# -- the report ---------------------------------------------------------------------------------------

C1_GRID = dict(hidden=(300,), constructions=("regular_rotating",), k_in=(3, 6, 15, 30, 60), k_out=(10,),
               dropout=False, deep=False)


def two_recipes() -> pd.DataFrame:
    """C1 holds under "good" (regular at 10% density within 2 points of fully connected) and
    fails under "bad" (a flat 5-point gap)."""
    good = make_runs(**C1_GRID).assign(recipe="good")
    bad = make_runs(**C1_GRID, accuracy=lambda r: 0.95 if r["construction"] == "fully_connected" else 0.90,
                    seed=1).assign(recipe="bad", lr=0.1)
    frame = pd.concat([good, bad], ignore_index=True)
    frame["run_id"] = [f"r{i}" for i in range(len(frame))]
    frame["position"] = range(len(frame))
    return frame


def test_claims_per_recipe_give_each_recipes_verdict():
    table = results.normalise(two_recipes())
    assert recipes_in(table) == ["good", "bad"]
    comparison = compare_recipes(table, ["good", "bad"])
    c1 = {r: next(c for c in comparison.claims[r] if c.id == "C1") for r in ("good", "bad")}
    assert c1["good"].verdict == "supported" and c1["bad"].verdict == "not supported"
    assert c1["bad"].value == pytest.approx(-0.05, abs=0.002)
    header, rows = claims_table(comparison)
    assert header[2:] == ["good", "bad"]
    row = next(r for r in rows if r[0] == "C1")
    assert row[2].startswith("supported: ") and row[3].startswith("not supported: -5.")
    assert [r[0] for r in rows] == [f"C{i}" for i in range(1, 9)]


def test_report_of_a_store_with_two_recipes(tmp_path):
    db = tmp_path / "sweep.sqlite"
    write_store(two_recipes(), db)
    report = make_report(db, tmp_path / "out", seed=0)
    by_recipe = json.loads((tmp_path / "out" / "claims_by_recipe.json").read_text())
    assert by_recipe["recipes"] == ["good", "bad"]
    verdicts = {r: {c["id"]: c["verdict"] for c in by_recipe["claims"][r]} for r in by_recipe["recipes"]}
    assert verdicts["good"]["C1"] == "supported" and verdicts["bad"]["C1"] == "not supported"
    # the main claims are the first recipe's, not a mixture of both
    assert report.verdicts()["C1"] == "supported"
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Claims per recipe" in text and "| id | claim (paper) | good | bad |" in text
    assert "## Random null" in text
    assert "Claims per recipe" in (tmp_path / "out" / "report.html").read_text()


def test_a_store_with_one_recipe_has_no_recipe_sections(tmp_path):
    db = tmp_path / "sweep.sqlite"
    write_store(two_recipes().query("recipe == 'good'"), db)
    make_report(db, tmp_path / "out", seed=0)
    assert not (tmp_path / "out" / "claims_by_recipe.json").exists()
    assert "Claims per recipe" not in (tmp_path / "out" / "report.md").read_text()


def hand_made(rows) -> pd.DataFrame:
    frame = pd.DataFrame([dict(run_id=f"h{i}", position=i, dataset="digits", hidden="100", construction=c,
                               degrees=f"{k},10", density_in=k / 100, density=k / 100, test_accuracy=a, seed=s,
                               recipe=r, epochs=1, lr=0.1, init="glorot")
                          for i, (r, c, k, s, a) in enumerate(rows)])
    return results.normalise(frame)


def test_random_null_rows_are_the_right_differences():
    table = hand_made([
        ("A", "random_edge", 5, 0, 0.80), ("A", "random_edge", 5, 1, 0.82),
        ("A", "regular_rotating", 5, 0, 0.85), ("A", "regular_rotating", 5, 1, 0.87),
        ("A", "fibonacci_rotating", 5, 0, 0.70), ("A", "fibonacci_rotating", 5, 1, 0.72),
        ("A", "random_edge", 30, 0, 0.90),                       # one seed: no interval
        ("A", "regular_rotating", 30, 0, 0.91),
        ("A", "regular_rotating", 60, 0, 0.93),                  # no random_edge at 60: no row
        ("A", "fully_connected", 100, 0, 0.95),                  # not a sparse construction
        ("B", "random_edge", 5, 0, 0.60), ("B", "random_edge", 5, 1, 0.60),
        ("B", "regular_rotating", 5, 0, 0.60), ("B", "regular_rotating", 5, 1, 0.62),
    ])
    null = random_null({r: table[table["recipe"].eq(r)] for r in ("A", "B")})
    got = {(r.recipe, r.construction, r.k_in): r for r in null.itertuples()}
    assert set(got) == {("A", "regular_rotating", 5), ("A", "fibonacci_rotating", 5), ("A", "regular_rotating", 30),
                        ("B", "regular_rotating", 5)}
    a = got[("A", "regular_rotating", 5)]
    assert a.difference == pytest.approx(0.05) and a.accuracy_random_edge == pytest.approx(0.81)
    assert 0.03 - 1e-12 <= a.ci_low <= 0.05 <= a.ci_high <= 0.07 + 1e-12 and a.n == 2
    assert got[("A", "fibonacci_rotating", 5)].difference == pytest.approx(-0.10)
    assert got[("A", "fibonacci_rotating", 5)].ci_high < 0
    single = got[("A", "regular_rotating", 30)]
    assert single.difference == pytest.approx(0.01) and np.isnan(single.ci_low) and single.n == 1
    assert got[("B", "regular_rotating", 5)].difference == pytest.approx(0.01)
    assert got[("B", "regular_rotating", 5)].density_in == pytest.approx(0.05)
    header, rows = null_table(null)
    assert header[4:6] == ["5% density", "30% density"]
    row = next(r for r in rows if r[0] == "A" and r[3] == "regular_rotating")
    assert row[4].startswith("+5.00 [") and row[5] == "+1.00 (n/a)" and row[-1] == "1 / 0 / 0"
    fib = next(r for r in rows if r[3] == "fibonacci_rotating")
    assert fib[-1] == "0 / 1 / 0"


def test_sensitivity_preset_has_the_documented_grid():
    spec = load_spec("sensitivity")
    runs = expand_recipes(spec)
    assert len(runs) == 186
    assert [r for r in dict.fromkeys(r for _, r in runs)] == ["paper", "paper+sparse_init", "modern"]
    configs = [c for c, _ in runs]
    assert len({c.construction for c in configs}) == 7 and {c.hidden for c in configs} == {(300,)}
    assert {c.degrees[0] for c in configs if c.degrees} == {3, 6, 15, 30, 90}       # 1% .. 30% of 300
    assert {c.seed for c in configs} == {0, 1}
    modern = {(c.loss, c.optimizer, c.init, c.lr_schedule) for c, r in runs if r == "modern"}
    assert modern == {("cross_entropy", "adam", "glorot_sparse", "cosine")}
    if spec.protocol["dataset"] == "fashion-mnist":   # else Debian's package is absent: digits stands in
        reduced = {run_id(c) for c in expand(load_spec(Path(__file__).parents[1] / "examples" / "fashion_reduced.toml"))}
        assert all(run_id(c) in reduced for c, r in runs if r == "paper")
