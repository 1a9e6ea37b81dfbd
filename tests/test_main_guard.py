"""A script that starts a process sweep without ``if __name__ == "__main__":`` stops at once.

forkserver workers import the coordinator's script again before their first task; without the
guard each would start a sweep of its own and die. The coordinator says so in one line, marks
no run failed and retries nothing. Each script runs as a newcomer runs it: a file, ``python
file.py``, in a subprocess.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pytest

from sparsetopo.sweep.executors import GUARD

SPEC = """
[protocol]
dataset = "digits"
epochs = 1
lr = 0.5
limit_train = 64
backend = "masked"

[grid.a]
constructions = ["regular_rotating"]
hidden = [8]
degrees_in = [2]
seeds = 2
"""

# the README's run_sweep snippet, on a tiny spec
SNIPPET = """from sparsetopo.sweep import run_sweep, load_results
summary = run_sweep("spec.toml", "tiny.sqlite", executor="process", workers=2)
frame = load_results("tiny.sqlite")
print(len(frame), "runs")
"""


def run_script(folder, text: str) -> subprocess.CompletedProcess:
    (folder / "spec.toml").write_text(SPEC)
    (folder / "script.py").write_text(text)
    # a bound, not a target: before the guard was detected this kept restarting workers for minutes
    return subprocess.run([sys.executable, "script.py"], cwd=folder, capture_output=True, text=True, timeout=120)


def store_counts(db) -> tuple[int, int]:
    with sqlite3.connect(db) as conn:
        return (conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0],
                conn.execute("SELECT COUNT(*) FROM failed").fetchone()[0])


def test_the_readme_snippet_without_the_guard_stops_naming_it(tmp_path):
    out = run_script(tmp_path, SNIPPET)
    assert out.returncode != 0
    assert GUARD in out.stderr.strip().splitlines()[-1], out.stderr[-3000:]
    # the workers leave quietly: one traceback (the coordinator's), none of multiprocessing's
    assert out.stderr.count("Traceback") == 1 and "bootstrapping phase" not in out.stderr, out.stderr[-3000:]
    assert store_counts(tmp_path / "tiny.sqlite") == (0, 0)   # no run trained, none marked failed


@pytest.mark.slow   # two interpreters importing torch and the CLI
def test_sweep_run_called_from_an_unguarded_script_is_one_line_exit_2(tmp_path):
    out = run_script(tmp_path, "import sys\nfrom sparsetopo.cli import main\n"
                               "sys.exit(main(['sweep', 'run', 'spec.toml', '--db', 'tiny.sqlite', "
                               "'--workers', '2']))\n")
    assert out.returncode == 2, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if line.startswith("sparsetopo: error:")]
    assert len(lines) == 1 and GUARD in lines[0] and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert store_counts(tmp_path / "tiny.sqlite") == (0, 0)


@pytest.mark.slow
def test_the_readme_snippet_with_the_guard_completes(tmp_path):
    guarded = "if __name__ == \"__main__\":\n" + "".join(f"    {line}\n" for line in SNIPPET.splitlines())
    out = run_script(tmp_path, guarded)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "2 runs"
    assert store_counts(tmp_path / "tiny.sqlite") == (2, 0)
