"""A grid block that trains a sparse construction fully connected is warned about, or refused."""

from __future__ import annotations

import warnings

import pytest

from sparsetopo.cli import main
from sparsetopo.sweep import DenseGridError, DenseGridWarning, dense_cells, expand, load_spec, run_sweep
from sparsetopo.sweep.dense import DenseCell

# the shape of docs/sweeps.md's [recipes.*] example: constructions, recipes, and no degrees
RECIPES = """
[protocol]
dataset = "digits"
epochs = 1
limit_train = 48
backend = "masked"

[recipes.paper]
lr = 0.1
[recipes.modern]
loss = "cross_entropy"
optimizer = "adam"
lr = 0.001

[grid.main]
recipes = ["paper", "modern"]
constructions = ["fully_connected", "random_edge", "regular_rotating"]
hidden = [8]
"""

SPARSE = """
[protocol]
dataset = "digits"
epochs = 1
limit_train = 48
backend = "masked"

[grid.a]
constructions = ["random_edge", "regular_rotating", "fully_connected"]
hidden = [8]
degrees_in = [2, "full"]     # a dense reference point beside a sparse one is deliberate

[grid.deep]
constructions = ["random_regular"]
hidden = [[8, 6]]
degrees = [[3, 2, "full"]]
"""


@pytest.fixture
def spec_file(tmp_path):
    def write(text, name="grid.toml"):
        path = tmp_path / name
        path.write_text(text)
        return path
    return write


def test_the_recipes_example_trains_two_sparse_constructions_dense(spec_file):
    spec = load_spec(spec_file(RECIPES))
    cells = dense_cells(spec)
    assert cells == [DenseCell("main", "random_edge", (8,)), DenseCell("main", "regular_rotating", (8,))]
    # what the finding rests on: those runs have no sparse layer, and fully_connected is not reported
    flagged = [c for c in expand(spec) if c.construction in ("random_edge", "regular_rotating")]
    assert len(flagged) == 4 and all(c.degrees is None for c in flagged)


def test_a_sparse_spec_gets_no_warning(spec_file):
    path = spec_file(SPARSE)
    spec = load_spec(path)
    assert dense_cells(spec) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DenseGridWarning)
        summary = run_sweep(spec, path.with_name("sparse.sqlite"), executor="inline", measures=False)
    assert summary.stored == len(expand(spec)) == 6


def test_run_sweep_warns_with_a_filterable_category_and_strict_refuses(spec_file):
    path = spec_file(RECIPES)
    db = path.with_name("dense.sqlite")
    with pytest.raises(DenseGridError, match=r"\[grid.main\] random_edge \(hidden 8\), regular_rotating"):
        run_sweep(path, db, executor="inline", strict=True)
    assert not db.exists()   # refused before anything was written
    with pytest.warns(DenseGridWarning) as caught:
        run_sweep(path, db, executor="inline", measures=False)
    assert len(caught) == 1 and "degrees_in or densities_in" in str(caught[0].message)


def test_sweep_run_prints_one_warning_line_and_strict_refuses(spec_file, capsys):
    path = spec_file(RECIPES)
    db = path.with_name("cli.sqlite")
    assert main(["sweep", "run", str(path), "--db", str(db), "--executor", "inline", "--strict"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sparsetopo: error: ") and "random_edge" in err
    assert not db.exists()
    assert main(["sweep", "run", str(path), "--db", str(db), "--executor", "inline", "--no-measures"]) == 0
    lines = capsys.readouterr().err.splitlines()
    warned = [line for line in lines if line.startswith("sparsetopo: warning:")]
    assert len(warned) == 1 and "[grid.main] random_edge" in warned[0] and "densities_in" in warned[0]
    assert "DenseGridWarning" not in "\n".join(lines)   # printed as a line, not as Python's warning


def test_reproduce_strict_refuses_before_writing(tmp_path, capsys, monkeypatch):
    """The shipped presets give degrees everywhere; a finding is simulated to check the wiring."""
    import sparsetopo.sweep.dense as dense

    monkeypatch.setattr(dense, "dense_cells", lambda spec, data_dir=None: [DenseCell("contour", "random_edge", (300,))])
    out = tmp_path / "report"
    assert main(["reproduce", "--preset", "quick", "--out", str(out), "--executor", "inline", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "sparsetopo: error: " in err and "[grid.contour] random_edge (hidden 300)" in err
    assert not out.exists()
