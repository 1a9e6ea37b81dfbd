"""Population training: many networks of one shape trained together as one stacked model.

A sweep trains thousands of small networks that differ only in their topology and seed. One
64-100-10 network keeps a CPU core busy with interpreter and dispatch overhead rather than
arithmetic (DESIGN.md §7), so :func:`train_population` stacks ``P`` such networks into
``(P, n_in, n_out)`` weight tensors and runs each SGD step for all of them with one batched
matmul (``torch.baddbmm``) per layer. The overhead is paid once per step instead of ``P``
times.

Each member is exactly the network :func:`sparsetopo.train.train` would train for its config:

* topology and initial weights come from :func:`sparsetopo.train.build_model` (copied into
  the stacks), so they are bit-identical;
* every epoch each member draws its own permutation from its own shuffling generator
  (``derive_seed(seed, "shuffle", epoch)``) and its own dropout numbers from its own dropout
  generator in the order ``train()`` draws them (batch by batch, layer by layer); batches are
  gathered with ``(P, batch)`` index tensors. Members share the batch boundaries because they
  share the number of examples and ``batch_size`` (the last batch may be smaller);
* the loss is the *sum* over members of each member's mean squared error, so the gradient
  of one member's parameters is exactly the gradient its own loss would give it alone;
* the update repeats ``torch.optim.SGD(lr, momentum, nesterov=momentum > 0)`` elementwise
  (``buf = m*buf + g; p -= lr*(g + m*buf)``), the gradient of each weight multiplied by its
  mask, so pruned connections stay exactly 0.

The results therefore agree with individually trained networks up to float rounding (a
batched matmul may sum in another order): weights within about 1e-5 after a few epochs and
test accuracies within an example or so.

Divergence is tracked per member: a member whose epoch loss is not finite is recorded as
``"diverged"`` exactly as ``train()`` would record it, its state is written back to its own
model, and it leaves the stack; the others continue unaffected (members never share numbers).

Timing: the members train simultaneously, so a member's ``EpochRecord.seconds`` is the
population's epoch time divided by the number of members trained in that epoch, and
``RunResult.seconds`` is the call's wall time divided by ``P``. Sums over members then give
the real cost. Checkpointing and resume are not offered here; a sweep re-runs a population.
"""

from __future__ import annotations

import math
import time
from dataclasses import fields
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import ACTIVATIONS, SparseMLP
from sparsetopo.seeding import derive_seed
from sparsetopo.train import EpochRecord, RunResult, TrainConfig, build_model, run_result, training_tensors

__all__ = ["MEMBER_FIELDS", "STACK_FLOATS", "check_population", "members_per_stack", "population_key",
           "train_population"]

#: The TrainConfig fields in which members of one population may differ. Every other field
#: (data set, layer sizes, protocol, backend, and any field added later) must agree.
MEMBER_FIELDS = ("seed", "construction", "degrees", "init")

# Dropout numbers are drawn ahead for a chunk of batches at a time; this bounds the chunk.
_DROPOUT_CHUNK_FLOATS = 1 << 22
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
    """Validate every config and check that all share :func:`population_key`.

    Raises SparsetopoError naming the first member and field that differ from ``configs[0]``.
    """
    configs = list(configs)
    if not configs:
        raise SparsetopoError("train_population got no configs: give at least one TrainConfig")
    for i, config in enumerate(configs):
        if not isinstance(config, TrainConfig):
            raise SparsetopoError(f"configs[{i}] is a {type(config).__name__}, not a TrainConfig")
        config.validate()
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
    (A, 1, n_out), mask and momentum buffers, A = number of members still training."""

    def __init__(self, models: Sequence[SparseMLP]):
        n_layers = len(models[0].layers)
        # dense_weight() and the topology's mask exist on every SparseLinear backend, so members
        # built with "sparse" or "auto" layers stack as well (the stack always computes dense).
        self.weights = [torch.stack([m.layers[l].dense_weight() for m in models]).requires_grad_()
                        for l in range(n_layers)]
        self.biases = [torch.stack([m.layers[l].bias.detach() for m in models]).unsqueeze(1).requires_grad_()
                       for l in range(n_layers)]
        self.masks = [torch.stack([torch.from_numpy(m.layers[l].topology.mask()).to(self.weights[l].dtype)
                                   for m in models]) for l in range(n_layers)]
        self.buffers = [torch.zeros_like(p) for p in self.parameters()]

    def parameters(self) -> list[torch.Tensor]:
        return [*self.weights, *self.biases]

    def forward(self, x: torch.Tensor, act, keep_masks=None, rates=None) -> torch.Tensor:
        """Outputs (A, rows, n_classes) for inputs (A, rows, n_features)."""
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            if keep_masks is not None and keep_masks[l] is not None:
                x = x * (keep_masks[l] >= rates[l]) / (1.0 - rates[l])
            # Pruned weights are exactly 0 (they start at 0 and their gradient is masked), so
            # w equals train()'s ``weight * mask`` bit for bit.
            x = act(torch.baddbmm(b, x, w))
        return x

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

    @torch.no_grad()
    def write_back(self, row: int, model: SparseMLP) -> None:
        """Copy stack row ``row``'s parameters into ``model`` (its own SparseMLP)."""
        for layer, w, b in zip(model.layers, self.weights, self.biases):
            if layer.backend == "masked":
                layer.weight.copy_(w[row])
            else:                                 # the sparse backend keeps connected weights only
                t = layer.topology
                layer.values.copy_(w[row][torch.from_numpy(t.rows.astype("int64")),
                                          torch.from_numpy(t.indices.astype("int64"))])
            layer.bias.copy_(b[row, 0])
        model.eval()

    @torch.no_grad()
    def accuracies(self, act, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Test accuracy of every active member (no dropout), evaluated in row chunks."""
        members = self.weights[0].shape[0]
        correct = torch.zeros(members, dtype=torch.int64)
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


def train_population(
    configs: Sequence[TrainConfig],
    dataset=None,
    on_epoch: Callable[[int, EpochRecord], None] | None = None,
    data_dir=None,
    max_members: int | None = None,
) -> list[RunResult]:
    """Train ``configs`` together in stacks; return one RunResult per config, in order.

    configs : TrainConfigs that share :func:`population_key` (they may differ in seed,
        construction, degrees and init); otherwise SparsetopoError names the differing field.
    dataset : a loaded Dataset; loaded from ``configs[0].dataset`` / ``data_dir`` when None.
    on_epoch : called as ``on_epoch(member_index, record)`` after each epoch of each member
        still training (for progress; the library never prints). ``member_index`` indexes
        ``configs``.
    max_members : networks per stack; None picks :func:`members_per_stack` (a cache-sized
        stack). Longer lists are trained as consecutive stacks of at most this many.

    Each result equals ``train(config, dataset)``'s up to float rounding: same topology,
    initial weights, shuffling, dropout and updates (see the module docstring). Its ``model``
    is the member's own trained SparseMLP; ``seconds`` are the population's time divided by
    the number of members (module docstring, "Timing").
    """
    configs = check_population(configs)
    if dataset is None:
        from sparsetopo.data import load_dataset

        dataset = load_dataset(configs[0].dataset, data_dir=data_dir)
    if max_members is None:
        max_members = members_per_stack(configs[0], dataset.n_features, int(dataset.n_classes))
    elif isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
        raise SparsetopoError(f"max_members={max_members!r} must be a positive integer (or None to choose)")
    results: list[RunResult] = []
    for first in range(0, len(configs), max_members):
        def offset_on_epoch(member, record, first=first):
            on_epoch(first + member, record)

        results += _train_stack(configs[first: first + max_members], dataset,
                                offset_on_epoch if on_epoch is not None else None)
    return results


def _train_stack(configs: list[TrainConfig], dataset, on_epoch) -> list[RunResult]:
    """Train checked ``configs`` as one stack (see :func:`train_population`)."""
    started = time.perf_counter()
    base = configs[0]
    x_train, y_train, x_test, y_test, n_classes = training_tensors(base, dataset)
    targets = F.one_hot(y_train, n_classes).float()
    models = [build_model(config, x_train.shape[1], n_classes) for config in configs]
    act = ACTIVATIONS[base.activation]
    sizes = models[0].sizes
    rates = [base.dropout[0] if l == 0 else base.dropout[1] for l in range(len(sizes) - 1)]
    widths = [sizes[l] if rate > 0 else None for l, rate in enumerate(rates)]

    stack = _Stack(models)
    active = list(range(len(configs)))           # member index of each stack row
    histories: list[list[EpochRecord]] = [[] for _ in configs]
    status = ["ok"] * len(configs)
    n, batch = x_train.shape[0], base.batch_size
    batch_sizes = [min(batch, n - start) for start in range(0, n, batch)]

    for epoch in range(1, base.epochs + 1):
        if not active:
            break
        tick = time.perf_counter()
        orders = torch.stack([
            torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(configs[i].seed, "shuffle", epoch)))
            for i in active
        ])
        dropout = None
        if any(widths):
            dropout = _DropoutStream(
                [torch.Generator().manual_seed(derive_seed(configs[i].seed, "dropout", epoch)) for i in active],
                widths, batch_sizes)
        totals = torch.zeros(len(active), dtype=torch.float64)
        for start in range(0, n, batch):
            index = orders[:, start: start + batch]
            keep = dropout.masks() if dropout is not None else None
            out = stack.forward(x_train[index], act, keep, rates)
            losses = (out - targets[index]).pow(2).mean(dim=(1, 2))   # each member's F.mse_loss
            losses.sum().backward()
            stack.step(base.lr, base.momentum)
            totals += losses.detach() * index.shape[1]
        seconds = (time.perf_counter() - tick) / len(active)
        accuracies = stack.accuracies(act, x_test, y_test)
        survivors = []
        for row, member in enumerate(active):
            train_loss = float(totals[row]) / n
            record = EpochRecord(epoch, train_loss, accuracies[row], seconds)
            histories[member].append(record)
            if math.isfinite(train_loss):
                survivors.append(row)
            else:
                status[member] = "diverged"
                stack.write_back(row, models[member])
            if on_epoch is not None:
                on_epoch(member, record)
        if len(survivors) < len(active):
            stack.keep(survivors)
            active = [active[row] for row in survivors]

    for row, member in enumerate(active):
        stack.write_back(row, models[member])
    elapsed = time.perf_counter() - started
    results = []
    for config, model, history, state in zip(configs, models, histories, status):
        result = run_result(config, model, history, state, x_test, y_test, started)
        result.seconds = elapsed / len(configs)
        results.append(result)
    return results
