"""Sweeps: spec expansion and validation, the store, resume after SIGKILL, executors, CLI."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from sparsetopo.cli import main
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep import (SweepStore, expand, load_results, load_spec, parse_spec, preset_names, run_id,
                              run_sweep)
from sparsetopo.topology import registry
from sparsetopo.train import TrainConfig

TINY = """
[sweep]
name = "tiny"
departures = ["tiny networks"]

[protocol]
dataset = "digits"
epochs = 1
lr = 0.5
limit_train = 120
backend = "masked"

[grid.single]
constructions = ["regular_rotating", "random_regular", "fully_connected"]
hidden = [8, 16]
degrees_in = [2, 4]
degrees_out = [3, "full"]
seeds = 2

[grid.deep]
constructions = ["regular_rotating"]
hidden = [[12, 8]]
degrees = [[3, 2, "full"], [6, 4, "full"]]
dropout = [[0.2, 0.5]]
seeds = [0]
"""
# single: 2 sparse constructions x 2 hidden x 2 x 2 degrees x 2 seeds = 32, fully_connected 2 x 2 = 4
TINY_RUNS = 32 + 4 + 2

# slow enough (about 0.2 s a run) that a sweep can be killed part-way
SLOW = """
[protocol]
dataset = "digits"
epochs = 3
lr = 0.5
backend = "masked"

[grid.a]
constructions = ["regular_rotating", "random_regular"]
hidden = [16]
degrees_in = [2, 8]
seeds = 3
"""
SLOW_RUNS = 12


def write(tmp_path, text, name="spec.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def stored(db) -> pd.DataFrame:
    return load_results(db)


def assert_complete(db, n):
    frame = stored(db)
    assert len(frame) == n and frame.run_id.is_unique
    with SweepStore(db) as store:
        assert store.integrity_check() == "ok"
        planned = {rid for rid, _ in store.planned()}
        assert set(frame.run_id) == planned
        assert store.status()["remaining"] == 0
    return frame


# -- spec -------------------------------------------------------------------------------------
def test_expansion_counts_order_and_canonical_degrees(tmp_path):
    spec = load_spec(write(tmp_path, TINY))
    configs = expand(spec)
    assert len(configs) == TINY_RUNS
    assert configs == expand(load_spec(write(tmp_path, TINY)))  # deterministic
    assert configs[0] == TrainConfig(dataset="digits", hidden=(8,), construction="regular_rotating",
                                     degrees=(2, 3), epochs=1, lr=0.5, limit_train=120, seed=0, backend="masked")
    assert configs[1].seed == 1 and configs[2].degrees == (2, None)  # "full" is stored as None
    fc = [c for c in configs if c.construction == "fully_connected"]
    assert len(fc) == 4 and all(c.degrees is None for c in fc)  # one cell per hidden size and seed
    deep = configs[-2:]
    assert [c.degrees for c in deep] == [(3, 2, None), (6, 4, None)] and deep[0].dropout == (0.2, 0.5)
    assert len({run_id(c) for c in configs}) == TINY_RUNS


def test_run_id_is_stable_and_tracks_config_and_construction_version(monkeypatch):
    a = TrainConfig(dataset="digits", hidden=(8,), degrees=(2, None), lr=0.5)
    assert run_id(a) == run_id(TrainConfig(dataset="digits", hidden=[8], degrees=[2, None], lr=0.5))
    assert re.fullmatch("[0-9a-f]{16}", run_id(a))  # 16 lowercase hex digits
    assert run_id(a) != run_id(TrainConfig(dataset="digits", hidden=(8,), degrees=(2, None), lr=0.5, seed=1))
    before = run_id(a)
    spec = registry.CONSTRUCTIONS["regular_rotating"]
    monkeypatch.setitem(registry.CONSTRUCTIONS, "regular_rotating",
                        registry.Construction(spec.name, spec.function, spec.random, spec.version + 1, spec.summary))
    assert run_id(a) != before


def test_integer_lr_in_toml_gives_the_same_ids_as_a_float(tmp_path):
    one = expand(parse_spec(TINY.replace("lr = 0.5", "lr = 1"), "a"))
    other = expand(parse_spec(TINY.replace("lr = 0.5", "lr = 1.0"), "b"))
    assert [run_id(c) for c in one] == [run_id(c) for c in other]


def test_presets_have_the_documented_sizes_and_the_report_cells():
    assert {"paper", "quick"} <= set(preset_names())
    paper = expand(load_spec("paper"))
    assert len(paper) == 3067
    assert sum(c.construction == "fully_connected" for c in paper) == 7
    assert {c.hidden for c in paper} == {(100,), (300,), (500,), (500, 300)}
    assert all(c.dataset == "mnist" and c.epochs == 50 and c.lr == 0.01 and c.batch_size == 32 for c in paper)
    quick = expand(load_spec("quick"))
    assert 150 <= len(quick) <= 250 and all(c.dataset == "digits" for c in quick)
    regular300 = [c for c in quick if c.construction == "regular_rotating" and c.hidden == (300,)
                  and c.dropout == (0.0, 0.0)]
    assert len({c.degrees[0] for c in regular300}) >= 5 and len({c.degrees[1] for c in regular300}) >= 5
    assert max(sum(c.degrees == d for c in regular300) for d in {c.degrees for c in regular300}) >= 3  # seeds
    assert len({c.construction for c in quick if c.hidden == (300,)}) == 7
    assert any(c.dropout == (0.2, 0.5) for c in quick) and any(len(c.hidden) == 2 for c in quick)
    assert {c.hidden for c in quick if len(c.hidden) == 1} == {(100,), (300,), (500,)}
    assert load_spec("quick").departures


BAD_SPECS = [
    ("[protocol] unknown field 'epoch'", TINY.replace("epochs = 1", "epoch = 1")),
    ("[grid.single] unknown field 'hiden'", TINY.replace("hidden = [8, 16]", "hiden = [8, 16]")),
    ("[grid.single] constructions: unknown construction 'ramanujan'",
     TINY.replace('"random_regular", "fully_connected"', '"ramanujan"')),
    ("[grid.single] degrees_in: k=40 is out of range for a 64->8 layer",
     TINY.replace("degrees_in = [2, 4]", "degrees_in = [2, 40]")),
    ("[grid.single] degrees_out: k=11 is out of range for a 8->10 layer",
     TINY.replace('degrees_out = [3, "full"]', "degrees_out = [3, 11]")),
    ("[grid.deep] degrees: k=13 is out of range for a 12->8 layer",
     TINY.replace('[6, 4, "full"]', '[6, 13, "full"]')),
    ("[grid.single] degrees_in is empty", TINY.replace("degrees_in = [2, 4]", "degrees_in = []")),
    ("[grid] is empty", TINY.split("[grid.single]")[0]),
    ("[grid.single] seeds=0 is empty", TINY.replace("seeds = 2", "seeds = 0")),
    ("[protocol] epochs='1' must be an integer", TINY.replace("epochs = 1", 'epochs = "1"')),
    ("[protocol] limit_train=1.5 must be an integer", TINY.replace("limit_train = 120", "limit_train = 1.5")),
    ("[protocol] lr='0.5' must be a number", TINY.replace("lr = 0.5", 'lr = "0.5"')),
    ("[protocol] backend=1 must be a string", TINY.replace('backend = "masked"', "backend = 1")),
    ("[grid.deep] dropout", TINY.replace("[[0.2, 0.5]]", "[[0.2]]")),
]


@pytest.mark.parametrize("needle, text", BAD_SPECS, ids=[b[0].split(":")[0] for b in BAD_SPECS])
def test_bad_specs_are_rejected_naming_the_key(tmp_path, needle, text):
    path = write(tmp_path, text, "quick.toml")
    with pytest.raises(SparsetopoError) as info:
        load_spec(path)
    assert f"sweep spec {path}: {needle}" in str(info.value)


def test_spec_value_types_come_from_the_config_annotations():
    """One schema: a field's type in a spec is read from its annotation, so a field added to a
    config class is checked without a second list to update."""
    from dataclasses import dataclass

    from sparsetopo.sweep import spec
    from sparsetopo.train.config import scalar_field_types

    @dataclass
    class Config:
        width: int = 1
        rate: float | None = None
        name: str = ""
        shape: tuple[int, ...] = ()

    assert scalar_field_types(Config) == {"width": (int, False), "rate": (float, True), "name": (str, False)}
    # every TrainConfig field is a checked scalar or one of the tuple fields parsed on their own
    assert set(spec.CONFIG_FIELDS) - set(spec.SCALAR_TYPES) == {"hidden", "dropout", "degrees"}
    assert spec.NONE_FIELDS == {"limit_train", "permute_inputs"} and "block" in spec.INT_FIELDS


def test_cli_rejects_a_bad_spec_before_any_run_starts(tmp_path, capsys):
    path = write(tmp_path, TINY.replace("degrees_in = [2, 4]", "degrees_in = [2, 400]"))
    db = tmp_path / "runs.sqlite"
    assert main(["sweep", "run", str(path), "--db", str(db), "--executor", "inline"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "degrees_in: k=400 is out of range for a 64->8 layer" in err
    assert not db.exists()
    assert main(["sweep", "run", "no-such-preset", "--db", str(db)]) == 2
    assert "paper, quick" in capsys.readouterr().err


# -- inline sweep, store, resume, export, status --------------------------------------------------
def test_inline_sweep_stores_each_run_once_and_resumes(tmp_path):
    db = tmp_path / "tiny.sqlite"
    spec = write(tmp_path, TINY)
    configs = expand(load_spec(spec))
    events = []
    summary = run_sweep(configs[:10], db, executor="inline", on_result=events.append)
    assert summary.stored == 10 and len(events) == 10 and events[-1].done == 10
    summary = run_sweep(spec, db, executor="inline", population=False)
    assert summary.skipped == 10 and summary.stored == TINY_RUNS - 10
    frame = assert_complete(db, TINY_RUNS)
    # the backend column names the engine that ran each row, not the spec's "masked"
    assert set(frame.requested_backend) == {"masked"}
    first = frame.set_index("run_id").loc[[run_id(c) for c in configs[:10]]]
    assert set(first.trained_with) == {"population"}
    # engine and kernel per layer: CSR for the sparse 64->8 layers, dense GEMMs for a full one
    layers = first.layers.map(lambda text: [layer["backend"] for layer in json.loads(text)])
    assert (layers.map(len) == first.n_hidden_layers + 1).all()
    assert (first.backend == layers.map(lambda k: ",".join(dict.fromkeys(k)))).all()   # the row's summary
    assert all(set(k) <= {"fused-population/sparse", "fused-population/masked"} for k in layers)
    assert all(k[0] == "fused-population/sparse" for k, c in zip(layers, first.construction) if c != "fully_connected")
    assert all(k[-1] == "fused-population/masked" for k, d in zip(layers, first.k_out) if d == 10)
    rest = frame[~frame.run_id.isin(first.index)]
    assert set(rest.trained_with) == {"train"} and set(rest.backend) == {"autograd/masked"}
    row = frame.set_index("run_id").loc[run_id(configs[0])]
    assert (row.hidden, row.hidden1, row.n_hidden_layers, row.k_in, row.k_out) == ("8", 8, 1, 2, 3)
    assert row.degrees == "2,3" and row.density_in == pytest.approx(2 / 8)
    assert row.density == pytest.approx((64 * 2 + 8 * 3) / (64 * 8 + 8 * 10))
    assert len(json.loads(row.history)) == 1 and row.train_loss == json.loads(row.history)[-1]["train_loss"]
    assert row.w0_max == json.loads(row.weight_stats)[0]["max"] and row.wlast_std == json.loads(row.weight_stats)[1]["std"]
    assert row.status == "ok" and 0 <= row.test_accuracy <= 1 and row.attempts == 1
    deep = frame[frame.n_hidden_layers == 2]
    assert set(deep.hidden) == {"12,8"} and set(deep.k_out) == {10} and set(deep.dropout_in) == {0.2}
    assert list(frame.position) == sorted(frame.position)
    # a third call trains nothing
    assert run_sweep(spec, db, executor="inline").stored == 0
    with SweepStore(db) as store:
        assert store.meta()["spec"]["departures"] == ["tiny networks"]


def test_export_status_and_presets_cli(tmp_path, capsys):
    db = tmp_path / "tiny.sqlite"
    spec = write(tmp_path, TINY)
    run_sweep(expand(load_spec(spec))[:7], db, executor="inline")
    with SweepStore(db) as store:  # plan the rest without running it
        store.plan([(run_id(c), c.to_dict()) for c in expand(load_spec(spec))])
    store = SweepStore(db)
    store.add_failure(run_id(expand(load_spec(spec))[8]), "Traceback...\nRuntimeError: boom")
    store.close()
    assert main(["sweep", "status", "--db", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["done"], info["failed"], info["remaining"]) == (7, 1, TINY_RUNS - 8)
    assert all(isinstance(info[k], int) for k in ("done", "failed", "remaining"))
    assert info["eta_seconds"] is not None
    assert main(["sweep", "status", "--db", str(db)]) == 0
    assert "RuntimeError: boom" in capsys.readouterr().out
    csv, parquet = tmp_path / "r.csv", tmp_path / "r.parquet"
    assert main(["sweep", "export", "--db", str(db), "--csv", str(csv), "--parquet", str(parquet)]) == 0
    expected = load_results(db)
    for frame in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert list(frame.run_id) == list(expected.run_id) and len(frame) == 7
        assert list(frame.test_accuracy) == pytest.approx(list(expected.test_accuracy))
    assert main(["sweep", "status", "--db", str(tmp_path / "missing.sqlite")]) == 2
    assert main(["sweep", "presets"]) == 0
    out = capsys.readouterr().out
    assert "3067 runs" in out and "quick" in out


# -- SIGKILL and resume ---------------------------------------------------------------------------
def _count_rows(db) -> int:
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_coordinator_killed_with_sigkill_resumes_without_loss_or_duplicates(tmp_path, capsys):
    spec, db = write(tmp_path, SLOW), tmp_path / "slow.sqlite"
    command = [sys.executable, "-m", "sparsetopo", "sweep", "run", str(spec), "--db", str(db),
               "--workers", "2", "--chunk-size", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _count_rows(db) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _count_rows(db)
    assert 3 <= partial < SLOW_RUNS, "the sweep should have been killed part-way"
    # its orphaned workers notice and exit (else they, and the forkserver, would live forever)
    from sparsetopo.sweep.worker import _alive

    orphans = {int(w.rsplit(":", 1)[1]) for w in stored(db).worker}
    deadline = time.time() + 20
    while any(_alive(pid) for pid in orphans) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in orphans)
    # the same command again (in this interpreter, to save a second start-up)
    assert main(command[3:]) == 0
    assert f"{SLOW_RUNS - partial} runs stored, {partial} already done" in capsys.readouterr().out
    assert_complete(db, SLOW_RUNS)


def test_worker_killed_with_sigkill_is_retried_and_counted(tmp_path):
    db = tmp_path / "slow.sqlite"
    killed = []

    def kill_first_worker(event):
        if not killed and event.worker:
            killed.append(int(event.worker.rsplit(":", 1)[1]))
            os.kill(killed[0], signal.SIGKILL)

    summary = run_sweep(write(tmp_path, SLOW), db, executor="process", workers=2, chunk_size=1,
                        on_result=kill_first_worker)
    assert killed and summary.restarts >= 1 and summary.failed == 0
    frame = assert_complete(db, SLOW_RUNS)
    assert frame.attempts.max() >= 2  # the runs in flight when the worker died were tried again


# -- Ray ------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_executor_gives_the_same_rows_as_local_processes(tmp_path):
    ray = pytest.importorskip("ray")
    spec = write(tmp_path, TINY)
    configs = expand(load_spec(spec))[:12]
    local, remote = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    run_sweep(configs, local, executor="process", workers=2, chunk_size=3)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(configs, remote, executor="ray", workers=2, chunk_size=3)
    finally:
        ray.shutdown()
    assert summary.stored == 12
    a = assert_complete(local, 12).set_index("run_id")
    b = assert_complete(remote, 12).set_index("run_id")
    assert sorted(a.index) == sorted(b.index)
    assert (b.test_accuracy.loc[a.index] == a.test_accuracy).all()
    assert (b.w0_std.loc[a.index] == a.w0_std).all()


# -- graph measures hook --------------------------------------------------------------------------
def _fake_spectral():
    import types

    module = types.ModuleType("sparsetopo.spectral")
    calls = []

    def layer_measures(topology):
        calls.append(topology.fingerprint)
        return {"algebraic_connectivity": topology.nnz / 1000, "spectral_gap": float(topology.n_out)}

    def network_measures(topologies):
        return {"algebraic_connectivity": sum(t.nnz for t in topologies) / 1e4, "spectral_gap": 1.0}

    module.layer_measures, module.network_measures, module.calls = layer_measures, network_measures, calls
    return module


def test_graph_measures_fill_columns_when_spectral_is_available_and_backfill_later(tmp_path, monkeypatch):
    """A stand-in for sparsetopo.spectral, so that the expected values are known exactly."""
    from sparsetopo.sweep import backfill_measures, measures

    monkeypatch.setattr(measures, "_MEASURED", {})  # measures of earlier tests' topologies
    configs = expand(load_spec(write(tmp_path, TINY)))[:6]
    monkeypatch.setitem(sys.modules, "sparsetopo.spectral", None)  # not importable yet
    before = tmp_path / "before.sqlite"
    run_sweep(configs, before, executor="inline")
    assert load_results(before).alg_conn_in.isna().all()
    fake = _fake_spectral()
    monkeypatch.setitem(sys.modules, "sparsetopo.spectral", fake)
    assert backfill_measures(before) == 6
    after = tmp_path / "after.sqlite"
    run_sweep(configs, after, executor="inline")
    for db in (before, after):
        frame = load_results(db).set_index("run_id")
        layers = frame.layers.map(json.loads)
        assert (frame.alg_conn_in == layers.map(lambda ls: ls[0]["nnz"] / 1000)).all()
        assert (frame.alg_conn_net == layers.map(lambda ls: sum(l["nnz"] for l in ls) / 1e4)).all()
        assert (frame.spectral_gap_in == 8.0).all()  # hidden 8
        assert json.loads(frame.metrics.iloc[0])["layers"][1]["spectral_gap"] == 10.0
        with SweepStore(db) as store:
            n = store.db.execute("SELECT COUNT(*) FROM graph_measures").fetchone()[0]
        assert n >= len({f for ls in layers for f in (l["fingerprint"] for l in ls)})
    assert len(fake.calls) == len(set(fake.calls))  # each topology measured once per process


def _thread_share() -> tuple[int, int, int]:
    """torch's, numba's and the largest BLAS thread pool of the calling process."""
    import numba
    import scipy.linalg  # noqa: F401 - the BLAS the population engine's dense kernels call
    import torch
    from threadpoolctl import threadpool_info

    blas = max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas")
    return torch.get_num_threads(), numba.get_num_threads(), blas


def test_process_workers_own_one_core_for_torch_numba_and_blas_alike():
    from sparsetopo.sweep import ProcessExecutor

    pool = ProcessExecutor(2)
    try:
        shares = {pool.submit(_thread_share).result(timeout=120) for _ in range(4)}
    finally:
        pool.shutdown()
    assert shares == {(1, 1, 1)}


def test_mnist_shaped_sweep_forms_populations_and_clocks_sparse_runs_below_fully_connected(tmp_path):
    """784-input networks through the default process executor on two workers: the runner
    trains them as populations (not one by one), each row names its engine and kernel per
    layer, and within the one sweep a 10% network's epochs are clearly shorter than its fully
    connected sibling's (each member clocked on its own worker thread)."""
    configs = [TrainConfig(dataset="synthetic", hidden=(300,), epochs=2, lr=0.1, seed=seed,
                           construction=construction, degrees=degrees)
               for seed in (0, 1)
               for construction, degrees in (("fully_connected", None), ("regular_rotating", (30, None)),
                                             ("random_regular", (30, None)))]
    db = tmp_path / "mnist-shaped.sqlite"
    run_sweep(configs, db, executor="process", workers=2, measures=False)
    frame = load_results(db)
    assert len(frame) == 6 and set(frame.trained_with) == {"population"}
    kernels = frame.layers.map(lambda text: [layer["backend"] for layer in json.loads(text)])
    dense = frame.construction == "fully_connected"
    assert (kernels[dense].map(lambda k: k[0]) == "fused-population/masked").all()    # a GEMM on the full layer
    assert (kernels[~dense].map(lambda k: k[0]) == "fused-population/sparse").all()   # CSR at 10%
    per_epoch = frame.history.map(lambda text: min(h["seconds"] for h in json.loads(text)))
    assert per_epoch[~dense].max() * 1.5 < per_epoch[dense].min()


def test_trained_with_follows_the_engine_that_ran(digits):
    """train_population may hand members to train(); the row then says "train"."""
    from sparsetopo.sweep.worker import _trained_with, result_row
    from sparsetopo.train import train, train_population

    configs = [TrainConfig(dataset="digits", hidden=(8,), degrees=(2, None), epochs=1, lr=0.5, limit_train=64,
                           seed=s) for s in (0, 1)]
    pooled = train_population(configs, dataset=digits)
    alone = train(configs[0], dataset=digits)
    assert [_trained_with(r) for r in pooled] == ["population", "population"]
    assert _trained_with(alone) == "train"
    assert result_row(alone, _trained_with(alone), measures=False)["device"] == "cpu"


def test_a_coordinator_read_from_stdin_is_refused_before_anything_is_created(tmp_path):
    """forkserver workers re-import ``__main__`` from its path; ``<stdin>`` is none, so every
    worker would die at start: the sweep says so in one line and creates no store."""
    db = tmp_path / "stdin.sqlite"
    script = ("from sparsetopo.sweep import run_sweep\n"
              "from sparsetopo.train import TrainConfig\n"
              "from sparsetopo.errors import SparsetopoError\n"
              "try:\n"
              f"    run_sweep([TrainConfig(dataset='digits', hidden=(8,), epochs=1, limit_train=64)], {str(db)!r})\n"
              "except SparsetopoError as exc:\n"
              "    print(exc)\n")
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'<stdin>' is not a file" in out.stdout and "inline executor" in out.stdout
    assert not db.exists()



def test_a_spec_can_ask_for_every_run_to_train_alone(tmp_path):
    """[sweep] population = false: the runs that would form a population train one by one
    (their stored seconds are each their own); a value other than a boolean is refused."""
    text = TINY.replace('departures = ["tiny networks"]', 'departures = ["tiny networks"]\npopulation = false')
    spec = parse_spec(text, source="alone.toml")
    assert spec.population is False and parse_spec(TINY, source="t.toml").population is True
    run_sweep(spec, tmp_path / "alone.sqlite", executor="inline", measures=False)
    frame = load_results(tmp_path / "alone.sqlite")
    assert len(frame) == TINY_RUNS and set(frame.trained_with) == {"train"}
    with pytest.raises(SparsetopoError, match=r"population='no' must be true or false"):
        parse_spec(TINY.replace('name = "tiny"', 'name = "tiny"\npopulation = "no"'), source="bad.toml")
