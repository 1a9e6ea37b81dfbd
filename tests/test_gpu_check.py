"""benchmarks/gpu_check.py, the one-run check of a CUDA machine, on a machine without a GPU:
it says so, writes a JSON that says so, and exits cleanly; ``--smoke`` runs its parts on the CPU."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_check", module)   # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour on a machine without a CUDA GPU")
def test_without_a_gpu_it_says_so_writes_json_and_exits_cleanly(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1 and "no CUDA GPU" in done.stderr
    report = json.loads(out.read_text())
    assert report["gpu"] is False and "no CUDA GPU" in report["reason"]
    assert set(report) == {"gpu", "reason", "torch", "python"}   # nothing was run


def test_it_finds_the_tests_that_skip_without_cuda():
    """The masked, block and population CUDA tests, by their skip reason, and no other file."""
    files = {path.name for path in load_script().cuda_test_files()}
    assert {"test_block_layer.py", "test_device.py", "test_sparsify.py", "test_io.py"} <= files
    for name in files:
        assert 'reason="no CUDA GPU"' in (ROOT / "tests" / name).read_text()
    assert "test_layout.py" not in files


@pytest.mark.slow
def test_smoke_runs_every_part_on_the_cpu(tmp_path):
    out = tmp_path / "smoke.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert report["smoke"] is True
    for part in ("tests", "block_layers", "paper_grid"):
        assert "error" not in report[part], report[part]
    assert report["tests"]["failed"] == 0 and report["tests"]["skipped"] >= 4
    (point,) = report["block_layers"]["points"]
    assert point["width"] == 64 and point["step_ratio"] > 0
    grid = report["paper_grid"]
    assert grid["networks"] == 3067 and len(grid["groups"]) == 2
    assert all(g["projected_hours_population"] > 0 and g["projected_hours_one_at_a_time"] > 0 for g in grid["groups"])
