"""`reproduce --preset cnn` and `--preset recurrent` end to end, shrunk: the shipped presets'
grids and recipes on digits, 150 training images, 1 epoch, 2 seeds, two constructions."""

from __future__ import annotations

import dataclasses
import json

import pytest

import sparsetopo.sweep
from sparsetopo.report import reproduce


def shrunk(load_spec):
    """``load_spec`` whose presets train tiny: digits, 150 images, 1 epoch, 2 seeds, 2 constructions."""
    def load(name, data_dir=None):
        spec = load_spec(name, data_dir=data_dir)
        small = {"constructions": ["random_edge", "regular_rotating"], "seeds": [0, 1]}
        blocks = tuple((block, {**axes, **({} if axes["constructions"] == ["fully_connected"] else small),
                                "seeds": [0, 1]})
                       for block, axes in spec.blocks)
        protocol = {**spec.protocol, "dataset": "digits", "limit_train": 150, "epochs": 1}
        return dataclasses.replace(spec, protocol=protocol, blocks=blocks)
    return load


@pytest.mark.slow
@pytest.mark.filterwarnings("error::sparsetopo.sweep.dense.DenseGridWarning")   # density makes them sparse
@pytest.mark.parametrize("preset, expected", [("cnn", {"F1", "F2", "F5"}), ("recurrent", {"F3", "F4", "F5"})])
def test_reproduce_writes_the_architecture_claims(tmp_path, monkeypatch, preset, expected):
    monkeypatch.setattr(sparsetopo.sweep, "load_spec", shrunk(sparsetopo.sweep.load_spec))
    done = reproduce(preset, tmp_path / preset, executor="inline", workers=1)
    # 2 constructions x densities x 2 seeds x 2 orders, plus dense x 2 seeds x 2 orders
    densities = 3 if preset == "cnn" else 2
    assert done.sweep.stored == 2 * densities * 2 * 2 + 2 * 2 and done.sweep.failed == 0
    assert len(done.timings) == 0    # the backends' epoch timings are the MLP's
    claims = {c["id"]: c for c in json.loads((tmp_path / preset / "claims.json").read_text())}
    assert set(claims) == expected
    for claim in claims.values():
        assert claim["verdict"] in ("supported", "not supported", "inconclusive") and claim["rule"]
    text = (tmp_path / preset / "report.md").read_text()
    assert all(cid in text for cid in expected)
    kind = "cnn" if preset == "cnn" else "lstm"
    assert (tmp_path / preset / f"future_{kind}.png").exists() and f"future_{kind}.png" in text
