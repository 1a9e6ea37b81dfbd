"""Population training: many networks of one shape trained together.

A sweep trains thousands of small networks that differ only in their topology and seed. One
64-300-10 network at batch 8 keeps a CPU core busy with interpreter, autograd and optimizer
overhead rather than arithmetic, so :func:`train_population` trains a whole
group at once. Two engines:

* ``"fused"`` (the default for the paper's recipe: sigmoid, MSE, Nesterov SGD): one numba call
  per epoch (:func:`sparsetopo.kernels.population.population_batches`) trains every member
  over its *connected* weights only (CSR/CSC per member, concatenated per layer), members
  spread over the cores with ``prange``. Each member runs the sequential fused epoch's body
  (:func:`sparsetopo.kernels.step.train_batches`) and its SIMD kernels on its own thread. No
  Python runs per step, and pruned connections cost nothing. Evaluation is a numba call too.
* ``"torch"``: the members stacked into ``(P, n_in, n_out)`` tensors, one ``torch.baddbmm``
  per layer and step, the update written out elementwise (any activation, MSE or
  cross-entropy, Nesterov SGD or Adam: :mod:`sparsetopo.train.recipe`). Kept for the other
  recipes and as an independent check of the fused engine.

Both engines follow the learning-rate schedule, hold out the validation split and stop a
member early exactly as ``train()`` does (an early-stopped member leaves the population with
status "ok").

Each member is exactly the network :func:`sparsetopo.train.train` would train for its config:

* topology and initial weights come from :func:`sparsetopo.train.build_model`, so they are
  bit-identical;
* every epoch each member draws its own permutation and its own dropout numbers from its own
  generators (:func:`sparsetopo.train.seeds.epoch_generators`) in the order ``train()`` draws them (batch by batch, layer by layer). Members share
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
(the stack always computes dense weights times masks), whatever backend the config asked for.
"""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sparsetopo.errors import SparsetopoError
from sparsetopo.kernels import population as kernels
from sparsetopo.kernels.cache import load_or_compile
from sparsetopo.kernels.threads import member_threads
from sparsetopo.nn import ACTIVATIONS, SparseMLP, SparseIndex
from sparsetopo.nn.plan import member_prefers_dense, wide_argument
from sparsetopo.train.config import EpochRecord, RunResult, TrainConfig
from sparsetopo.train.fused import batch_counts
from sparsetopo.train.loop import build_model, run_result, split_tensors, train, training_device
from sparsetopo.train.recipe import ADAM_BETAS, ADAM_EPS, autograd_only, epoch_lr, fused_applies, stop_early
from sparsetopo.train.seeds import epoch_generators, epoch_order

__all__ = ["ENGINES", "FUSED_ACTIVATIONS", "MEMBER_FIELDS", "STACK_FLOATS", "check_population", "members_per_stack", "population_key",
           "train_population"]

#: The TrainConfig fields in which members of one population may differ. Every other field
#: (data set, layer sizes, protocol, backend, and any field added later) must agree.
MEMBER_FIELDS = ("seed", "construction", "degrees", "init")

# Dropout numbers are drawn ahead for a chunk of batches at a time; this bounds the chunk.
_DROPOUT_CHUNK_FLOATS = 1 << 22
#: Activations the fused kernels implement (their forward and backward are written for it).
FUSED_ACTIVATIONS = ("sigmoid",)
# Test examples evaluated at once per member (bounds the (P, rows, n_in) evaluation buffer).
_EVAL_CHUNK_FLOATS = 1 << 23
#: Default bound on the weights and biases of one stack (floats). Each SGD step streams the
#: stacked weights, gradients, momentum buffers and masks several times; while they fit in the
#: CPU's L2 cache a step costs little more than its matmuls, beyond it the step turns
#: memory-bound and a stack of P networks can be slower than P single ones. 2**18 floats
#: (1 MiB a tensor) gives P = 34 for 64-100-10 and P = 11 for 64-300-10.
STACK_FLOATS = 1 << 18


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


class _Stack:
    """The trainable state of the active members: per layer weight (A, n_in, n_out), bias
    (A, 1, n_out), mask and optimizer state (SGD's momentum buffers, or Adam's two moment
    estimates), A = number of members still training. ``linear_output``: the output layer
    computes logits (a softmax inside cross-entropy) instead of the activation."""

    def __init__(self, models: Sequence[SparseMLP], linear_output: bool = False):
        n_layers = len(models[0].layers)
        self.linear_output = linear_output
        # dense_weight() and the topology's mask exist on every SparseLinear backend, so members
        # built with "sparse" or "auto" layers stack as well (the stack always computes dense).
        # The stack holds the topology's n_in x n_out orientation (x @ w), the layers nn.Linear's.
        self.weights = [torch.stack([m.layers[l].dense_weight().t() for m in models]).requires_grad_()
                        for l in range(n_layers)]
        self.biases = [torch.stack([m.layers[l].bias.detach() for m in models]).unsqueeze(1).requires_grad_()
                       for l in range(n_layers)]
        self.masks = [torch.stack([torch.from_numpy(m.layers[l].topology.mask()).to(self.weights[l].dtype)
                                   for m in models]) for l in range(n_layers)]
        self.buffers = [torch.zeros_like(p) for p in self.parameters()]
        self.second = [torch.zeros_like(p) for p in self.parameters()]   # Adam's exp_avg_sq (unused by SGD)
        self.steps = 0                                                    # Adam's step count

    def to(self, device: torch.device) -> "_Stack":
        """Move every stacked tensor (weights, biases, masks, optimizer state) to ``device``."""
        for name, value in vars(self).items():
            if isinstance(value, list) and value and all(isinstance(t, torch.Tensor) for t in value):
                setattr(self, name, [t.detach().to(device).requires_grad_(t.requires_grad) for t in value])
        return self

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def forward(self, x: torch.Tensor, act, keep_masks=None, rates=None) -> torch.Tensor:
        """Outputs (A, rows, n_classes) for inputs (A, rows, n_features)."""
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            if keep_masks is not None and keep_masks[l] is not None:
                x = x * (keep_masks[l] >= rates[l]) / (1.0 - rates[l])
            # Pruned weights are exactly 0 (they start at 0 and their gradient is masked), so
            # w equals train()'s ``weight * mask`` bit for bit.
            x = torch.baddbmm(b, x, w)
            if not (self.linear_output and l == len(self.weights) - 1):
                x = act(x)
        return x

    @torch.no_grad()
    def step_adam(self, lr: float, betas=ADAM_BETAS, eps: float = ADAM_EPS) -> None:
        """torch.optim.Adam(lr, betas, eps, weight_decay=0), elementwise, as its single-tensor
        path computes it. A pruned weight has gradient 0, so its moments stay 0 and its step
        ``m / (sqrt(v) + eps)`` is exactly 0: it never leaves 0."""
        n_layers = len(self.weights)
        self.steps += 1
        beta1, beta2 = betas
        bias_correction1 = 1 - beta1 ** self.steps
        bias_correction2_sqrt = (1 - beta2 ** self.steps) ** 0.5
        for i, (p, m, v) in enumerate(zip(self.parameters(), self.buffers, self.second)):
            grad = p.grad
            if i < n_layers:
                grad.mul_(self.masks[i])          # the gradient of weight * mask
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
            p.addcdiv_(m, denom, value=-lr / bias_correction1)
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float, momentum: float) -> None:
        """torch.optim.SGD(lr, momentum, nesterov=momentum > 0, dampening=0), elementwise.

        A zero-initialised buffer gives ``buf = grad`` on the first step, as torch's clone does.
        """
        n_layers = len(self.weights)
        for i, (p, buf) in enumerate(zip(self.parameters(), self.buffers)):
            grad = p.grad
            if i < n_layers:
                grad.mul_(self.masks[i])          # the gradient of weight * mask
            if momentum > 0:
                buf.mul_(momentum).add_(grad)
                grad.add_(buf, alpha=momentum)    # in place: the same numbers as grad.add(buf, ...)
            p.add_(grad, alpha=-lr)
            p.grad = None

    def keep(self, rows: list[int]) -> None:
        """Drop every member except the stack rows ``rows`` (in that order)."""
        index = torch.tensor(rows, dtype=torch.int64)
        self.weights = [w.detach()[index].requires_grad_() for w in self.weights]
        self.biases = [b.detach()[index].requires_grad_() for b in self.biases]
        self.masks = [m[index] for m in self.masks]
        self.buffers = [buf[index] for buf in self.buffers]
        self.second = [v[index] for v in self.second]

    @torch.no_grad()
    def write_back(self, row: int, model: SparseMLP) -> None:
        """Copy stack row ``row``'s parameters into ``model`` (its own SparseMLP)."""
        for layer, w, b in zip(model.layers, self.weights, self.biases):
            if layer.backend == "masked":
                layer.weight.copy_(w[row].t())
            else:                                 # the sparse backend keeps connected weights only
                layer.values.copy_(w[row].t()[layer.edge_index()])
            layer.bias.copy_(b[row, 0])
        model.eval()

    @torch.no_grad()
    def accuracies(self, act, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Test accuracy of every active member (no dropout), evaluated in row chunks."""
        members = self.weights[0].shape[0]
        correct = torch.zeros(members, dtype=torch.int64, device=x.device)
        rows = max(1, _EVAL_CHUNK_FLOATS // (members * max(w.shape[2] for w in self.weights)))
        for start in range(0, x.shape[0], rows):
            xs = x[start: start + rows]
            out = self.forward(xs.unsqueeze(0).expand(members, -1, -1), act)
            correct += (out.argmax(dim=2) == y[start: start + rows]).sum(dim=1)
        return [float(c) / x.shape[0] for c in correct.double()]


class _DropoutStream:
    """Each member's dropout numbers, in exactly the order ``train()`` draws them.

    ``train()`` calls ``torch.rand((batch, n_l), generator=g)`` for every layer ``l`` with a
    positive rate, batch after batch. Torch's CPU generator yields the same numbers for one
    draw of the concatenated size, so the numbers for a chunk of batches are drawn per member
    in one call and sliced per batch and layer.
    """

    def __init__(self, generators: list[torch.Generator], widths: list[int | None], batch_sizes: list[int]):
        self.generators = generators
        self.widths = widths                      # n_in of each layer that drops, None otherwise
        self.batch_sizes = batch_sizes
        self.per_example = sum(w for w in widths if w)
        self.next_batch = 0
        self.chunk: torch.Tensor | None = None
        self.offset = 0
        self.chunk_end = 0                        # first batch index not in the chunk

    def _refill(self) -> None:
        budget = max(1, _DROPOUT_CHUNK_FLOATS // max(1, len(self.generators) * self.per_example))
        end = self.next_batch
        count = 0
        while end < len(self.batch_sizes) and (count == 0 or count + self.batch_sizes[end] <= budget):
            count += self.batch_sizes[end]
            end += 1
        self.chunk = torch.stack([torch.rand(count * self.per_example, generator=g) for g in self.generators])
        self.offset = 0
        self.chunk_end = end

    def masks(self) -> list[torch.Tensor | None]:
        """Uniform numbers (A, batch, n_l) for each dropping layer of the next batch."""
        if self.next_batch >= self.chunk_end:
            self._refill()
        rows = self.batch_sizes[self.next_batch]
        self.next_batch += 1
        out = []
        for width in self.widths:
            if not width:
                out.append(None)
                continue
            size = rows * width
            out.append(self.chunk[:, self.offset: self.offset + size].reshape(-1, rows, width))
            self.offset += size
        return out


def members_per_stack(config: TrainConfig, n_features: int, n_classes: int,
                      budget: int = STACK_FLOATS) -> int:
    """How many networks shaped like ``config`` one stack holds: ``budget`` floats of weights
    and biases (see :data:`STACK_FLOATS`), at least 1."""
    sizes = config.sizes(n_features, n_classes)
    per_member = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    return max(1, budget // per_member)


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
        weights: :mod:`sparsetopo.kernels.population`; the paper's recipe only: sigmoid, MSE,
        Nesterov SGD), "torch" (stacked dense tensors and batched matmuls, any activation,
        loss and optimizer) or "auto" (fused when the recipe allows it, else torch). On CUDA
        (``TrainConfig.device``) the torch engine runs there and "auto" picks it; the fused
        engine is CPU only. Block networks (``block`` > 1) have no population engine: with
        "auto" each is trained by :func:`sparsetopo.train.train`, any other engine refuses them.
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
    if autograd_only(configs[0]):
        if not chosen:
            raise SparsetopoError(f"engine={engine!r} does not compute block layers (block={configs[0].block}): "
                                  "use engine='auto', which trains each such config with train()")
        return _one_by_one(configs, dataset, data_dir, on_epoch)
    if engine == "auto":
        engine = "fused" if configs[0].activation in FUSED_ACTIVATIONS and fused_applies(configs[0]) else "torch"
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
            results += _train_fused(chunk, dataset, callback, threads, layer_kernel)
        else:
            results += _train_stack(chunk, dataset, callback)
    return results


def _one_by_one(configs, dataset, data_dir, on_epoch) -> list[RunResult]:
    """Each config trained by :func:`sparsetopo.train.train` (its result names that engine)."""
    return [train(config, dataset=dataset, data_dir=data_dir,
                  on_epoch=None if on_epoch is None else (lambda record, i=i: on_epoch(i, record)))
            for i, config in enumerate(configs)]


def _shuffle_orders(configs: Sequence[TrainConfig], members: Sequence[int], n: int, epoch: int) -> torch.Tensor:
    """(len(members), n): each member's permutation of this epoch, from its own shuffling
    generator exactly as ``train()`` draws it."""
    return torch.stack([epoch_order(configs[i].seed, epoch, n) for i in members])


def _results(configs, models, histories, status, x_test, y_test, started: float, cores: int,
             engine: str) -> list[RunResult]:
    """One RunResult per member; ``seconds`` is its epochs' core-seconds plus an equal share of
    the rest of the call's wall time on ``cores`` cores (module docstring "Timing")."""
    core_seconds = (time.perf_counter() - started) * cores
    epochs = [sum(h.seconds for h in history) for history in histories]
    shared = max(0.0, core_seconds - sum(epochs)) / len(configs)   # building, evaluation
    results = []
    for config, model, history, state, own in zip(configs, models, histories, status, epochs):
        result = run_result(config, model, history, state, x_test, y_test, started, engine)
        result.seconds = own + shared
        results.append(result)
    return results


def _train_stack(configs: list[TrainConfig], dataset, on_epoch) -> list[RunResult]:
    """Train checked ``configs`` as one stack (see :func:`train_population`)."""
    started = time.perf_counter()
    base = configs[0]
    device = training_device(base)
    x_train, y_train, x_val, y_val, x_test, y_test, n_classes = split_tensors(base, dataset)
    x_train, y_train, x_val, y_val, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_val, y_val,
                                                                              x_test, y_test))
    targets = F.one_hot(y_train, n_classes).float()
    models = [build_model(config, x_train.shape[1], n_classes) for config in configs]
    act = ACTIVATIONS[base.activation]
    sizes = models[0].sizes
    rates = models[0].dropout_rates
    widths = [sizes[l] if rate > 0 else None for l, rate in enumerate(rates)]

    stack = _Stack(models, linear_output=models[0].output == "linear").to(device)
    active = list(range(len(configs)))           # member index of each stack row
    histories: list[list[EpochRecord]] = [[] for _ in configs]
    status = ["ok"] * len(configs)
    n, batch = x_train.shape[0], base.batch_size
    batch_sizes = [min(batch, n - start) for start in range(0, n, batch)]

    for epoch in range(1, base.epochs + 1):
        if not active:
            break
        lr = epoch_lr(base, epoch)
        tick = time.perf_counter()
        orders = _shuffle_orders(configs, active, n, epoch).to(device)
        dropout = None
        if any(widths):
            dropout = _DropoutStream(
                [epoch_generators(configs[i].seed, epoch).dropout for i in active],
                widths, batch_sizes)
        totals = torch.zeros(len(active), dtype=torch.float64, device=device)
        for start in range(0, n, batch):
            index = orders[:, start: start + batch]
            keep = dropout.masks() if dropout is not None else None
            if keep is not None and device.type != "cpu":   # drawn on CPU generators, as train() draws them
                keep = [None if k is None else k.to(device) for k in keep]
            out = stack.forward(x_train[index], act, keep, rates)
            if base.loss == "cross_entropy":   # each member's F.cross_entropy (mean over its batch)
                losses = F.cross_entropy(out.transpose(1, 2), y_train[index], reduction="none").mean(dim=1)
            else:                              # each member's F.mse_loss
                losses = (out - targets[index]).pow(2).mean(dim=(1, 2))
            losses.sum().backward()
            if base.optimizer == "adam":
                stack.step_adam(lr)
            else:
                stack.step(lr, base.momentum)
            totals += losses.detach() * index.shape[1]
        seconds = (time.perf_counter() - tick) * torch.get_num_threads() / len(active)   # core-seconds
        accuracies = stack.accuracies(act, x_test, y_test)
        val_accuracies = stack.accuracies(act, x_val, y_val) if len(y_val) else [None] * len(active)
        survivors = []
        for row, member in enumerate(active):
            train_loss = float(totals[row]) / n
            record = EpochRecord(epoch, train_loss, accuracies[row], seconds, val_accuracies[row])
            histories[member].append(record)
            stopped = stop_early([h.val_accuracy for h in histories[member]], base.early_stop)
            if math.isfinite(train_loss) and not stopped:
                survivors.append(row)
            else:
                status[member] = "ok" if math.isfinite(train_loss) else "diverged"
                stack.write_back(row, models[member])
            if on_epoch is not None:
                on_epoch(member, record)
        if len(survivors) < len(active):
            stack.keep(survivors)
            active = [active[row] for row in survivors]

    for row, member in enumerate(active):
        stack.write_back(row, models[member])
    return _results(configs, models, histories, status, x_test, y_test, started, torch.get_num_threads(),
                    "torch-population/masked")


class _FusedPopulation:
    """Every member's connected weights, buffers and CSR/CSC index in the flat per-layer arrays
    :mod:`sparsetopo.kernels.population` reads (member ``p``'s slice of layer ``l`` is
    ``offsets[l, p]:offsets[l, p + 1]``). Built once; members that diverge are simply left
    out of later calls, so no array is ever compacted or copied."""

    def __init__(self, models: Sequence[SparseMLP], layer_kernel: str = "auto"):
        n_layers = len(models[0].layers)
        self.sizes = np.array(models[0].sizes, dtype=np.int64)
        # which member layers are held dense and run as GEMMs (kernels.dense), which as CSR
        self.dense = np.array([[_runs_dense(m.layers[l].topology, layer_kernel) for m in models]
                               for l in range(n_layers)], dtype=np.bool_)
        self.offsets = np.zeros((n_layers, len(models) + 1), dtype=np.int64)
        self.dense_offsets = np.zeros((n_layers, len(models) + 1), dtype=np.int64)
        values, indptr, indices, col_ptr, col_rows, col_perm, biases = ([] for _ in range(7))
        dense_values, dense_masks = [], []
        for l in range(n_layers):
            layers = [m.layers[l] for m in models]
            csr = [not d for d in self.dense[l]]
            index = [SparseIndex.from_topology(layer.topology) if keep else _empty_index(layer.topology)
                     for layer, keep in zip(layers, csr)]
            self.offsets[l, 1:] = np.cumsum([ix.nnz for ix in index])
            n_in, n_out = int(self.sizes[l]), int(self.sizes[l + 1])
            self.dense_offsets[l, 1:] = np.cumsum([0 if keep else n_in * n_out for keep in csr])
            # connected_weights() is in CSR order on both backends: the kernels' order
            values.append(np.concatenate([layer.connected_weights().numpy() if keep else np.zeros(0, np.float32)
                                          for layer, keep in zip(layers, csr)]).astype(np.float32))
            dense_values.append(np.concatenate([np.zeros(0, np.float32)] + [
                layer.dense_weight().detach().numpy().T.ravel()   # n_in x n_out row-major; pruned entries are 0
                for layer, keep in zip(layers, csr) if not keep]).astype(np.float32))
            dense_masks.append(np.concatenate([np.zeros(0, np.float32)] + [
                layer.topology.mask().ravel() for layer, keep in zip(layers, csr) if not keep]).astype(np.float32))
            biases.append(np.stack([layer.bias.detach().numpy() for layer in layers]).astype(np.float32))
            indptr.append(np.stack([ix.indptr for ix in index]).astype(np.int64))
            indices.append(np.concatenate([ix.indices for ix in index]).astype(np.int32))
            col_ptr.append(np.stack([ix.col_ptr for ix in index]).astype(np.int64))
            col_rows.append(np.concatenate([ix.col_rows for ix in index]).astype(np.int32))
            col_perm.append(np.concatenate([ix.col_perm for ix in index]).astype(np.int64))
        self.values, self.biases = tuple(values), tuple(biases)
        self.bufs = tuple(np.zeros_like(v) for v in values)
        self.bias_bufs = tuple(np.zeros_like(b) for b in biases)
        self.indptr, self.indices = tuple(indptr), tuple(indices)
        self.col_ptr, self.col_rows, self.col_perm = tuple(col_ptr), tuple(col_rows), tuple(col_perm)
        self.dense_values, self.dense_masks = tuple(dense_values), tuple(dense_masks)
        self.dense_bufs = tuple(np.zeros_like(v) for v in dense_values)
        if not self.dense.any():   # None: the kernels' specialisation without the dense layer code
            self.dense_values = self.dense_masks = self.dense_bufs = None

    def kernels(self, p: int) -> list[str]:
        """Member ``p``'s kernel per layer: ``"masked"`` (dense GEMMs) or ``"sparse"`` (CSR)."""
        return ["masked" if d else "sparse" for d in self.dense[:, p]]

    def epoch(self, x, targets, orders, members, batch_size, rates, uniforms, lr, momentum,
              threads) -> tuple[np.ndarray, np.ndarray]:
        """One epoch for the member rows ``members``; returns each one's summed batch losses
        (batch mean times batch size, as ``train()`` accumulates them) and its core-seconds.

        ``uniforms``: None without dropout, else a callable ``(first, stop) -> (A, count)``
        array of each member's dropout numbers for batches ``first .. stop - 1``.

        On one thread the members run one after the other anyway, so each gets its own clock
        (the thread's CPU time): a sparse member's seconds are its own, not the population's
        average (module docstring, "Timing"). On more threads the members share the cores and
        the wall time is shared out.
        """
        n = orders.shape[1]
        counts = batch_counts(n, batch_size)
        n_batches = counts.size
        losses = np.zeros((len(members), n_batches), dtype=np.float64)
        seconds = np.zeros(len(members), dtype=np.float64)
        rates32 = np.array(rates, dtype=np.float32) if uniforms is not None else None  # None: nothing drops
        scales = np.array([1.0 - r for r in rates], dtype=np.float32)  # torch divides by float32(1 - rate)
        per_example = int(sum(s for s, r in zip(self.sizes, rates) if r > 0))
        if uniforms is None:
            chunks = [(0, n_batches)]
        else:   # bound the dropout numbers held at once (an MNIST epoch would be GBs)
            step = max(1, _DROPOUT_CHUNK_FLOATS // max(1, len(members) * batch_size * per_example))
            chunks = [(b, min(n_batches, b + step)) for b in range(0, n_batches, step)]
        groups = [slice(a, a + 1) for a in range(len(members))] if threads == 1 else [slice(None)]
        # One thread: all work runs on this thread, so its CPU clock is the member's own cost,
        # which another job taking turns on the core cannot inflate. More: the wall clock.
        clock = time.thread_time if threads == 1 else time.perf_counter
        with member_threads(threads):
            for first, stop in chunks:
                u = np.empty((len(members), 0), dtype=np.float32) if uniforms is None else uniforms(first, stop)
                for rows in groups:
                    args = (x, targets, orders[rows], members[rows], first, stop, batch_size, self.sizes, rates32,
                            scales, u[rows], self.values, self.bufs, self.biases, self.bias_bufs,
                            self.indptr, self.indices, self.col_ptr, self.col_rows, self.col_perm, self.offsets,
                            self.dense, self.dense_values, self.dense_masks, self.dense_bufs, self.dense_offsets,
                            np.float32(lr), np.float32(momentum), momentum > 0, wide_argument(batch_size),
                            losses[rows, first:stop])
                    load_or_compile(kernels.population_batches, *args)  # before the clock (train.warmup)
                    tick = clock()
                    kernels.population_batches(*args)
                    elapsed = clock() - tick
                    # one thread: this member's own time; more: the members' share of the cores
                    seconds[rows] += elapsed if threads == 1 else elapsed * threads / len(members)
        return losses @ counts, seconds

    def accuracies(self, x, y, members, threads) -> np.ndarray:
        correct = np.zeros(len(members), dtype=np.int64)
        with member_threads(threads):
            kernels.population_correct(x, y, members, self.sizes, self.values, self.biases, self.col_ptr,
                                       self.col_rows, self.col_perm, self.offsets, self.dense,
                                       self.dense_values, self.dense_offsets, correct)
        return correct / x.shape[0]

    @torch.no_grad()
    def write_back(self, p: int, model: SparseMLP) -> None:
        """Copy member ``p``'s parameters into ``model`` (its own SparseMLP)."""
        for l, layer in enumerate(model.layers):
            if self.dense[l, p]:   # back to CSR order: the connected entries of the dense matrix
                full = self.dense_values[l][self.dense_offsets[l, p]: self.dense_offsets[l, p + 1]]
                t = layer.topology           # full is n_in x n_out: (input, output) of every connection, CSR order
                values = torch.from_numpy(full.reshape(t.n_in, t.n_out)[t.rows, t.indices].copy())
            else:
                values = torch.from_numpy(self.values[l][self.offsets[l, p]: self.offsets[l, p + 1]].copy())
            if layer.backend == "masked":   # pruned entries were never touched: they stay 0
                layer.weight[layer.edge_index()] = values
            else:
                layer.values.copy_(values)
            layer.bias.copy_(torch.from_numpy(self.biases[l][p]))
        model.eval()


def _runs_dense(topology, layer_kernel: str) -> bool:
    """Whether a member layer is held dense (GEMMs) rather than CSR: ``layer_kernel`` "masked" or
    "sparse" forces it, "auto" asks the measured cost model."""
    if layer_kernel != "auto":
        return layer_kernel == "masked"
    return member_prefers_dense(topology.nnz, topology.n_in, topology.n_out)


def _empty_index(topology) -> SparseIndex:
    """The CSR/CSC index of no connection at all, for a member layer held dense."""
    return SparseIndex(n_in=topology.n_in, n_out=topology.n_out,
                       indptr=np.zeros(topology.n_in + 1, dtype=np.int64), indices=np.zeros(0, dtype=np.int32),
                       col_ptr=np.zeros(topology.n_out + 1, dtype=np.int64), col_rows=np.zeros(0, dtype=np.int32),
                       col_perm=np.zeros(0, dtype=np.int64))


def _train_fused(configs: list[TrainConfig], dataset, on_epoch, threads: int | None,
                 layer_kernel: str = "auto") -> list[RunResult]:
    """Train checked sigmoid ``configs`` with the fused kernels (see :func:`train_population`)."""
    import numba

    started = time.perf_counter()
    threads = min(threads or torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    base = configs[0]
    x_train, y_train, x_val, y_val, x_test, y_test, n_classes = split_tensors(base, dataset)
    x = np.ascontiguousarray(x_train.numpy(), dtype=np.float32)
    targets = np.ascontiguousarray(F.one_hot(y_train, n_classes).float().numpy())
    xt = np.ascontiguousarray(x_test.numpy(), dtype=np.float32)
    yt = np.ascontiguousarray(y_test.numpy(), dtype=np.int64)
    xv = np.ascontiguousarray(x_val.numpy(), dtype=np.float32)
    yv = np.ascontiguousarray(y_val.numpy(), dtype=np.int64)
    models = [build_model(config, x_train.shape[1], n_classes) for config in configs]
    sizes = models[0].sizes
    rates = models[0].dropout_rates
    per_example = sum(s for s, r in zip(sizes, rates) if r > 0)
    population = _FusedPopulation(models, layer_kernel)
    active = list(range(len(configs)))
    histories: list[list[EpochRecord]] = [[] for _ in configs]
    status = ["ok"] * len(configs)
    n, batch = x.shape[0], base.batch_size

    for epoch in range(1, base.epochs + 1):
        if not active:
            break
        members = np.array(active, dtype=np.int64)
        orders = _shuffle_orders(configs, active, n, epoch).numpy()
        uniforms = None
        if per_example:
            # Each member's dropout generator, drawn in train()'s order: torch's CPU generator
            # yields the same numbers for one draw of the concatenated size, so consecutive
            # chunks of batches are consecutive draws.
            generators = [epoch_generators(configs[i].seed, epoch).dropout for i in active]

            def uniforms(first, stop, generators=generators):
                count = (min(n, stop * batch) - first * batch) * per_example
                return np.stack([torch.rand(count, generator=g).numpy() for g in generators])

        # core-seconds per member: comparable with one-thread train() (module docstring)
        totals, seconds = population.epoch(x, targets, orders, members, batch, rates, uniforms,
                                           epoch_lr(base, epoch), base.momentum, threads)
        accuracies = population.accuracies(xt, yt, members, threads)
        val_accuracies = population.accuracies(xv, yv, members, threads) if len(yv) else [None] * len(active)
        survivors = []
        for row, member in enumerate(active):
            train_loss = float(totals[row]) / n
            val = None if val_accuracies[row] is None else float(val_accuracies[row])
            record = EpochRecord(epoch, train_loss, float(accuracies[row]), float(seconds[row]), val)
            histories[member].append(record)
            if math.isfinite(train_loss):
                if not stop_early([h.val_accuracy for h in histories[member]], base.early_stop):
                    survivors.append(member)   # an early-stopped member keeps its weights, status "ok"
            else:
                status[member] = "diverged"
            if on_epoch is not None:
                on_epoch(member, record)
        active = survivors

    for member, model in enumerate(models):
        population.write_back(member, model)
    results = _results(configs, models, histories, status, x_test, y_test, started, threads,
                       "fused-population/sparse")
    for p, result in enumerate(results):   # the kernel each layer really ran
        for layer, kernel in zip(result.layers, population.kernels(p)):
            layer["backend"] = f"fused-population/{kernel}"
    return results
