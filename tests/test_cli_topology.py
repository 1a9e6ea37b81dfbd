"""`sparsetopo topology`: JSON contract, pictures, saving, and one-line errors with exit code 2."""

import hashlib
import json
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
