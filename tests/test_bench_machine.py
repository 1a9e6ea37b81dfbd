"""benchmarks/_common.py's machine record: it tells apart hosts that share a CPU model name."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SPEC = importlib.util.spec_from_file_location("bench_common",
                                              Path(__file__).resolve().parents[1] / "benchmarks" / "_common.py")
common = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(common)

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
cpu MHz\t\t: 1996.249
flags\t\t: fpu sse2 avx2 fma sha_ni

processor\t: 1
cpu family\t: 25
model\t\t: 17
model name\t: Other
flags\t\t: avx2 avx512f amx_tile
"""


def test_cpu_reads_the_first_processor_and_its_vector_extensions(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(CPUINFO)
    assert common.cpu(str(info)) == {"cpu": "AMD EPYC", "cpu_family": "23", "cpu_model": "1",
                                     "cpu_mhz": "1996.249", "cpu_extensions": ["avx2"]}


def test_cpu_without_cpuinfo_still_names_the_machine(tmp_path):
    assert set(common.cpu(str(tmp_path / "missing"))) == {"cpu"}


def test_dense_rate_is_measured_on_one_thread_and_restores_torch_threads():
    before = torch.get_num_threads()
    rate = common.dense_rate()
    assert torch.get_num_threads() == before
    assert 0.1 < rate < 10_000   # GFLOP/s of one core, not seconds or FLOP/s
    record = common.machine()
    assert record["dense_gflops_one_thread"] == rate and record["torch_threads"] == before
