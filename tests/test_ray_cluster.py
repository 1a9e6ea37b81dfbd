"""Ray as users run it: an address, a cluster made with ``ray start``, nodes that die.

The fast tests need no cluster: every connection problem is refused through the CLI with one
line, exit code 2, and no store. The slow ones start real clusters with ``ray start --head``
and ``ray start --address`` (tests/ray_cluster.py: own ports, own temp dirs, and only their
own processes are stopped) and drive the CLI against them.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ray_cluster import LocalCluster, free_port, ray_start_available
from test_cli_safety import TINY, _without, assert_refused, cli, snapshot

pytest.importorskip("ray")

THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
# 12 runs of a few seconds each (fully connected ones ignore the degrees), one per task: enough
# tasks for both nodes, and a sweep long enough to kill a node in the middle of it.
SPEC = TINY.replace('name = "tiny"', 'name = "cluster"').replace("epochs = 1", "epochs = 8") \
    .replace("limit_train = 120", "limit_train = 600").replace("degrees_in = [2]", "degrees_in = [2, 4]") \
    .replace("seeds = 2", "seeds = 4")
RUNS = 12


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "cluster.toml").write_text(SPEC)
    return tmp_path


def no_store(folder: Path, before: dict) -> None:
    assert snapshot(folder) == before
    assert not list(folder.rglob("*.sqlite"))


# -- refusals without a cluster ---------------------------------------------------------------------

def test_an_unreachable_address_is_one_line_and_no_store(folder):
    address = f"127.0.0.1:{free_port()}"   # nothing listens there
    before = snapshot(folder)
    started = time.perf_counter()
    result = cli("sweep", "run", "cluster.toml", "--db", "s.sqlite", "--executor", "ray", "--address", address,
                 cwd=folder, env=THREADS)
    assert_refused(result, address, "cannot reach", "check the address")
    assert time.perf_counter() - started < 60   # not Ray's minutes of retries
    no_store(folder, before)


def test_reproduce_takes_an_address_and_ray_address_alike(folder):
    address = f"127.0.0.1:{free_port()}"
    before = snapshot(folder)
    assert_refused(cli("reproduce", "--preset", "quick", "--executor", "ray", "--address", address, "--out", "out",
                       cwd=folder, env=THREADS), address, "cannot reach")
    assert not (folder / "out" / "sweep.sqlite").exists()
    # RAY_ADDRESS is the address when --address is not given (reproduce and sweep run alike)
    for command in (("reproduce", "--preset", "quick", "--executor", "ray", "--out", "out"),
                    ("sweep", "run", "cluster.toml", "--db", "s.sqlite", "--executor", "ray")):
        assert_refused(cli(*command, cwd=folder, env={**THREADS, "RAY_ADDRESS": address}), address, "cannot reach")
    assert not (folder / "out" / "sweep.sqlite").exists() and not (folder / "s.sqlite").exists()
    assert {p for p in snapshot(folder)} == set(before)


def test_a_ray_client_address_without_ray_client_names_the_extra(folder):
    env = {**THREADS, **_without(folder, "grpc")}
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "cluster.toml", "--db", "s.sqlite", "--executor", "ray",
                       "--address", "ray://127.0.0.1:10001", cwd=folder, env=env),
                   "ray://127.0.0.1:10001", "ray[client]", "pip install 'sparsetopo[ray]'")
    no_store(folder, before)


@pytest.mark.parametrize("address, needle", [("head", "host:port"), ("http://head:8265", "ray://")])
def test_an_address_of_no_known_form_is_refused(folder, address, needle):
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "cluster.toml", "--db", "s.sqlite", "--executor", "ray", "--address", address,
                       cwd=folder, env=THREADS), address, needle)
    no_store(folder, before)


def test_an_address_without_the_ray_executor_is_refused(folder):
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "cluster.toml", "--db", "s.sqlite", "--address", "127.0.0.1:6379",
                       cwd=folder, env=THREADS), "--executor ray")
    no_store(folder, before)


def test_a_worker_running_other_code_refuses_and_nothing_is_stored(tmp_path, monkeypatch):
    """The version check itself: a coordinator whose code differs from the worker's (here the
    inline worker, this very process) stops the sweep with both versions named."""
    from sparsetopo.errors import SparsetopoError
    from sparsetopo.sweep import SweepStore, run_sweep, runner
    from sparsetopo.sweep.spec import parse_spec
    from sparsetopo.sweep.worker import code_version

    here = code_version()
    monkeypatch.setattr(runner, "code_version", lambda: "0.0.1+src.00000000")
    db = tmp_path / "s.sqlite"
    with pytest.raises(SparsetopoError) as refused:
        run_sweep(parse_spec(TINY), db, executor="inline", measures=False)
    assert here in str(refused.value) and "0.0.1+src.00000000" in str(refused.value)
    with SweepStore(db, readonly=True) as store:
        assert store.status()["done"] == 0 and store.failed_attempts() == {}


def test_a_ray_client_refusal_names_the_heads_own_reason():
    """Ray Client puts the head's traceback under 'Initialization failure from server:'; the
    one line keeps that traceback's last line, the reason, not the empty headline alone."""
    from sparsetopo.sweep.cluster import _translate

    traceback = ("Initialization failure from server:\nTraceback (most recent call last):\n  File \"x.py\", "
                 "line 1, in f\n    raise RuntimeError\nRuntimeError: Proxy failed to Connect to backend!\n")
    message = str(_translate("ray://127.0.0.1:10001", ConnectionAbortedError(traceback)))
    assert message.startswith("no Ray Client session at ray://127.0.0.1:10001: Initialization failure from server: "
                              "RuntimeError: Proxy failed to Connect to backend!;"), message
    assert "Traceback" not in message and "\n" not in message
    plain = str(_translate("127.0.0.1:6379", ConnectionError("refused\nmore detail")))
    assert "refused;" in plain and "more detail" not in plain


@pytest.mark.parametrize("failures, tries, refused", [(1, 2, False), (2, 2, True)])
def test_a_ray_client_session_that_failed_to_start_is_tried_once_more(monkeypatch, failures, tries, refused):
    """A session whose server the head failed to start is tried again (a new server, on the
    next port); a second failure is the one-line refusal with the head's reason."""
    import ray

    from sparsetopo.errors import SparsetopoError
    from sparsetopo.sweep import cluster

    calls = []

    def init(address, **options):
        calls.append(address)
        if len(calls) <= failures:
            raise ConnectionAbortedError("Initialization failure from server:\nTraceback (most recent call last):"
                                         "\nRuntimeError: Starting Ray client server failed.")

    monkeypatch.setattr(cluster, "check_address", lambda address: None)
    monkeypatch.setattr(ray, "init", init)
    if refused:
        with pytest.raises(SparsetopoError, match="Starting Ray client server failed"):
            cluster.connect("ray://127.0.0.1:10001")
    else:
        cluster.connect("ray://127.0.0.1:10001")
    assert calls == ["ray://127.0.0.1:10001"] * tries


def test_other_connection_failures_are_not_tried_again(monkeypatch):
    import ray

    from sparsetopo.errors import SparsetopoError
    from sparsetopo.sweep import cluster

    calls = []

    def init(address, **options):
        calls.append(address)
        raise ConnectionError("Initialization failure from server:\nRuntimeError: no")

    monkeypatch.setattr(cluster, "check_address", lambda address: None)
    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(SparsetopoError, match="cannot reach the Ray cluster at 127.0.0.1:6379"):
        cluster.connect("127.0.0.1:6379")   # not a Ray Client address: no session server to retry
    assert len(calls) == 1


class FakeRay:
    """Stands in for the ray module where only the cluster's CPUs matter."""

    def __init__(self, cpus):
        self.cpus = cpus

    def cluster_resources(self):
        return {"CPU": float(self.cpus)}


def test_tasks_in_flight_follow_the_clusters_cpus_and_workers_caps_them():
    from sparsetopo.sweep.executors import RayExecutor

    pool = RayExecutor.__new__(RayExecutor)   # no connection: only slots() is exercised
    pool.ray, pool.watch, pool.cap, pool.cpus, pool.read_at = FakeRay(8), None, None, 0, -1e9
    assert pool.slots() == 8
    pool.ray.cpus = 12                          # a node joined: seen at the next read
    pool.read_at = -1e9
    assert pool.slots() == 12
    pool.ray.cpus = 4                           # and read again no more often than REFRESH_SECONDS
    assert pool.slots() == 12
    pool.read_at = -1e9
    assert pool.slots() == 4
    pool.cap, pool.read_at = 3, -1e9            # --workers 3
    assert pool.slots() == 3


# -- real clusters ----------------------------------------------------------------------------------

needs_ray_start = pytest.mark.skipif(not ray_start_available(), reason="'ray start' is not available here")


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, 4 CPUs each (more than this machine's cores)."""
    if not ray_start_available():
        pytest.skip("'ray start' is not available here")
    with LocalCluster() as running:
        running.add_node(num_cpus=4)
        running.add_node(num_cpus=4)
        running.wait_cpus(8)
        yield running


def sweep(folder, cluster, db, *extra, env=None, popen=False):
    command = [sys.executable, "-m", "sparsetopo", "sweep", "run", "cluster.toml", "--db", db, "--executor", "ray",
               "--address", cluster.address, "--chunk-size", "1", *extra]
    environment = {**cluster.env, **(env or {})}
    if popen:
        return subprocess.Popen(command, cwd=folder, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=600)


def rows(db: Path) -> dict:
    with sqlite3.connect(db) as con:
        return {rid: (acc, loss) for rid, acc, loss in con.execute("SELECT run_id, test_accuracy, train_loss FROM runs")}


def stored(db: Path) -> int:
    try:
        with sqlite3.connect(db) as con:
            return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def run_tracking_nodes(driver: subprocess.Popen, cluster) -> tuple[str, str, dict]:
    """Wait for ``driver``; meanwhile note which node each live process belongs to (Ray ends
    a job's workers with its driver, so afterwards their pids name nothing)."""
    nodes: dict = {}
    while driver.poll() is None:
        for name in cluster.nodes:
            nodes.update({pid: name for pid in cluster.node_pids(name)})
        time.sleep(1)
    out, err = driver.communicate()
    return out, err, nodes


@needs_ray_start
@pytest.mark.slow
def test_a_sweep_uses_every_cpu_of_both_nodes_and_matches_local_processes(folder, cluster):
    started = time.perf_counter()
    driver = sweep(folder, cluster, "ray.sqlite", popen=True)
    out, err, nodes = run_tracking_nodes(driver, cluster)
    wall = time.perf_counter() - started
    assert driver.returncode == 0, err[-3000:]
    assert "8 CPUs in use" in err                                # the progress line
    with sqlite3.connect(folder / "ray.sqlite") as con:
        workers = [w for (w,) in con.execute("SELECT worker FROM runs")]
        cpus = json.loads(con.execute("SELECT value FROM meta WHERE key = 'workers'").fetchone()[0])
    assert cpus == 8   # no --workers: the cluster's CPUs, not this machine's 2 cores
    per_node: dict = {}
    for worker in workers:
        node = nodes.get(int(worker.rsplit(":", 1)[1]))
        per_node[node] = per_node.get(node, 0) + 1
    print(f"\ntasks per node {per_node}, wall {wall:.0f} s")
    assert set(per_node) == set(cluster.nodes), per_node   # both nodes trained runs
    status = cli("sweep", "status", "--db", "ray.sqlite", cwd=folder)
    assert "on 8 CPUs" in status.stdout
    local = cli("sweep", "run", "cluster.toml", "--db", "local.sqlite", "--executor", "process", "--workers", "2",
                "--chunk-size", "1", cwd=folder, env={**THREADS, "PYTHONPATH": cluster.env["PYTHONPATH"]})
    assert local.returncode == 0, local.stderr[-2000:]
    assert rows(folder / "ray.sqlite") == rows(folder / "local.sqlite")
    assert len(rows(folder / "local.sqlite")) == RUNS


@needs_ray_start
@pytest.mark.slow
def test_a_ray_client_address_runs_the_sweep_too_and_workers_caps_the_tasks(folder, cluster):
    """ray://HEAD:PORT (Ray Client, what 'sparsetopo[ray]' installs ray[client] for), with
    --workers 3: three tasks at most, although the cluster has eight CPUs."""
    result = subprocess.run([sys.executable, "-m", "sparsetopo", "sweep", "run", "cluster.toml", "--db", "c.sqlite",
                             "--executor", "ray", "--address", f"ray://127.0.0.1:{cluster.client_port}",
                             "--workers", "3"], cwd=folder, env=cluster.env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{result.stderr[-3000:]}\nthe head's Ray Client logs:\n{cluster.client_server_logs()}"
    assert len(rows(folder / "c.sqlite")) == RUNS
    assert "3 CPUs in use" in result.stderr and "8 CPUs" not in result.stderr


@needs_ray_start
@pytest.mark.slow
def test_another_ray_version_is_one_line_and_no_store(folder, cluster):
    code = ("import sys, ray; ray.__version__ = '2.0.0'; from sparsetopo.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    before = snapshot(folder)
    result = subprocess.run([sys.executable, "-c", code, "sweep", "run", "cluster.toml", "--db", "s.sqlite",
                             "--executor", "ray", "--address", cluster.address], cwd=folder, env=cluster.env,
                            capture_output=True, text=True, timeout=300)
    import ray

    assert_refused(result, cluster.address, "Ray 2.0.0", f"Ray {ray.__version__}", f"ray[client]=={ray.__version__}")
    no_store(folder, before)


def training(cluster, node: str) -> bool:
    """Whether a worker of ``node`` runs a sweep task now (Ray names it after the function)."""
    for pid in cluster.node_pids(node):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_ray_call"):
                return True
        except OSError:
            continue
    return False


def free_cpus(cluster) -> float:
    code = (f"import ray; ray.init(address={cluster.address!r}, log_to_driver=False, logging_level='ERROR'); "
            "print(ray.available_resources().get('CPU', 0))")
    out = subprocess.run([sys.executable, "-c", code], env=cluster.env, capture_output=True, text=True, timeout=120)
    return float(out.stdout.strip().splitlines()[-1])


def wait_for(predicate, timeout: float, every: float = 0.5) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def mid_sweep(driver: subprocess.Popen, db: Path, busy, timeout: float = 300) -> bool:
    """Wait until ``driver`` has stored a run and ``busy()`` holds while it still runs; a
    driver that ends first fails the test with its own output, not after the timeout."""
    seen = wait_for(lambda: driver.poll() is not None or (stored(db) >= 1 and busy()), timeout)
    if driver.poll() is not None:
        out, err = driver.communicate()
        pytest.fail(f"the sweep ended (exit {driver.returncode}, {stored(db)} runs stored) before the fault "
                    f"could be injected:\n{err[-3000:]}")
    return seen


@needs_ray_start
@pytest.mark.slow
def test_sigterm_to_the_driver_is_an_interrupt_and_frees_the_cluster(folder, cluster):
    driver = sweep(folder, cluster, "term.sqlite", popen=True)
    try:
        assert wait_for(lambda: any(training(cluster, node) for node in cluster.nodes), 300)
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
    assert driver.returncode == 130, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == "sparsetopo: interrupted", err[-3000:]
    assert wait_for(lambda: free_cpus(cluster) == 8, 60, every=2)   # its tasks were cancelled
    assert not any(training(cluster, node) for node in cluster.nodes)


@needs_ray_start
@pytest.mark.slow
def test_a_node_killed_mid_sweep_loses_no_run_and_stores_none_twice(folder, cluster):
    """Runs last; it kills the second node while it trains a run (24 runs: three rounds of 8)."""
    (folder / "cluster.toml").write_text(SPEC.replace("seeds = 4", "seeds = 8"))
    started = time.perf_counter()
    driver = sweep(folder, cluster, "kill.sqlite", popen=True)
    try:
        assert mid_sweep(driver, folder / "kill.sqlite", lambda: training(cluster, cluster.nodes[1]))
        killed = cluster.kill_node(cluster.nodes[1])
        out, err = driver.communicate(timeout=600)
    finally:
        driver.kill()
    wall = time.perf_counter() - started
    assert driver.returncode == 0, err[-3000:]
    with sqlite3.connect(folder / "kill.sqlite") as con:
        planned = con.execute("SELECT COUNT(*) FROM planned").fetchone()[0]
        ids = [rid for (rid,) in con.execute("SELECT run_id FROM runs")]
        retries = con.execute("SELECT SUM(attempts - 1) FROM runs").fetchone()[0]   # attempts that failed
    print(f"\nnode killed ({killed} processes): {len(ids)} of {planned} runs stored, {retries} retries, "
          f"wall {wall:.0f} s")
    assert killed > 0
    assert len(ids) == len(set(ids)) == planned == 2 * RUNS
    assert retries >= 1   # the node died with work in flight, and that work was done again elsewhere
    assert "0 failed" in out


@needs_ray_start
@pytest.mark.slow
def test_token_authentication_and_a_lost_head(folder):
    """A head with token authentication: a driver without the token, or with a wrong one, is
    refused with one line and no store; with it, the sweep runs, and losing the head then ends
    it within a minute with one line saying what is safe and how to resume."""
    token = "sparsetopo-test-token-0123456789abcdef"
    with LocalCluster(env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}) as head:
        head.add_node(num_cpus=2)
        bare = {k: v for k, v in head.env.items() if not k.startswith("RAY_AUTH")}
        before = snapshot(folder)
        for env, needle in ((bare, "no token was given"), ({**bare, "RAY_AUTH_TOKEN": "wrong" * 8}, "wrong")):
            result = subprocess.run([sys.executable, "-m", "sparsetopo", "sweep", "run", "cluster.toml", "--db",
                                     "s.sqlite", "--executor", "ray", "--address", head.address], cwd=folder,
                                    env=env, capture_output=True, text=True, timeout=300)
            assert_refused(result, head.address, "token authentication", needle, "RAY_AUTH_TOKEN")
            no_store(folder, before)

        # 24 runs on 2 CPUs, one task each (a population would store them in two or three
        # batches, and the sweep could end between two polls): the head dies mid-sweep
        (folder / "cluster.toml").write_text(SPEC.replace("seeds = 4", "seeds = 8"))
        driver = sweep(folder, head, "lost.sqlite", "--no-population", popen=True)
        try:
            assert mid_sweep(driver, folder / "lost.sqlite", lambda: training(head, head.nodes[0]))
            head.kill_node(head.nodes[0])
            lost = time.perf_counter()
            out, err = driver.communicate(timeout=120)
        finally:
            driver.kill()
        seconds = time.perf_counter() - lost
    print(f"\nhead lost: the driver ended after {seconds:.0f} s: {err.strip().splitlines()[-1]}")
    assert seconds < 60
    assert driver.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "Traceback" not in err, err[-3000:]
    assert last.startswith("sparsetopo: error: lost the Ray cluster's head") and "safe" in last, last
    assert "sparsetopo sweep run cluster.toml --db lost.sqlite" in last, last
