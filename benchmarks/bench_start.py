"""A first run against a later one: the command line's start with numba's cache empty and filled.

What is timed, each run in a fresh process (``python -m sparsetopo ...``), wall clock from the
start of the process to its end and the process's CPU time (user + system, its children's
rusage), with ``NUMBA_CACHE_DIR`` pointing at a folder of its own:

cold     the folder empty, so every kernel the command runs is compiled (a first run after
         installing, or after a kernel source changed);
warm     the same command again on the folder the cold run filled (every later run).

The command is ``sparsetopo train --dataset digits --hidden 100 -k 16,10 --epochs 5 --json``
(the bundled digits, nothing downloaded). Its JSON gives each epoch's seconds; a first epoch
that held compilation or cache loading would stand out against the second, so the script
also checks, for every cold and warm run, ``first epoch <= 1.5 x second + 0.05 s``.

The same for the population engine (what a sweep worker runs): ``train_population`` of two
digits networks on one thread (``population``), cold and warm, its first member's epochs.

Cold and warm runs alternate (each warm run on the cache its cold run just filled), so that
load coming and going on the machine falls on both; the medians are reported, with the load
average before each run. Run ``python benchmarks/bench_start.py --json >
benchmarks/results/bench_start.json`` (then add ``machine.description``, see ``write_docs.py``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _common import machine

TRAIN = ["-m", "sparsetopo", "train", "--dataset", "digits", "--hidden", "100", "-k", "16,10", "--epochs", "5",
         "--json"]
POPULATION = ["-c", """
import json
from dataclasses import replace
from sparsetopo.train import TrainConfig, train_population
base = TrainConfig(dataset="digits", hidden=(100,), degrees=(16, 10), epochs=5)
results = train_population([base, replace(base, seed=1)], threads=1, engine="fused")
print(json.dumps({"history": [{"seconds": h.seconds} for h in results[0].history]}))
"""]
TARGETS = {"cold_wall_seconds": 15.0}
FIRST_EPOCH_FACTOR, FIRST_EPOCH_SLACK = 1.5, 0.05   # first epoch <= 1.5 x second + 0.05 s


def timed_run(args: list[str], cache_dir: str) -> dict:
    """One process of ``python args`` with numba's cache in ``cache_dir``: wall, CPU, epoch seconds."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    tick = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - tick
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    epochs = [h["seconds"] for h in json.loads(done.stdout.strip().splitlines()[-1])["history"]]
    return {"wall_seconds": wall, "cpu_seconds": cpu, "epoch_seconds": epochs, "load_average_before": load,
            "first_epoch_clean": epochs[0] <= FIRST_EPOCH_FACTOR * epochs[1] + FIRST_EPOCH_SLACK}


def cold_and_warm(args: list[str], repeats: int) -> dict:
    """``repeats`` cold runs, each followed by a warm run on the cache it filled; medians and every run."""
    runs = {"cold": [], "warm": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="numba-cache-") as cache:
            runs["cold"].append(timed_run(args, cache))
            runs["warm"].append(timed_run(args, cache))
    out = {}
    for kind, rs in runs.items():
        out[f"{kind}_wall_seconds"] = statistics.median(r["wall_seconds"] for r in rs)
        out[f"{kind}_cpu_seconds"] = statistics.median(r["cpu_seconds"] for r in rs)
        out[f"{kind}_first_epoch_seconds"] = statistics.median(r["epoch_seconds"][0] for r in rs)
        out[f"{kind}_second_epoch_seconds"] = statistics.median(r["epoch_seconds"][1] for r in rs)
        out[f"{kind}_first_epochs_clean"] = all(r["first_epoch_clean"] for r in rs)
    out["cold_over_warm_wall"] = out["cold_wall_seconds"] / out["warm_wall_seconds"]
    out["runs"] = runs
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="cold (and warm) runs of each command")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    train = cold_and_warm(TRAIN, args.repeats)
    population = cold_and_warm(POPULATION, args.repeats)
    result = {key: value for key, value in train.items() if key != "runs"}
    result.update({
        "benchmark": "the command line's start, numba's cache empty (cold) and filled (warm)",
        "command_timed": "sparsetopo " + " ".join(TRAIN[2:]),
        "repeats": args.repeats,
        "first_epoch_rule": f"first epoch <= {FIRST_EPOCH_FACTOR} x second + {FIRST_EPOCH_SLACK} s",
        "targets": TARGETS,
        "train_runs": train["runs"],
        "population": population,
        "date": datetime.date.today().isoformat(),
        "command": "python benchmarks/bench_start.py" + "".join(f" {a}" for a in (argv or sys.argv[1:])),
        "machine": machine(),
    })
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key in ("cold_wall_seconds", "cold_cpu_seconds", "warm_wall_seconds", "warm_cpu_seconds",
                    "cold_first_epoch_seconds", "cold_second_epoch_seconds", "cold_first_epochs_clean",
                    "warm_first_epochs_clean", "cold_over_warm_wall"):
            print(f"{key}: {result[key]}")
        for key in ("cold_wall_seconds", "warm_wall_seconds", "cold_first_epoch_seconds",
                    "cold_second_epoch_seconds", "cold_first_epochs_clean", "warm_first_epochs_clean"):
            print(f"population {key}: {population[key]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
