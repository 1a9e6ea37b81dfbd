"""One-network-at-a-time epoch timings: configs, storage, and their use by the report's C8."""

import json

import pandas as pd
import pytest

from sparsetopo.report import make_report
from sparsetopo.sweep import run_sweep
from sparsetopo.sweep.timing import base_config, load_timings, measure_epoch_times, timing_configs
from sparsetopo.train import TrainConfig


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("timing") / "sweep.sqlite"
    configs = [TrainConfig(dataset="digits", hidden=(20,), construction=c, degrees=(k, None), epochs=1, lr=0.5,
                           batch_size=16, limit_train=200, seed=s)
               for c, k in (("regular_rotating", 2), ("fibonacci_rotating", 4), ("fully_connected", None))
               for s in (0, 1)]
    configs.append(TrainConfig(dataset="digits", hidden=(20,), degrees=(4, None), dropout=(0.2, 0.5), epochs=1,
                               limit_train=200))
    run_sweep(configs, path, executor="inline")
    return path


def test_base_config_is_the_common_protocol_without_dropout(store):
    from sparsetopo.sweep import load_results

    base = base_config(load_results(store))
    assert base.hidden == (20,) and base.batch_size == 16 and base.lr == 0.5 and base.epochs == 1
    assert base.dropout == (0.0, 0.0) and base.limit_train == 200


def test_timing_configs_cover_backends_densities_and_fully_connected():
    base = TrainConfig(dataset="digits", hidden=(100,), epochs=1)
    configs = timing_configs(base, densities=(0.01, 0.05, 0.5, 1.0), backends=("masked", "sparse"), repeats=2)
    assert len(configs) == 2 * (3 + 1) * 2  # k = 1, 5, 50 (k = 100 is the fully connected cell)
    assert {c.degrees for c in configs if c.construction == "regular_rotating"} == {(1, None), (5, None), (50, None)}
    assert sum(c.construction == "fully_connected" for c in configs) == 4
    # interleaved: each repeat is a full round, so a burst of load cannot fall on one cell only
    rounds = [configs[i * 8:(i + 1) * 8] for i in range(2)]
    assert [{c.seed for c in r} for r in rounds] == [{0}, {1}]
    assert [(c.construction, c.degrees, c.backend) for c in rounds[0]] == \
        [(c.construction, c.degrees, c.backend) for c in rounds[1]]


def test_measured_timings_are_stored_and_drive_c8(store, tmp_path):
    frame = measure_epoch_times(store, densities=(0.1, 0.5), backends=("masked", "sparse"), repeats=2)
    stored = load_timings(store)
    pd.testing.assert_frame_equal(frame, stored)
    assert len(frame) == 2 * 3 * 2 and set(frame["backend"]) == {"autograd/masked", "fused/sparse"}
    assert (frame["seconds_per_epoch"] > 0).all() and set(frame["trained_with"]) == {"timing"}
    assert frame.loc[frame["construction"] == "fully_connected", "density"].eq(1.0).all()
    make_report(store, tmp_path)
    c8 = next(c for c in json.loads((tmp_path / "claims.json").read_text()) if c["id"] == "C8")
    assert set(c8["numbers"]) >= {"ratio_autograd/masked", "ratio_fused/sparse"}  # both timed backends compared


def test_stores_without_timings_read_as_empty(tmp_path):
    assert load_timings(tmp_path / "missing.sqlite").empty
