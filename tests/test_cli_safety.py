"""The CLI's promise, case by case: bad input gives one line naming the value, exit code 2 (130
for an interrupt), no traceback, and no file of the user's created or changed.

Every case runs the real console entry point in a subprocess and compares sha256 hashes of
every file in its folder before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = """
[sweep]
name = "tiny"

[protocol]
dataset = "digits"
epochs = 1
lr = 0.5
limit_train = 120
backend = "masked"

[grid.a]
constructions = ["regular_rotating", "fully_connected"]
hidden = [8]
degrees_in = [2]
seeds = 2
"""


def cli(*args, cwd, env=None, timeout=300) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "sparsetopo", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` (the user's files, byte for byte)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused_in_parts(result: subprocess.CompletedProcess, headline: str, *needles: str) -> list[str]:
    """Exit code 2, no traceback, a long error in parts: a short first line starting with
    ``headline``, then one indented line per part, the parts holding every needle."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr + result.stdout, result.stderr
    assert lines[0].startswith(f"sparsetopo: error: {headline}") and len(lines) > 1, result.stderr
    assert all(line.startswith("  ") for line in lines[1:]), result.stderr
    for needle in needles:
        assert any(needle in line for line in lines[1:]), (needle, result.stderr)
    return lines


def assert_refused(result: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit code 2, exactly one line on stderr naming what is wrong, no traceback."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert len(lines) == 1 and lines[0].startswith("sparsetopo: error:"), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    other = sqlite3.connect(tmp_path / "other.sqlite")
    other.execute("CREATE TABLE customers (name TEXT)")
    other.execute("INSERT INTO customers VALUES ('a user''s data')")
    other.commit()
    other.close()
    (tmp_path / "empty.sqlite").write_bytes(b"")
    (tmp_path / "notes.sqlite").write_text("not a database at all\n")
    return tmp_path


# -- stores: read-only commands never create or change one; a user's other database is never touched

READERS = [
    ("sweep", "status", "--db"),
    ("sweep", "export", "--csv", "out.csv", "--db"),
    ("sweep", "measures", "--db"),
    ("analyze", "--out", "analysis", "--db"),
    ("report", "--out", "report", "--db"),
]


@pytest.mark.parametrize("command", READERS, ids=lambda c: "-".join(c[:2]))
@pytest.mark.parametrize("name", ["empty.sqlite", "other.sqlite", "notes.sqlite", "missing.sqlite"])
def test_commands_refuse_a_file_that_is_not_a_store_and_leave_it_alone(folder, command, name):
    before = snapshot(folder)
    result = cli(*command, name, cwd=folder)
    assert_refused(result, name)
    assert snapshot(folder) == before


@pytest.mark.parametrize("name", ["other.sqlite", "notes.sqlite"])
def test_sweep_run_refuses_a_database_that_is_not_a_store(folder, name):
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "tiny.toml", "--db", name, "--executor", "inline", cwd=folder),
                   name, "not a sparsetopo sweep store")
    assert snapshot(folder) == before


def test_a_store_whose_creation_was_interrupted_is_made_the_store(folder):
    """Ctrl-C between the file's header and its tables leaves an SQLite file with nothing in it;
    the next 'sweep run' resumes into it rather than refusing it as someone else's."""
    blank = sqlite3.connect(folder / "s.sqlite")
    blank.execute("PRAGMA journal_mode=WAL")   # what the store writes before its tables
    blank.close()
    assert (folder / "s.sqlite").stat().st_size > 0
    result = cli("sweep", "run", "tiny.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder)
    assert result.returncode == 0, result.stderr
    con = sqlite3.connect(folder / "s.sqlite")
    assert con.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4   # TINY: 2 constructions x 2 seeds
    con.close()


def test_another_spec_is_refused_unless_added_and_the_store_keeps_both(folder):
    assert cli("sweep", "run", "tiny.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder).returncode == 0
    (folder / "bigger.toml").write_text(TINY.replace('name = "tiny"', 'name = "bigger"').replace("seeds = 2", "seeds = 3"))
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "bigger.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder),
                   "s.sqlite", "tiny", "--add")
    assert snapshot(folder) == before
    added = cli("sweep", "run", "bigger.toml", "--db", "s.sqlite", "--executor", "inline", "--add", cwd=folder)
    assert added.returncode == 0, added.stderr
    con = sqlite3.connect(folder / "s.sqlite")
    meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta")}
    runs = con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs").fetchone()
    con.close()
    assert [s["name"] for s in meta["specs"]] == ["tiny", "bigger"]
    assert meta["spec"]["name"] == "tiny"        # the store's first spec still names it
    assert runs == (6, 6)                         # 4 + the 2 runs of seed 2, each once
    # the same spec again is simply resumed
    assert cli("sweep", "run", "tiny.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder).returncode == 0


def _without(folder: Path, module: str) -> dict:
    """An environment in which ``import module`` fails, as on a machine without it."""
    fake = folder / "_without" / module
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(f"raise ImportError('no module named {module}')\n")
    return {"PYTHONPATH": os.pathsep.join([str(folder / "_without"), os.environ.get("PYTHONPATH", "")])}


def test_missing_ray_is_reported_before_a_store_is_created(folder):
    env = _without(folder, "ray")
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "tiny.toml", "--db", "new.sqlite", "--executor", "ray", cwd=folder, env=env),
                   "Ray")
    assert snapshot(folder) == before and not (folder / "new.sqlite").exists()


def test_missing_pyarrow_is_reported_before_the_csv_is_written(folder):
    assert cli("sweep", "run", "tiny.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder).returncode == 0
    env = _without(folder, "pyarrow")
    before = snapshot(folder)
    assert_refused(cli("sweep", "export", "--db", "s.sqlite", "--csv", "a.csv", "--parquet", "a.parquet",
                       cwd=folder, env=env), "pyarrow")
    assert snapshot(folder) == before


def test_a_spec_that_is_not_utf8_is_one_line(folder):
    (folder / "latin.toml").write_bytes(TINY.replace("tiny", "t\xe9st").encode("latin-1"))
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "latin.toml", "--db", "s.sqlite", cwd=folder), "latin.toml", "UTF-8")
    assert snapshot(folder) == before


def test_a_huge_grid_asks_for_yes(folder):
    (folder / "huge.toml").write_text(TINY.replace('constructions = ["regular_rotating", "fully_connected"]',
                                                   'constructions = ["fully_connected"]')
                                      .replace("seeds = 2", "seeds = 100001"))
    before = snapshot(folder)
    assert_refused(cli("sweep", "run", "huge.toml", "--db", "huge.sqlite", cwd=folder), "100,001 runs", "--yes")
    assert snapshot(folder) == before


# -- outputs: unwritable places are one line naming the path, and nothing is half-written

UNWRITABLE = "/proc/sparsetopo-cannot-write-here"


def test_unwritable_outputs_are_one_line_naming_the_path(folder):
    assert cli("sweep", "run", "tiny.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder).returncode == 0
    before = snapshot(folder)
    for args in (("sweep", "export", "--db", "s.sqlite", "--csv", f"{UNWRITABLE}/a.csv"),
                 ("sweep", "export", "--db", "s.sqlite", "--csv", "fine.csv", "--parquet", f"{UNWRITABLE}/a.parquet"),
                 ("analyze", "--db", "s.sqlite", "--out", UNWRITABLE),
                 ("report", "--db", "s.sqlite", "--out", UNWRITABLE),
                 ("train", "--dataset", "digits", "--hidden", "8", "-k", "2,10", "--epochs", "1", "--out", UNWRITABLE)):
        assert_refused(cli(*args, cwd=folder), UNWRITABLE)
    assert snapshot(folder) == before


# -- train --out: another run in the folder is never overwritten silently

TRAIN = ("train", "--dataset", "digits", "--hidden", "8", "-k", "2,10", "--epochs", "1", "--lr", "0.5")


def test_train_out_refuses_to_overwrite_another_run(folder):
    first = cli(*TRAIN, "--out", "run", cwd=folder)
    assert first.returncode == 0, first.stderr
    before = snapshot(folder)
    assert_refused(cli(*TRAIN, "--seed", "1", "--out", "run", cwd=folder), "holds another run", "--overwrite")
    same = cli(*TRAIN, "--out", "run", cwd=folder)   # the very run again: resuming is what it may mean
    assert_refused(same, "already holds this run", "finished", "--resume to load it", "--overwrite")
    assert_refused(cli(*TRAIN, "--seed", "1", "--out", "run", "--resume", cwd=folder), "different configuration")
    assert snapshot(folder) == before
    again = cli(*TRAIN, "--seed", "1", "--out", "run", "--overwrite", "--json", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert json.loads((folder / "run" / "result.json").read_text())["config"]["seed"] == 1


# -- numbers that break training

def test_an_lr_beyond_float32_is_refused_before_training(folder):
    before = snapshot(folder)
    assert_refused(cli(*TRAIN[:-1], "1e300", "--backend", "masked", cwd=folder), "lr=1e+300")
    assert snapshot(folder) == before


def test_a_saturated_run_ends_diverged_with_its_reason(folder):
    result = cli(*TRAIN[:-1], "1e6", "--backend", "masked", "--epochs", "2", "--json", cwd=folder)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["status"] == "diverged"
    assert "weight" in payload["reason"]


# -- data: a sweep on missing data stops at once with one message

def test_a_sweep_without_its_data_stops_at_once(folder):
    (folder / "mnist.toml").write_text(TINY.replace('dataset = "digits"', 'dataset = "mnist"'))
    env = {"XDG_CACHE_HOME": str(folder / "cache"), "SPARSETOPO_DATA": "",
           # every mirror unreachable at once, whether or not this machine has a network
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    before = snapshot(folder)
    started = time.monotonic()
    result = cli("sweep", "run", "mnist.toml", "--db", "m.sqlite", cwd=folder, env=env, timeout=120)
    assert time.monotonic() - started < 60
    lines = assert_refused_in_parts(result, "could not download train-images-idx3-ubyte", "--data-dir")
    assert "network" in lines[0]
    assert {k: v for k, v in snapshot(folder).items() if not k.startswith("cache")} == before
    assert not (folder / "m.sqlite").exists()


def test_files_that_fail_their_checksum_are_named(folder):
    cache = folder / "cache" / "sparsetopo" / "mnist"
    cache.mkdir(parents=True)
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (cache / f"{stem}.gz").write_bytes(b"\x1f\x8b not the published file")
    env = {"XDG_CACHE_HOME": str(folder / "cache"), "http_proxy": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    result = cli("train", "--dataset", "mnist", "--epochs", "1", cwd=folder, env=env, timeout=120)
    assert_refused_in_parts(result, "could not download", "fail their md5 check", str(cache))


# -- interrupts: Ctrl-C to the whole process group, at random moments

# 24 runs of a few seconds each: long enough that 20 interrupts land mid-sweep
SLOW = TINY.replace("epochs = 1", "epochs = 20").replace("limit_train = 120", "limit_train = 1347") \
           .replace("hidden = [8]", "hidden = [16, 24, 32]").replace("seeds = 2", "seeds = 4")
SLOW_RUNS = 2 * 3 * 4


def _group_alive(pgid: int) -> list[str]:
    """Processes of the group that are still running (zombies are dead: only not yet reaped)."""
    out = subprocess.run(["ps", "-o", "stat=", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    return [s for s in out if not s.startswith("Z")]


def _ctrl_c_as_in_a_terminal():
    """Give the command SIGINT's default action, as a terminal's foreground job has it. A test
    run started in the background by a shell inherits SIGINT *ignored* (POSIX shells ignore it
    for asynchronous commands), and Python then never turns it into KeyboardInterrupt: the
    command would rightly go on, and this test would fail for the way it was launched."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_ctrl_c_while_the_forkserver_starts_is_held_not_lost():
    """The coordinator holds SIGINT back while it starts the forkserver; a Ctrl-C in that
    moment must interrupt it right after (an ignored one was lost, and the sweep went on), and
    a process started in that moment must not be interrupted by it."""
    import threading

    from sparsetopo.sweep.executors import _sigint_held

    child_code = ("import os, signal, sys, time; sys.stdout.write('up\\n'); sys.stdout.flush(); "
                  "time.sleep(1.5); print('survived')")
    reached = False
    # Python's own Ctrl-C handler, whatever the run inherited: a suite started in the background
    # by a shell inherits SIGINT ignored, and the held Ctrl-C would then be dropped, not raised
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with _sigint_held():
                child = subprocess.Popen([sys.executable, "-c", child_code], stdout=subprocess.PIPE, text=True)
                assert child.stdout.readline().strip() == "up"
                os.kill(child.pid, signal.SIGINT)
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)   # Ctrl-C now
                time.sleep(0.3)   # held: nothing is raised in here
                reached = True
            time.sleep(1.0)       # delivered as soon as the block ends
    finally:
        signal.signal(signal.SIGINT, previous)
    assert reached
    out, _ = child.communicate(timeout=30)
    assert child.returncode == 0 and out.strip() == "survived"


def test_a_ctrl_c_after_the_command_has_finished_prints_no_traceback(tmp_path):
    """A Ctrl-C that lands while Python runs its exit hooks (the sweep had just finished) raised
    KeyboardInterrupt inside torch's hook, and a traceback followed the sweep's output."""
    script = tmp_path / "late_ctrl_c.py"
    script.write_text(
        "import atexit, os, signal, sys, time\n"
        "from sparsetopo.cli import entry\n"
        "def ctrl_c_during_shutdown():\n"
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "    time.sleep(0.5)\n"
        "atexit.register(ctrl_c_during_shutdown)\n"
        "sys.argv = ['sparsetopo', '--version']\n"
        "sys.exit(entry())\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          preexec_fn=_ctrl_c_as_in_a_terminal)
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    assert done.returncode == 0 and "sparsetopo" in done.stdout, (done.returncode, done.stdout)


@pytest.mark.slow
def test_sigint_to_the_process_group_stops_everything_and_the_sweep_resumes(folder):
    (folder / "slow.toml").write_text(SLOW)
    rng = random.Random(14)
    command = [sys.executable, "-m", "sparsetopo", "sweep", "run", "slow.toml", "--db", "s.sqlite",
               "--workers", "2", "--chunk-size", "1", "--no-population"]
    for attempt in range(20):
        process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True, preexec_fn=_ctrl_c_as_in_a_terminal)
        time.sleep(rng.uniform(1.0, 6.0))
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"attempt {attempt}: still running 10 s after SIGINT")
        deadline = time.monotonic() + 10
        while _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(process.pid), f"attempt {attempt}: workers left behind"
        err = process.stderr.read()
        assert "Traceback" not in err, err
        assert process.returncode in (0, 130, -signal.SIGINT), (process.returncode, err)
    final = cli("sweep", "run", "slow.toml", "--db", "s.sqlite", "--workers", "2", cwd=folder)
    assert final.returncode == 0, final.stderr
    con = sqlite3.connect(folder / "s.sqlite")
    total, distinct = con.execute("SELECT COUNT(*), COUNT(DISTINCT run_id) FROM runs").fetchone()
    planned = con.execute("SELECT COUNT(*) FROM planned").fetchone()[0]
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert total == distinct == planned == SLOW_RUNS


def test_an_output_that_is_not_a_regular_file_is_never_replaced(folder):
    assert cli("sweep", "run", "tiny.toml", "--db", "s.sqlite", "--executor", "inline", cwd=folder).returncode == 0
    os.mkfifo(folder / "pipe.csv")
    assert_refused(cli("sweep", "export", "--db", "s.sqlite", "--csv", "pipe.csv", cwd=folder), "pipe.csv")
    assert (folder / "pipe.csv").is_fifo()
