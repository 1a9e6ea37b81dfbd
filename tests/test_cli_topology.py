"""`sparsetopo topology`: JSON contract, pictures, saving, and one-line errors with exit code 2."""

import hashlib
import json
import os
import subprocess
import sys

import matplotlib.image as mpimg
import numpy as np
import pytest

from sparsetopo import Topology, build
from sparsetopo.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_json_reports_degrees_and_mask_hash(capsys):
    code, out, err = run(capsys, "topology", "regular_rotating", "--n-in", "784", "--n-out", "300", "-k", "30", "--json")
    assert code == 0 and err == ""
    info = json.loads(out)
    assert info["out_degree"] == {"min": 30, "max": 30, "mean": 30.0}
    assert 60 <= info["in_degree"]["min"] <= info["in_degree"]["max"] <= 90
    assert info["nnz"] == 784 * 30 and info["density"] == pytest.approx(0.1)
    mask = np.zeros((784, 300), dtype=bool)
    for i in range(784):
        mask[i, [(i + p) % 300 for p in range(30)]] = True
    assert info["mask_sha256"] == hashlib.sha256(np.packbits(mask).tobytes()).hexdigest()


def test_summary_png_and_save(tmp_path, capsys):
    png, npz = tmp_path / "g.png", tmp_path / "g.npz"
    code, out, _ = run(capsys, "topology", "random_regular", "--n-in", "20", "--n-out", "10", "-k", "3",
                       "--seed", "7", "--png", str(png), "--save", str(npz))
    assert code == 0 and "random_regular" in out and "density 0.3000" in out
    image = mpimg.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200
    assert image[..., :3].min() < 0.2 and image[..., :3].max() > 0.9  # black edges on white
    assert Topology.load(npz).fingerprint == build("random_regular", 20, 10, 3, seed=7).fingerprint


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["-k", "0"], "k=0"),
        (["-k", "301"], "1 <= k <= 300"),
        (["-k", "3.5"], "'3.5' is not a valid integer"),
        (["--n-in", "0"], "n_in=0"),
        (["--n-out", "0"], "n_out=0"),
    ],
)
def test_bad_values_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, argv, fragment):
    base = {"--n-in": "784", "--n-out": "300", "-k": "30"}
    for flag, value in zip(argv[::2], argv[1::2]):
        base[flag] = value
    args = ["topology", "regular_rotating"] + [x for kv in base.items() for x in kv]
    png, npz = tmp_path / "x.png", tmp_path / "x.npz"
    code, out, err = run(capsys, *args, "--png", str(png), "--save", str(npz))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and fragment in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_construction_lists_valid_names_from_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "sparsetopo", "topology", "ring", "--n-in", "5", "--n-out", "5", "-k", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "'ring'" in proc.stderr and "fibonacci_rotating" in proc.stderr and "Traceback" not in proc.stderr


def test_help_lists_every_construction(capsys):
    from sparsetopo.topology import CONSTRUCTIONS

    code, out, _ = run(capsys, "topology", "--help")
    assert code == 0 and all(name in out for name in CONSTRUCTIONS)


# -- outputs that cannot be written: one line naming the path, exit 2, nothing touched ------------
def snapshot(folder):
    """sha256 of every file under ``folder``, hidden ones included (a leftover temporary shows)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli(*argv, prefix=()):
    return subprocess.run([*prefix, sys.executable, "-m", "sparsetopo", "topology", "regular_rotating",
                           "--n-in", "20", "--n-out", "10", "-k", "3", "--no-metrics", *argv],
                          capture_output=True, text=True, timeout=120)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("sparsetopo: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr


@pytest.fixture
def user_files(tmp_path):
    """A folder holding a picture and a topology of the user's: neither may change."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "old.png").write_bytes(b"\x89PNG not really")
    build("random_regular", 12, 6, 2, seed=1).save(folder / "old.npz")
    return folder


@pytest.mark.parametrize(
    "bad,fragments",
    [
        ("/proc/sparsetopo-test.png", ["--png /proc/sparsetopo-test.png", "cannot write"]),
        ("{tmp}/missing/deeper/g.png", ["--png {tmp}/missing/deeper/g.png", "does not exist"]),
        ("{tmp}/pipe.png", ["--png {tmp}/pipe.png", "not a regular file"]),  # a FIFO, made below
        ("{tmp}/g.txt", ["--png {tmp}/g.txt", "'txt' is not a picture format", ".png"]),
    ],
)
def test_unwritable_png_fails_before_writing_anything(tmp_path, user_files, bad, fragments):
    # the good --save into the user's folder must not be written either: both or neither
    bad = bad.format(tmp=tmp_path)
    if bad.endswith("pipe.png"):
        # a special file the atomic rename would replace (never /dev/null: as root, a regression
        # would replace the system's)
        os.mkfifo(bad)
    before, listing = snapshot(user_files), sorted(p.name for p in tmp_path.iterdir())
    proc = cli("--png", bad, "--save", str(user_files / "old.npz"))
    assert_one_line_error(proc, *(f.format(tmp=tmp_path) for f in fragments))
    assert snapshot(user_files) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no folder made, no file left
    assert not (tmp_path / "missing").exists()


def _read_only(folder):
    """A command prefix that runs with ``folder`` read-only, or None where that is impossible.

    ``chmod`` does not stop root, so as root the folder is bind-mounted read-only in a private
    user and mount namespace (``unshare``), which is a real read-only file system to the process.
    """
    import shutil

    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    if shutil.which("unshare"):
        prefix = ["unshare", "-rm", "sh", "-c", script, str(folder)]
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    return None


def test_read_only_folder_gives_one_line_and_keeps_the_users_files(user_files):
    before = snapshot(user_files)
    prefix = _read_only(user_files)
    if prefix is None:
        pytest.skip("running as root without user namespaces: no read-only folder can be made")
    try:
        for flag, name in (("--save", "old.npz"), ("--png", "new.png")):  # replace one, add one
            target = user_files / name
            proc = cli(flag, str(target), prefix=prefix)
            assert_one_line_error(proc, f"{flag} {target}", "cannot write")
    finally:
        user_files.chmod(0o755)
    assert snapshot(user_files) == before


def test_a_failed_write_leaves_neither_output(tmp_path, user_files, capsys, monkeypatch):
    """A write failing after the checks (a full disk, say) leaves the picture unwritten too."""
    import errno

    def full_disk(self, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Topology, "save", full_disk)
    before = snapshot(user_files)
    code, out, err = run(capsys, "topology", "regular_rotating", "--n-in", "20", "--n-out", "10", "-k", "3",
                         "--no-metrics", "--png", str(user_files / "old.png"), "--save", str(user_files / "old.npz"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"cannot write {user_files / 'old.npz'}: No space left on device" in err
    assert snapshot(user_files) == before
