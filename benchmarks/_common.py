"""Helpers shared by the benchmark scripts: the machine description and interleaved timing."""

from __future__ import annotations

import argparse
import functools
import os
import platform
import subprocess
import sys
import statistics
import time

import numba
import torch

from sparsetopo.kernels.cache import drop_stale_cache
from sparsetopo.nn.calibration import alternating_medians

# A kernel source edited since numba cached its callers would otherwise be timed as it was.
drop_stale_cache()


def timing_arguments(doc: str, repeats: int) -> argparse.Namespace:
    """The command line of a timing benchmark (``--json``, ``--repeats``, ``--threads``), parsed,
    with torch's threads set as asked; ``doc``'s first line describes the script."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--threads", type=int, default=None, help="threads for torch (default: its own)")
    args = parser.parse_args()
    set_threads(args.threads)
    return args


def timing_record(args: argparse.Namespace, block: int, **fields) -> dict:
    """A benchmark's JSON result: ``fields`` (benchmark, ratios, seconds, ...) and how it was
    timed (threads, repeats, turns of ``block`` steps) on which machine."""
    return {**fields, "threads": args.threads, "repeats": args.repeats,
            "timing": f"turns of {block} consecutive steps per side, sides alternated; median over turns of the "
                      "mean step", "machine": machine()}


def set_threads(n: int | None) -> None:
    """Give torch and numba the same number of threads (None: leave their defaults)."""
    if n is not None:
        torch.set_num_threads(n)
        numba.set_num_threads(n)


def default_threads() -> int:
    """The threads torch and numba start with when nothing sets them: numba's default, one per
    core this process may use (torch's default is the same count here)."""
    return numba.config.NUMBA_NUM_THREADS


def busy_core():
    """A second process running a busy Python loop: one core held, as by a user's other work
    (returned once it runs: the interpreter's start takes tens of milliseconds). Kill it after."""
    busy = subprocess.Popen([sys.executable, "-c", "print(flush=True)\nwhile True: pass"], stdout=subprocess.PIPE)
    busy.stdout.readline()
    return busy


def control_step():
    """A callable doing fixed single-thread work that sparsetopo has no part in (a numpy gather
    and sum, about a millisecond), timed beside a layer under load: its own loaded / idle ratio
    is what the machine charges one thread when the other core is busy (on a virtual machine
    whose cores share a physical one, far from 1), the floor under any layer's ratio."""
    import numpy as np

    gen = np.random.default_rng(0)
    source = gen.random(1 << 20, dtype=np.float32)
    index = gen.integers(0, source.size, 1 << 18)
    return lambda: float(source[index].sum())


def machine() -> dict:
    """CPU, its dense rate, thread counts and library versions: a ratio means little without
    them. Two hosts both called "AMD EPYC" can differ twofold in ``nn.Linear``'s speed (one
    with AVX-512, one whose AVX2 units are half width), and every ratio against it with them."""
    return {**cpu(), "dense_gflops_one_thread": dense_rate(), "load_average_1min": load_average(),
            "command": " ".join([sys.executable.rsplit("/", 1)[-1]] + sys.argv),
            "cpu_affinity": _affinity(), "torch_threads": torch.get_num_threads(), "numba_threads": numba.get_num_threads(),
            "numba_threading_layer": _threading_layer(), "torch": torch.__version__, "numba": numba.__version__,
            "python": platform.python_version()}


#: The /proc/cpuinfo fields that tell hosts of one model name apart, and the vector extensions
#: that set a dense matmul's rate.
CPU_FIELDS = {"model name": "cpu", "cpu family": "cpu_family", "model": "cpu_model", "cpu MHz": "cpu_mhz"}
CPU_EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def cpu(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The first processor's model name, family, model number, clock and vector extensions, read
    from ``cpuinfo`` (``cpu`` alone, from :mod:`platform`, where there is no such file)."""
    found = {"cpu": platform.processor() or platform.machine()}
    try:
        with open(cpuinfo) as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if not key and len(found) > 1:
                    break  # the end of the first processor's block
                if key in CPU_FIELDS:
                    found[CPU_FIELDS[key]] = value
                elif key == "flags":
                    flags = set(value.split())
                    found["cpu_extensions"] = [f for f in CPU_EXTENSIONS if f in flags]
    except OSError:
        pass
    return found


@functools.cache
def dense_rate() -> float:
    """GFLOP/s of one thread multiplying two 1024 x 1024 float32 matrices with torch (the median of
    ten after two warm-ups, about a tenth of a second): the machine's dense speed, against which
    every ``nn.Linear`` baseline runs. Measured once per process; torch's threads are restored."""
    threads = torch.get_num_threads()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(1024, 1024, generator=gen), torch.rand(1024, 1024, generator=gen)
    torch.set_num_threads(1)
    try:
        times = []
        for i in range(12):
            tick = time.perf_counter()
            torch.mm(a, b)
            if i >= 2:
                times.append(time.perf_counter() - tick)
    finally:
        torch.set_num_threads(threads)
    return round(2 * 1024 ** 3 / statistics.median(times) / 1e9, 1)


def _threading_layer() -> str:
    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return "not initialised"


def training_step(layer, x, g, forward=None):
    """A callable running one training step of ``layer`` as a user's loop would: clear the
    gradients, ``forward()`` (by default ``layer(x)``), then ``backward(g)``."""
    forward = forward or (lambda: layer(x))

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        forward().backward(g)
    return step


def inference_step(module, x):
    """A callable running ``module`` on ``x`` as inference runs it: no gradient recorded."""
    def step():
        with torch.no_grad():
            module(x)
    return step


def idle_then_loaded(measure, rounds: int) -> tuple[list, list]:
    """``rounds`` alternations of ``measure()`` on the idle machine with one thread for torch and
    numba, then with one core held by :func:`busy_core` and their default threads: the lists of
    its idle and its loaded results, so that drift between rounds hits both alike."""
    idle, loaded = [], []
    for _ in range(rounds):
        set_threads(1)
        idle.append(measure())
        busy = busy_core()
        try:
            set_threads(default_threads())
            loaded.append(measure())
        finally:
            busy.kill()
            busy.wait()
    return idle, loaded


def interleaved_medians(functions: dict, repeats: int, warmup: int = 5, block: int = 1, clock=time.perf_counter) -> dict:
    """Median seconds of each callable over about ``repeats`` calls, timed in turn so that
    machine load hits all alike (:func:`sparsetopo.nn.calibration.alternating_medians`, which
    takes them in a new order each round).

    ``block`` > 1 times ``block`` consecutive calls of one callable per turn and records their
    mean: consecutive steps are how training runs a layer (its weights and index stay in cache
    from one step to the next), whereas alternating single calls lets each side evict the
    other's data (the masked side touches megabytes) and charges both a cold cache.

    ``clock`` reads the time: wall time by default; ``time.thread_time`` counts only the CPU
    time of the calling thread, which other processes on a loaded machine do not inflate (the
    whole computation must then run on that thread: one torch thread).
    """
    return alternating_medians(functions, max(1, repeats // block), warmup, block, clock)


def load_average():
    """The 1-minute load average: other processes on the machine skew every timing."""
    try:
        with open("/proc/loadavg") as fh:
            return float(fh.read().split()[0])
    except OSError:
        return None


def _affinity():
    """The cores this process may run on (e.g. pinned by ``taskset -c 0``), or None if unknown."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None
