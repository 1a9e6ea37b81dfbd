"""Graph measures: speed and accuracy on a 784 x 300 layer, speed and memory on a 10^6-node layer.

Usage: ``python benchmarks/bench_spectral.py [--json] [--repeats N] [--skip-large]``

small  random_regular 784 -> 300, k = 30 (1,084 nodes, 23,520 edges).
       ``small_seconds``: median wall time of ``layer_measures`` (every measure, auto method);
       ``fiedler_seconds``: median of ``algebraic_connectivity`` alone;
       ``networkx_seconds``: median of ``networkx.algebraic_connectivity`` (its default
       method, tracemin_pcg) on the same graph, graph construction excluded;
       ``speedup_vs_networkx`` = networkx_seconds / fiedler_seconds (same quantity both sides);
       ``max_rel_error_vs_networkx``: our Fiedler value against networkx's;
       ``max_rel_error_vs_dense``: every measure, auto method against exact LAPACK.
large  random_regular 500,000 -> 500,000, k = 8 (10^6 nodes, 4 x 10^6 edges), run in a child
       process so that ``large_peak_rss_bytes`` (its ru_maxrss) is its own peak, build
       included; ``large_seconds`` times ``layer_measures`` (algebraic connectivity, spectral
       gap and every other measure), the build excluded (``large_build_seconds``).
The machine's load average is reported: other processes on the machine skew every wall-clock
timing, so ``small_cpu_seconds`` and ``large_cpu_seconds`` (process CPU time, all threads
summed) are reported beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import scipy

from sparsetopo import build
from sparsetopo import spectral as S

SMALL = ("random_regular", 784, 300, 30)
LARGE = ("random_regular", 500_000, 500_000, 8)
TARGETS = {"small_seconds": 0.05, "speedup_vs_networkx": 10.0, "max_rel_error_vs_networkx": 1e-6,
           "large_seconds": 60.0, "large_peak_rss_bytes": 4 * 2**30}


def median_seconds(function, repeats: int, warmup: int = 2, clock=time.perf_counter) -> float:
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        tick = clock()
        function()
        times.append(clock() - tick)
    return statistics.median(times)


def relative_error(value, reference) -> float:
    if value is None or reference is None:
        return 0.0 if value is reference else float("inf")
    return abs(value - reference) / max(abs(reference), 1e-12)


def small_case(repeats: int) -> dict:
    import networkx as nx

    topology = build(*SMALL, seed=0)
    graph = nx.Graph()
    n = topology.n_in
    graph.add_nodes_from(range(n + topology.n_out))
    graph.add_edges_from(zip(topology.rows.tolist(), (topology.indices + n).tolist()))

    ours = S.layer_measures(topology)
    dense = S.layer_measures(topology, "dense")
    fiedler = S.algebraic_connectivity(topology)
    reference = nx.algebraic_connectivity(graph)
    keys = [k for k in S.MEASURES if k not in ("components", "isolated_inputs", "isolated_outputs", "isolated_nodes")]
    small_seconds = median_seconds(lambda: S.layer_measures(topology), repeats)
    small_cpu_seconds = median_seconds(lambda: S.layer_measures(topology), repeats, clock=time.process_time)
    fiedler_seconds = median_seconds(lambda: S.algebraic_connectivity(topology), repeats)
    networkx_seconds = median_seconds(lambda: nx.algebraic_connectivity(graph), max(3, repeats // 5), warmup=0)
    return {
        "small_graph": f"{SMALL[0]} {SMALL[1]}x{SMALL[2]} k={SMALL[3]}",
        "small_method": ours["method"],
        "small_seconds": small_seconds,
        "small_cpu_seconds": small_cpu_seconds,
        "fiedler_seconds": fiedler_seconds,
        "networkx_seconds": networkx_seconds,
        "speedup_vs_networkx": networkx_seconds / fiedler_seconds,
        "speedup_all_measures_vs_networkx": networkx_seconds / small_seconds,
        "max_rel_error_vs_networkx": relative_error(fiedler, reference),
        "max_rel_error_vs_dense": max(relative_error(ours[k], dense[k]) for k in keys),
        "small_algebraic_connectivity": fiedler,
        "small_spectral_gap": ours["spectral_gap"],
    }


def large_worker() -> dict:
    """Runs in its own process (``--large-worker``): its peak RSS is the large case's alone."""
    tick = time.perf_counter()
    topology = build(*LARGE, seed=0)
    build_seconds = time.perf_counter() - tick
    tick, cpu = time.perf_counter(), time.process_time()
    measures = S.layer_measures(topology)
    seconds, cpu_seconds = time.perf_counter() - tick, time.process_time() - cpu
    return {
        "large_graph": f"{LARGE[0]} {LARGE[1]}x{LARGE[2]} k={LARGE[3]}",
        "large_nodes": LARGE[1] + LARGE[2],
        "large_edges": topology.nnz,
        "large_build_seconds": build_seconds,
        "large_seconds": seconds,
        "large_cpu_seconds": cpu_seconds,
        "large_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "large_method": measures["method"],
        "large_algebraic_connectivity": measures["algebraic_connectivity"],
        "large_spectral_gap": measures["spectral_gap"],
        "large_ramanujan_margin": measures["ramanujan_margin"],
    }


def large_case() -> dict:
    child = subprocess.run([sys.executable, __file__, "--large-worker"], capture_output=True, text=True, check=True)
    return json.loads(child.stdout)


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu": model, "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
            "numpy": np.__version__, "scipy": scipy.__version__, "python": platform.python_version()}


def table(result: dict) -> str:
    lines = [f"{'measure':34} {'value':>14}  target"]
    for key, value in result.items():
        if key == "machine":
            continue
        target = TARGETS.get(key)
        shown = f"{value:14.6g}" if isinstance(value, float) else f"{value!s:>14}"
        mark = ""
        if target is not None:
            ok = value >= target if key.startswith("speedup") else value <= target
            mark = f"{'<=' if not key.startswith('speedup') else '>='} {target:g} {'ok' if ok else 'MISSED'}"
        lines.append(f"{key:34} {shown}  {mark}")
    lines.append(f"machine: {result['machine']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print exactly one JSON object")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of the small case")
    parser.add_argument("--skip-large", action="store_true", help="skip the 10^6-node case")
    parser.add_argument("--large-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.large_worker:
        print(json.dumps(large_worker()))
        return
    result = {"machine": machine(), **small_case(args.repeats)}
    if not args.skip_large:
        result.update(large_case())
    result["machine"]["load_average_1min_after"] = os.getloadavg()[0]
    print(json.dumps(result) if args.json else table(result))


if __name__ == "__main__":
    main()
