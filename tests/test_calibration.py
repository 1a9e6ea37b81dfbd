"""Measured batch-1 inference costs: the line fit, the file that SPARSETOPO_INFERENCE_COSTS names,
what it changes (auto's batch-1 path, nothing else) and ``sparsetopo calibrate``."""

import json

import numpy as np
import pytest
import torch

from helpers import layer_pair as pair
from sparsetopo import SparsetopoError, build
from sparsetopo.cli.app import main
from sparsetopo.nn.calibration import alternating_medians, calibrate, fit_line
from sparsetopo.nn.plan import CPU_COST_MODEL, INFERENCE_COSTS_ENV, INFERENCE_FIELDS, inference_cost_model


def test_fit_line_recovers_a_line_and_weights_points_by_their_time():
    work = np.array([1e3, 1e4, 1e5, 1e6])
    assert fit_line(work, 5e-6 + 2e-10 * work) == pytest.approx((5e-6, 2e-10), rel=1e-9)
    # a 10% error at the smallest point costs as much as one at the largest: the fit is relative
    noisy = (5e-6 + 2e-10 * work) * np.array([1.1, 1.0, 1.0, 1.0])
    overhead, per = fit_line(work, noisy)
    assert overhead > 5e-6 and per == pytest.approx(2e-10, rel=0.05)
    with pytest.raises(SparsetopoError, match=r"two different amounts of work, not \[1000.0, 1000.0\]"):
        fit_line([1e3, 1e3], [1e-5, 1e-5])


def test_alternating_medians_lets_each_side_follow_each_other_and_takes_the_median():
    """What ran just before a call sets its cache, so over the rounds every ordered pair of
    sides occurs (a fixed order, or a rotation of one, gives only three of the twelve for four
    sides), each side runs ``turns * block`` timed calls, and the median ignores one outlier."""
    calls, now = [], [0.0]
    cost = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0}

    def side(name):
        calls.append(name)
        now[0] += cost[name] + (1000.0 if len(calls) == 30 else 0.0)   # one slow call

    sides = {name: (lambda name=name: side(name)) for name in cost}
    med = alternating_medians(sides, turns=60, warmup=1, block=2, clock=lambda: now[0])
    timed = calls[4:]
    assert [timed.count(n) for n in cost] == [120] * 4
    pairs = {(p, q) for p, q in zip(timed[1::2], timed[2::2]) if p != q}
    assert pairs == {(p, q) for p in cost for q in cost if p != q}
    assert med == cost   # per call, the outlier's block ignored

    calls.clear()   # a count per callable: each runs its own number of calls a round
    med = alternating_medians(sides, turns=10, warmup=0, block={"a": 1, "b": 3, "c": 1, "d": 2},
                              clock=lambda: now[0])
    assert [calls.count(n) for n in cost] == [10, 30, 10, 20] and med == cost


def write_costs(path, **costs):
    path.write_text(json.dumps({"costs": {**{k: getattr(CPU_COST_MODEL, k) for k in INFERENCE_FIELDS}, **costs}}))
    return str(path)


def test_without_the_variable_the_shipped_model_decides(monkeypatch):
    monkeypatch.delenv(INFERENCE_COSTS_ENV, raising=False)
    assert inference_cost_model() is CPU_COST_MODEL


def test_a_costs_file_moves_autos_batch_one_path_and_nothing_else(tmp_path, monkeypatch):
    t = build("random_regular", 1024, 1024, 20, seed=1)   # 2%: the shipped lines say sparse
    x = torch.randn(1, 1024, generator=torch.Generator().manual_seed(0))
    masked, shipped = pair(t, backend="auto")
    with torch.no_grad():
        shipped(x)
    assert shipped.last_path == "vector"
    # a machine whose sparse dot products cost 100 times the shipped ones
    monkeypatch.setenv(INFERENCE_COSTS_ENV, write_costs(tmp_path / "slow-gathers.json",
                                                        infer_sparse_per_mac_s=100 * CPU_COST_MODEL.infer_sparse_per_mac_s))
    model = inference_cost_model()
    assert model.infer_sparse_per_mac_s == 100 * CPU_COST_MODEL.infer_sparse_per_mac_s
    assert model.sparse_per_mac_s == CPU_COST_MODEL.sparse_per_mac_s   # the training lines stay shipped
    _, measured = pair(t, backend="auto")
    with torch.no_grad():
        y = measured(x)
    assert measured.last_path == "dense" and torch.equal(y, masked(x))
    measured(x.requires_grad_()).sum().backward()
    assert measured.last_path != "dense" and measured.backend == "sparse"   # training calls never go dense


@pytest.mark.parametrize("content,message", [
    (None, "cannot read it"),
    ("{not json", "is not JSON"),
    ('{"points": []}', 'holds no "costs" object'),
    ('{"costs": {"infer_dense_overhead_s": -1}}', r"costs.infer_dense_overhead_s is -1, not a number of seconds >= 0"),
])
def test_a_bad_costs_file_is_named_with_the_fix(tmp_path, monkeypatch, content, message):
    path = tmp_path / "costs.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv(INFERENCE_COSTS_ENV, str(path))
    with pytest.raises(SparsetopoError, match=message) as err:
        inference_cost_model()
    assert f"{INFERENCE_COSTS_ENV}={path}" in str(err.value) and "sparsetopo calibrate" in str(err.value)


def test_calibrate_times_every_layer_and_fits_positive_costs():
    result = calibrate(0.01, shapes=((256, 256), (512, 512)), densities=(0.05, 0.3))
    assert [(p["n_in"], round(p["nnz"] / (p["n_in"] * p["n_out"]), 2)) for p in result["points"]] == \
        [(256, 0.05), (256, 0.3), (512, 0.05), (512, 0.3)]
    assert all(p["dense_s"] > 0 and p["sparse_s"] > 0 for p in result["points"])
    costs = result["costs"]
    assert set(costs) == set(INFERENCE_FIELDS)
    assert costs["infer_dense_per_mac_s"] > 0 and costs["infer_sparse_per_mac_s"] > 0
    assert result["torch_threads"] == torch.get_num_threads()


def test_the_command_writes_a_file_the_plan_reads(tmp_path, monkeypatch, capsys):
    out = tmp_path / "costs.json"
    assert main(["calibrate", "--out", str(out), "--seconds", "0.01"]) == 0
    printed = capsys.readouterr().out
    assert f"export {INFERENCE_COSTS_ENV}={out}" in printed and "crossover density" in printed
    written = json.loads(out.read_text())
    assert len(written["points"]) == 9
    monkeypatch.setenv(INFERENCE_COSTS_ENV, str(out))
    assert inference_cost_model().infer_sparse_per_mac_s == written["costs"]["infer_sparse_per_mac_s"]


@pytest.mark.parametrize("seconds", ["0", "-1", "61"])
def test_the_command_refuses_a_bad_time_and_writes_nothing(tmp_path, capsys, seconds):
    out = tmp_path / "costs.json"
    assert main(["calibrate", "--out", str(out), "--seconds", seconds]) == 2
    err = capsys.readouterr().err
    assert f"--seconds {float(seconds):g} is outside (0, 60]" in err and "Traceback" not in err
    assert not out.exists()


def test_timings_that_fall_as_the_work_grows_are_refused(monkeypatch, tmp_path):
    from sparsetopo.nn import calibration

    disturbed = [{"n_in": n, "n_out": n, "nnz": n, "dense_s": 1e-9 * n * n, "sparse_s": 1e-3 / n} for n in (10, 50, 100)]
    monkeypatch.setattr(calibration, "measure", lambda *args: disturbed)
    with pytest.raises(SparsetopoError, match=r"not both positive: the machine was busy"):
        calibrate()
    out = tmp_path / "costs.json"
    assert main(["calibrate", "--out", str(out)]) == 2 and not out.exists()
