"""The torch population engine: members stacked into batched tensors, for any recipe and device.

The members' weights are stacked into ``(P, n_in, n_out)`` tensors (pruned entries 0), one
``torch.baddbmm`` per layer and step computes every member's layer, and the update is written
out elementwise (any activation, MSE or cross-entropy, Nesterov SGD or Adam:
:mod:`sparsetopo.train.recipe`). It runs wherever torch runs (CUDA included), serves every
recipe the fused engine (:mod:`sparsetopo.train.fused_population`) does not, and is an
independent check of it. Each member's gradient is its own loss's: the stack sums the members'
losses, whose cross-derivatives are zero.

Block layers (``block`` > 1) stack as their tiles instead: the members' block graphs side by
side form one block graph (:meth:`sparsetopo.nn.block_ops.BlockPlan.union`), so one call of the
block layer (one gather and one ``torch.bmm`` per pass) computes every member's layer, on its
tiles only. ``benchmarks/bench_population_block.py`` measures where that beats training each
member on its own (:func:`sparsetopo.train.population.train_population` routes accordingly).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
import torch.nn.functional as F

from sparsetopo.nn import ACTIVATIONS, SparseMLP
from sparsetopo.nn.block_ops import BlockPlan, block_linear
from sparsetopo.topology.blocks import n_blocks
from sparsetopo.train.config import RunResult, TrainConfig
from sparsetopo.train.loop import split_tensors, training_device
from sparsetopo.train.recipe import ADAM_BETAS, ADAM_EPS, epoch_lr
from sparsetopo.train.roster import DROPOUT_CHUNK_FLOATS, Roster, build_members

# Test examples evaluated at once per member (bounds the (P, rows, n_in) evaluation buffer).
_EVAL_CHUNK_FLOATS = 1 << 23
#: Default bound on the weights and biases of one stack (floats). Each SGD step streams the
#: stacked weights, gradients, momentum buffers and masks several times; while they fit in the
#: CPU's L2 cache a step costs little more than its matmuls, beyond it the step turns
#: memory-bound and a stack of P networks can be slower than P single ones. 2**18 floats
#: (1 MiB a tensor) gives P = 34 for 64-100-10 and P = 11 for 64-300-10.
STACK_FLOATS = 1 << 18


class _Stack:
    """The trainable state of the active members: per layer weight (A, n_in, n_out), bias
    (A, 1, n_out), mask and optimizer state (SGD's momentum buffers, or Adam's two moment
    estimates), A = number of members still training. ``linear_output``: the output layer
    computes logits (a softmax inside cross-entropy) instead of the activation."""

    def __init__(self, models: Sequence[SparseMLP], linear_output: bool = False):
        n_layers = len(models[0].layers)
        self.linear_output = linear_output
        # A block layer stacks its members' tiles (see _BlockUnion); every other layer its dense
        # weights: dense_weight() and the topology's mask exist on every SparseLinear backend, so
        # members built with "sparse" or "auto" layers stack as well (the stack computes dense).
        # The stack holds the topology's n_in x n_out orientation (x @ w), the layers nn.Linear's.
        self.unions = [_BlockUnion([m.layers[l].topology for m in models]) if models[0].layers[l].topology.is_blocked
                       else None for l in range(n_layers)]
        self.weights = [(torch.cat([m.layers[l].tiles.detach() for m in models]) if self.unions[l] else
                         torch.stack([m.layers[l].dense_weight().t() for m in models])).requires_grad_()
                        for l in range(n_layers)]
        self.biases = [torch.stack([m.layers[l].bias.detach() for m in models]).unsqueeze(1).requires_grad_()
                       for l in range(n_layers)]
        self.masks = [None if self.unions[l] else
                      torch.stack([torch.from_numpy(m.layers[l].topology.mask()).to(self.weights[l].dtype)
                                   for m in models]) for l in range(n_layers)]
        self.buffers = [torch.zeros_like(p) for p in self.parameters()]
        self.second = [torch.zeros_like(p) for p in self.parameters()]   # Adam's exp_avg_sq (unused by SGD)
        self.steps = 0                                                    # Adam's step count

    def to(self, device: torch.device) -> "_Stack":
        """Move every stacked tensor (weights, biases, masks, optimizer state) to ``device``."""
        for name, value in vars(self).items():
            if isinstance(value, list) and value and all(isinstance(t, torch.Tensor) for t in value):
                setattr(self, name, [t.detach().to(device).requires_grad_(t.requires_grad) for t in value])
        self.masks = [None if m is None else m.to(device) for m in self.masks]
        for union in self.unions:
            if union is not None:
                union.to(device)
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
            x = self.unions[l](x, w) + b if self.unions[l] else torch.baddbmm(b, x, w)
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
            if i < n_layers and self.masks[i] is not None:
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
            if i < n_layers and self.masks[i] is not None:
                grad.mul_(self.masks[i])          # the gradient of weight * mask
            if momentum > 0:
                buf.mul_(momentum).add_(grad)
                grad.add_(buf, alpha=momentum)    # in place: the same numbers as grad.add(buf, ...)
            p.add_(grad, alpha=-lr)
            p.grad = None

    def keep(self, rows: list[int]) -> None:
        """Drop every member except the stack rows ``rows`` (in that order)."""
        if not rows:   # the population is done: nothing trains on (and a union of no members has no plan)
            return
        index = torch.tensor(rows, dtype=torch.int64, device=self.biases[0].device)
        n_layers = len(self.weights)

        def take(i: int, stacked: torch.Tensor) -> torch.Tensor:
            """Parameter ``i``'s stacked tensor (weights, then biases; or its optimizer state)
            for the kept rows: a block layer's by member offsets, any other by its first axis."""
            union = self.unions[i] if i < n_layers else None
            return union.keep(stacked, rows) if union else stacked[index]

        params = [take(i, p.detach()).requires_grad_() for i, p in enumerate(self.parameters())]
        self.weights, self.biases = params[:n_layers], params[n_layers:]
        self.masks = [None if m is None else m[index] for m in self.masks]
        self.buffers = [take(i, t) for i, t in enumerate(self.buffers)]
        self.second = [take(i, t) for i, t in enumerate(self.second)]
        self.unions = [u.kept(rows) if u else None for u in self.unions]

    @torch.no_grad()
    def write_back(self, row: int, model: SparseMLP) -> None:
        """Copy stack row ``row``'s parameters into ``model`` (its own SparseMLP)."""
        for layer, w, b, union in zip(model.layers, self.weights, self.biases, self.unions):
            if union is not None:
                layer.tiles.copy_(union.member(w, row))
            elif layer.backend == "masked":
                layer.weight.copy_(w[row].t())
            else:                                 # the sparse backend keeps connected weights only
                layer.values.copy_(w[row].t()[layer.edge_index()])
            layer.bias.copy_(b[row, 0])
        model.eval()

    @torch.no_grad()
    def accuracies(self, act, x: torch.Tensor, y: torch.Tensor) -> list[float]:
        """Test accuracy of every active member (no dropout), evaluated in row chunks."""
        members = self.biases[0].shape[0]
        correct = torch.zeros(members, dtype=torch.int64, device=x.device)
        rows = max(1, _EVAL_CHUNK_FLOATS // (members * max(b.shape[2] for b in self.biases)))
        for start in range(0, x.shape[0], rows):
            xs = x[start: start + rows]
            out = self.forward(xs.unsqueeze(0).expand(members, -1, -1), act)
            correct += (out.argmax(dim=2) == y[start: start + rows]).sum(dim=1)
        return [float(c) / x.shape[0] for c in correct.double()]


class _BlockUnion:
    """One block layer of every member of a stack, computed as one layer on the union of their
    block graphs (:meth:`BlockPlan.union`). The stacked tiles are the members' tiles concatenated
    (member ``m``'s at ``offsets[m]:offsets[m + 1]``); activations stay the stack's
    (members, rows, neurons), each member padded to whole input blocks on the way in and cut to
    its outputs on the way out, so the padded tile entries keep a zero gradient."""

    def __init__(self, topologies):
        self.topologies = list(topologies)
        self.plan = BlockPlan.union(self.topologies)
        counts = [t.block_graph.nnz for t in self.topologies]
        self.offsets = [0, *torch.tensor(counts).cumsum(0).tolist()]

    def to(self, device) -> None:
        self.plan = self.plan.to(device)

    def __call__(self, x: torch.Tensor, tiles: torch.Tensor) -> torch.Tensor:
        """(members, rows, n_in) -> (members, rows, n_out), no bias."""
        members, rows, n_in = x.shape
        width = self.plan.n_in // members
        x = F.pad(x, (0, width - n_in)).transpose(0, 1).reshape(rows, -1)
        y = block_linear(x, tiles, None, self.plan).view(rows, members, -1)
        return y[:, :, : self.topologies[0].n_out].transpose(0, 1)

    def member(self, stacked: torch.Tensor, row: int) -> torch.Tensor:
        """Member ``row``'s part of a stacked tile tensor (tiles, or their optimizer state)."""
        return stacked[self.offsets[row]: self.offsets[row + 1]]

    def keep(self, stacked: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """The stacked tensor of members ``rows`` only, in that order."""
        return torch.cat([self.member(stacked, row) for row in rows])

    def kept(self, rows: list[int]) -> "_BlockUnion":
        union = _BlockUnion([self.topologies[row] for row in rows])
        union.to(self.plan.tile_in.device)
        return union


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
        budget = max(1, DROPOUT_CHUNK_FLOATS // max(1, len(self.generators) * self.per_example))
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
    (a block layer's tiles) and biases (see :data:`STACK_FLOATS`), at least 1."""
    sizes = config.sizes(n_features, n_classes)
    if config.block == 1:
        per_member = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
    else:   # a block layer stacks its tiles only: k output blocks per input block, each b_in x b_out
        per_member = sum(n_blocks(a, b_in) * k * b_in * b_out + b for a, b, (b_in, b_out), k in
                         zip(sizes, sizes[1:], config.layer_blocks(sizes), config.layer_degrees(sizes)))
    return max(1, budget // per_member)


def train_stack(configs: list[TrainConfig], dataset, on_epoch) -> list[RunResult]:
    """Train checked ``configs`` as one stack (see :func:`sparsetopo.train.train_population`)."""
    started = time.perf_counter()
    base = configs[0]
    device = training_device(base)
    x_train, y_train, x_val, y_val, x_test, y_test, n_classes = split_tensors(base, dataset)
    x_train, y_train, x_val, y_val, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_val, y_val,
                                                                              x_test, y_test))
    targets = F.one_hot(y_train, n_classes).float()
    models = build_members(configs, x_train.shape[1], n_classes)
    act = ACTIVATIONS[base.activation]
    sizes = models[0].sizes
    rates = models[0].dropout_rates
    widths = [sizes[l] if rate > 0 else None for l, rate in enumerate(rates)]

    stack = _Stack(models, linear_output=models[0].output == "linear").to(device)
    roster = Roster(configs, on_epoch)
    n, batch = x_train.shape[0], base.batch_size
    batch_sizes = [min(batch, n - start) for start in range(0, n, batch)]

    for epoch in roster.epochs():
        lr = epoch_lr(base, epoch)
        tick = time.perf_counter()
        orders = roster.orders(n, epoch).to(device)
        dropout = _DropoutStream(roster.dropout_generators(epoch), widths, batch_sizes) if any(widths) else None
        totals = torch.zeros(len(roster.active), dtype=torch.float64, device=device)
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
        trained = list(roster.active)
        seconds = (time.perf_counter() - tick) * torch.get_num_threads() / len(trained)   # core-seconds
        accuracies = stack.accuracies(act, x_test, y_test)
        val_accuracies = stack.accuracies(act, x_val, y_val) if len(y_val) else [None] * len(trained)
        kept = roster.close_epoch(epoch, n, totals, [seconds] * len(trained), accuracies, val_accuracies)
        for row, member in enumerate(trained):
            if row not in kept:   # diverged or stopped early: its weights as they are now
                stack.write_back(row, models[member])
        if len(kept) < len(trained):
            stack.keep(kept)

    for row, member in enumerate(roster.active):
        stack.write_back(row, models[member])
    kernel = "block" if base.block != 1 else "masked"
    return roster.results(models, x_test, y_test, started, torch.get_num_threads(), f"torch-population/{kernel}")
