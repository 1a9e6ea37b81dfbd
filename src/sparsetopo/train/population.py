"""Population training: many networks of one shape trained together.

A sweep trains thousands of small networks that differ only in their topology and seed. One
64-300-10 network at batch 8 keeps a CPU core busy with interpreter, autograd and optimizer
overhead rather than arithmetic, so :func:`train_population` trains a whole
group at once. This module checks the configs and picks one of two engines:

* ``"fused"`` (:mod:`sparsetopo.train.fused_population`, the default for the paper's recipe:
  sigmoid, MSE, Nesterov SGD): one numba call per epoch
  (:func:`sparsetopo.engines.population.population_batches`) trains every member over its
  *connected* weights only (CSR/CSC per member, concatenated per layer), members spread over
  the cores with ``prange``. Each member runs the sequential fused epoch's body
  (:func:`sparsetopo.engines.step.train_batches`) and its SIMD kernels on its own thread. No
  Python runs per step, and pruned connections cost nothing. Evaluation is a numba call too.
* ``"torch"`` (:mod:`sparsetopo.train.stack`): the members stacked into ``(P, n_in, n_out)``
  tensors, one ``torch.baddbmm`` per layer and step, the update written out elementwise (any
  activation, MSE or cross-entropy, Nesterov SGD or Adam: :mod:`sparsetopo.train.recipe`).
  Kept for the other recipes and as an independent check of the fused engine.

Both engines follow the learning-rate schedule, hold out the validation split and stop a
member early exactly as ``train()`` does (an early-stopped member leaves the population with
status "ok"): one bookkeeping, :class:`sparsetopo.train.roster.Roster`, records every epoch.

Each member is exactly the network :func:`sparsetopo.train.train` would train for its config:

* topology and initial weights come from :func:`sparsetopo.train.build_model`, so they are
  bit-identical;
* every epoch each member draws its own permutation and its own dropout numbers from its own
  generators (:func:`sparsetopo.train.seeds.epoch_generators`) in the order ``train()`` draws
  them (batch by batch, layer by layer). Members share
  the batch boundaries because they share the number of examples and ``batch_size``;
* each member's gradient is its own loss's (the torch engine sums the members' losses, whose
  cross-derivatives are zero; the fused engine never mixes members at all);
* the update repeats ``torch.optim.SGD(lr, momentum, nesterov=momentum > 0)`` elementwise
  (``buf = m*buf + g; p -= lr*(g + m*buf)``) on connected weights only, so pruned
  connections stay exactly 0.

The results therefore agree with individually trained networks up to float rounding (other
summation orders): weights within about 1e-6 after a few epochs and test accuracies within an
example or so (tests allow 1e-4 and one example).

Divergence is tracked per member: a member whose epoch loss is not finite is recorded as
``"diverged"`` exactly as ``train()`` would record it and is not trained further; the others
continue unaffected (members never share numbers). Its weights are those at the end of the
diverging epoch (NaN/inf like train()'s; only the status and history are compared).

Timing: a member's ``EpochRecord.seconds`` are the core-seconds its epoch cost, comparable
with ``train()``'s (one thread per sweep worker). On one thread (every sweep worker) the fused
engine runs the members one after the other and clocks each on its own (CPU time of the
thread, which other jobs on the machine do not inflate), so a 10% network
shows its own, shorter epochs beside its fully connected sibling's; on more threads, and in
the torch engine, members share the clock: the epoch's wall time times the cores used divided
by the members trained. ``RunResult.seconds`` is the member's epochs plus an equal share of
the rest of the call (model building, evaluation), so summing it over members gives the
population's core time. Checkpointing and resume are not offered here; a sweep re-runs a
population.

Each result's ``backend`` names the engine and kernel: ``fused-population/sparse`` (CSR over
the connections), ``fused-population/masked`` (a member layer the cost model runs dense, see
``layer_kernel``; layers that differ are listed with commas) or ``torch-population/masked``
(the stack computes dense weights times masks; ``torch-population/block`` for block networks,
their tiles), whatever backend the config asked for.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Callable, Sequence

import torch

from sparsetopo.errors import SparsetopoError
from sparsetopo.train.config import EpochRecord, RunResult, TrainConfig
from sparsetopo.train.fused_population import FUSED_ACTIVATIONS, train_fused
from sparsetopo.train.loop import train
from sparsetopo.train.fused import fused_pays
from sparsetopo.train.recipe import fused_applies
from sparsetopo.train.stack import STACK_FLOATS, members_per_stack, train_stack

__all__ = ["ENGINES", "FUSED_ACTIVATIONS", "MEMBER_FIELDS", "STACK_FLOATS", "check_population", "members_per_stack",
           "SHARED_BLOCK_MAX_BATCH", "population_key", "train_population", "trains_one_by_one"]

#: The TrainConfig fields in which members of one population may differ. Every other field
#: (data set, layer sizes, protocol, backend, and any field added later) must agree.
MEMBER_FIELDS = ("seed", "construction", "degrees", "init")


def population_key(config: TrainConfig) -> tuple:
    """What configs must share to be trained as one population: all fields but :data:`MEMBER_FIELDS`.

    Returns a hashable tuple of ``(field, value)`` pairs; group a sweep's configs by it.
    """
    return tuple((f.name, getattr(config, f.name)) for f in fields(config) if f.name not in MEMBER_FIELDS)


def check_population(configs: Sequence[TrainConfig]) -> list[TrainConfig]:
    """Check that every config is a TrainConfig (valid by construction) and that all share :func:`population_key`.

    Raises SparsetopoError naming the first member and field that differ from ``configs[0]``.
    """
    configs = list(configs)
    if not configs:
        raise SparsetopoError("train_population got no configs: give at least one TrainConfig")
    for i, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise SparsetopoError(f"configs[{i}] is a {type(config).__name__}, not a TrainConfig")
    reference = dict(population_key(configs[0]))
    for i, config in enumerate(configs[1:], start=1):
        for name, value in population_key(config):
            if value != reference[name]:
                raise SparsetopoError(
                    f"configs[{i}] has {name}={value!r} but configs[0] has {name}={reference[name]!r}: "
                    f"members of a population may differ only in {', '.join(MEMBER_FIELDS)}; "
                    f"group configs by population_key() and train each group separately"
                )
    return configs


ENGINES = ("auto", "fused", "torch")
LAYER_KERNELS = ("auto", "sparse", "masked")


def train_population(
    configs: Sequence[TrainConfig],
    dataset=None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    data_dir=None,
    max_members: int | None = None,
    engine: str = "auto",
    threads: int | None = None,
    layer_kernel: str = "auto",
) -> list[RunResult]:
    """Train ``configs`` together; return one RunResult per config, in order.

    configs : TrainConfigs that share :func:`population_key` (they may differ in seed,
        construction, degrees and init); otherwise SparsetopoError names the differing field.
    dataset : a loaded Dataset; loaded from ``configs[0].dataset`` / ``data_dir`` when None.
    on_epoch : called as ``on_epoch(member_index, record)`` after each epoch of each member
        still training (for progress; the library never prints). ``member_index`` indexes
        ``configs``.
    max_members : networks per stack; None picks :func:`members_per_stack` for the torch
        engine (a cache-sized stack) and all configs at once for the fused engine (its
        members share no arrays, so a bigger population costs no more per member). Longer
        lists are trained as consecutive stacks of at most this many. When ``engine="auto"``
        picks torch and a stack would hold a single network, each config is trained by
        :func:`sparsetopo.train.train` instead (its result names that engine, e.g.
        ``autograd/sparse``).
    engine : "fused" (one numba call per epoch trains every member over its connected
        weights: :mod:`sparsetopo.engines.population`; the paper's recipe only: sigmoid, MSE,
        Nesterov SGD), "torch" (stacked dense tensors and batched matmuls, any activation,
        loss and optimizer) or "auto" (fused when the recipe allows it, else torch). On CUDA
        (``TrainConfig.device``) the torch engine runs there and "auto" picks it; the fused
        engine is CPU only. Block networks (``block`` > 1): the torch engine stacks their tiles
        (every member's layer one block layer, :mod:`sparsetopo.train.stack`), the fused one
        refuses them, and "auto" trains each with :func:`sparsetopo.train.train` where that is
        faster (:func:`trains_one_by_one`), else picks torch.
    layer_kernel : how the fused engine computes each member layer: "sparse" (CSR over the
        connections), "masked" (the dense matrix times the mask, as BLAS GEMMs:
        :mod:`sparsetopo.kernels.dense`) or "auto" (per member layer, whichever the measured
        cost model :func:`sparsetopo.nn.plan.member_prefers_dense` says is cheaper). Each
        result's ``layers[l]["backend"]`` names it (``fused-population/sparse`` or
        ``fused-population/masked``). The numbers agree up to float rounding.
    threads : cores the fused engine spreads the members over; None uses
        ``torch.get_num_threads()`` (so a sweep worker set to one torch thread stays on one
        core). The numbers do not depend on it.

    Each result equals ``train(config, dataset)``'s up to float rounding: same topology,
    initial weights, shuffling, dropout and updates (see the module docstring). Its ``model``
    is the member's own trained SparseMLP; ``seconds`` are per-member core-seconds (module
    docstring, "Timing").
    """
    configs = check_population(configs)
    if engine not in ENGINES:
        raise SparsetopoError(f"unknown engine {engine!r}: choose one of {', '.join(ENGINES)}")
    chosen = engine == "auto"
    blocked = configs[0].block != 1
    if blocked and engine == "fused":
        raise SparsetopoError(f"engine='fused' does not compute block layers (block={configs[0].block}): "
                              "use engine='torch' or 'auto'")
    if chosen and trains_one_by_one(configs[0]):
        return _one_by_one(configs, dataset, data_dir, on_epoch)
    if engine == "auto":
        engine = "fused" if (not blocked and configs[0].activation in FUSED_ACTIVATIONS
                             and fused_applies(configs[0])) else "torch"
    if engine == "fused" and configs[0].activation not in FUSED_ACTIVATIONS:
        raise SparsetopoError(f"engine='fused' trains {', '.join(FUSED_ACTIVATIONS)} networks only, not "
                              f"activation={configs[0].activation!r}: use engine='torch' or 'auto'")
    if engine == "fused" and not fused_applies(configs[0]):
        raise SparsetopoError(f"engine='fused' computes MSE with Nesterov SGD only, not loss={configs[0].loss!r} "
                              f"with optimizer={configs[0].optimizer!r}: use engine='torch' or 'auto'")
    if engine == "fused" and torch.device(configs[0].device).type != "cpu":
        if not chosen:
            raise SparsetopoError(f"engine='fused' runs on CPU only, not device={configs[0].device!r}: "
                                  "use engine='torch' or 'auto'")
        engine = "torch"  # the stacked tensors run wherever torch does
    if layer_kernel not in LAYER_KERNELS:
        raise SparsetopoError(f"unknown layer_kernel {layer_kernel!r}: choose one of {', '.join(LAYER_KERNELS)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise SparsetopoError(f"threads={threads!r} must be a positive integer (or None for torch's thread count)")
    if dataset is None:
        from sparsetopo.data import load_dataset

        dataset = load_dataset(configs[0].dataset, data_dir=data_dir)
    if max_members is None:
        max_members = len(configs) if engine == "fused" else \
            members_per_stack(configs[0], dataset.n_features, int(dataset.n_classes))
        if chosen and engine == "torch" and max_members == 1:
            # A stack of one is train()'s masked loop with more bookkeeping, while train() can
            # run sparse layers on the sparse kernels: hand each member to train().
            return _one_by_one(configs, dataset, data_dir, on_epoch)
    elif isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise SparsetopoError(f"max_members={max_members!r} must be a positive integer (or None to choose)")
    results: list[RunResult] = []
    for first in range(0, len(configs), max_members):
        def offset_on_epoch(member, record, first=first):
            on_epoch(first + member, record)

        chunk = configs[first: first + max_members]
        callback = offset_on_epoch if on_epoch is not None else None
        if engine == "fused":
            results += train_fused(chunk, dataset, callback, threads, layer_kernel)
        else:
            results += train_stack(chunk, dataset, callback)
    return results


#: The largest batch at which block members share the torch stack's batched matmul (engine
#: "auto"): measured, the shared step's per-member cost matches the member's own autograd step
#: near a batch of 256 (0.88-1.14 of it over two runs) and exceeds it by 14-31% at 512, where a
#: step's matmuls outweigh its per-call overhead (``benchmarks/bench_population_block.py``).
SHARED_BLOCK_MAX_BATCH = 256


def trains_one_by_one(config: TrainConfig) -> bool:
    """Whether engine "auto" trains the block members of ``config``'s population one by one with
    :func:`sparsetopo.train.train` rather than together in the torch stack. One by one where
    ``train()`` runs them on the fused epoch (the paper's recipe, batch at most
    :data:`~sparsetopo.train.fused.FUSED_MAX_BATCH`): there one member's fused epoch costs about
    half its share of the stack's matmul. One by one above :data:`SHARED_BLOCK_MAX_BATCH` too.
    In between, and for every other recipe up to that batch, the stack is faster: it pays
    autograd's per-step cost once for the population. Ordinary networks never train one by one
    here. The one place that routes block populations."""
    if config.block == 1:
        return False
    return (fused_applies(config) and fused_pays(config.batch_size)) or config.batch_size > SHARED_BLOCK_MAX_BATCH


def _one_by_one(configs, dataset, data_dir, on_epoch) -> list[RunResult]:
    """Each config trained by :func:`sparsetopo.train.train` (its result names that engine)."""
    return [train(config, dataset=dataset, data_dir=data_dir,
                  on_epoch=None if on_epoch is None else (lambda record, i=i: on_epoch(i, record)))
            for i, config in enumerate(configs)]
