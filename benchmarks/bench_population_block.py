"""Populations of block networks: one batched matmul for all members, or each member on its own.

Usage: ``python benchmarks/bench_population_block.py [--json] [--members 8,32] [--batch 32,64,128,256,512]
[--examples N] [--repeats R] [--threads T]``

A sweep's grid cell trains many networks of one shape that differ in seed (and so, for the
random constructions, in topology). This script measures, on the paper's MLP with blocks of 16
at 10% (784-300-10, ``regular_rotating`` on blocks, ``k = 2`` output blocks per input block;
the output layer one block of 16 x 10, so fully connected; sigmoid, MSE, Nesterov SGD), the two
ways :func:`sparsetopo.train.train_population` can train block members:

* ``one_by_one``: each member by :func:`sparsetopo.train.train` (the fused epoch up to batch
  48, the block layer's batched matmuls under autograd above);
* ``shared``: ``engine="torch"``, the members' tiles stacked and every layer of every member
  one block layer on the union of their block graphs (one gather and one ``torch.bmm`` per
  pass), :func:`sparsetopo.train.members_per_stack` members per stack.

Seconds are per member and training epoch: the median ``EpochRecord.seconds`` of epochs 2 and 3
(core-seconds; one thread by default, as a sweep worker runs). ``ratio`` = shared / one by one:
below 1 the shared matmul pays. ``auto`` names what ``engine="auto"`` picks at that batch
(:func:`sparsetopo.train.population.trains_one_by_one`).
"""

from __future__ import annotations

import argparse
import json
import statistics

from _common import machine, set_threads
from bench_epoch import synthetic
from sparsetopo.train import TrainConfig, train, train_population
from sparsetopo.train.population import trains_one_by_one

BLOCK, DENSITY, HIDDEN = 16, 0.1, 300


def configs(members: int, batch: int) -> list[TrainConfig]:
    k = max(1, round(DENSITY * -(-HIDDEN // BLOCK)))
    return [TrainConfig(dataset="synthetic", hidden=(HIDDEN,), degrees=(k, None), epochs=3, block=BLOCK,
                        batch_size=batch, seed=seed) for seed in range(members)]


def epoch_seconds(results) -> list[float]:
    return [h.seconds for r in results for h in r.history[1:]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--members", default="8,32", help="population sizes, comma-separated")
    parser.add_argument("--batch", default="32,64,128,256,512", help="batch sizes, comma-separated")
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=2, help="alternations of the two ways per point")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and numba (a sweep worker's 1)")
    args = parser.parse_args()
    set_threads(args.threads)
    data = synthetic(args.examples)
    data.n_features = data.x_train.shape[1]
    points = []
    for members in (int(m) for m in args.members.split(",")):
        for batch in (int(b) for b in args.batch.split(",")):
            cfgs = configs(members, batch)
            alone, shared = [], []
            for _ in range(args.repeats):
                results = [train(config, dataset=data) for config in cfgs]
                alone += epoch_seconds(results)
                one_engine = results[0].backend
                results = train_population(cfgs, dataset=data, engine="torch")
                shared += epoch_seconds(results)
            point = {"members": members, "batch": batch, "one_by_one_s": statistics.median(alone),
                     "one_by_one_engine": one_engine, "shared_s": statistics.median(shared),
                     "shared_engine": results[0].backend,
                     "ratio": statistics.median(shared) / statistics.median(alone),
                     "auto": "one_by_one" if trains_one_by_one(cfgs[0]) else "shared"}
            points.append(point)
            if not args.json:
                print(f"  {members:>3} members, batch {batch:>4}: one by one ({one_engine}) {point['one_by_one_s']:.4f} s"
                      f"  shared ({point['shared_engine']}) {point['shared_s']:.4f} s per member epoch"
                      f"  ratio {point['ratio']:.3f}  auto: {point['auto']}", flush=True)
    result = {"benchmark": f"populations of 784-{HIDDEN}-10 networks, blocks of {BLOCK} at {DENSITY:g}, "
                           f"{args.examples} examples: per-member epoch seconds, shared batched matmul / one by one",
              "points": points, "worst_auto_vs_best": max(
                  (p["shared_s"] if p["auto"] == "shared" else p["one_by_one_s"]) / min(p["shared_s"], p["one_by_one_s"])
                  for p in points),
              "threads": args.threads, "repeats": args.repeats, "examples": args.examples, "machine": machine()}
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
