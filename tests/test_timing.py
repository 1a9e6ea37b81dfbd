"""One-network-at-a-time epoch timings: configs, storage, and their use by the report's C8."""

import json
import time

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


def test_epochs_are_read_from_the_given_clock(digits):
    """train()'s epoch seconds come from its ``clock``: the timing table passes the thread's
    CPU time, which another job taking turns on the core cannot inflate."""
    from sparsetopo.train import train

    ticks = iter(range(0, 1000, 7))
    config = TrainConfig(dataset="digits", hidden=(8,), degrees=(2, None), epochs=3, lr=0.5, limit_train=64)
    result = train(config, dataset=digits, clock=lambda: float(next(ticks)))
    assert [h.seconds for h in result.history] == [7.0, 7.0, 7.0]


def test_timing_runs_on_one_core_and_gives_the_threads_back(store, monkeypatch):
    import numba
    import torch

    import sparsetopo.sweep.timing as timing

    seen, real_train = [], timing.train

    def spy(config, **kwargs):
        seen.append((torch.get_num_threads(), numba.get_num_threads(), kwargs.get("clock")))
        return real_train(config, **kwargs)

    monkeypatch.setattr(timing, "train", spy)
    before = torch.get_num_threads(), numba.get_num_threads()
    measure_epoch_times(store, densities=(0.1,), backends=("sparse",), repeats=1)
    assert {(t, n) for t, n, _ in seen} == {(1, 1)}
    assert {clock for _, _, clock in seen if clock is not None} == {time.thread_time}
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
