"""The paper's future work: its topologies inside a CNN and an LSTM (``TrainConfig.architecture``).

The paper ends by naming "other neural network architectures (i.e. as CNN, LSTM)". Here a
construction is put into each by :func:`sparsetopo.sparsify`, at the run's ``density``:

- ``"cnn"``: a small VGG-style network on square grey images (28x28 Fashion-MNIST; any
  ``side x side`` data set): ``len(hidden)`` 3x3 convolutions with ``hidden[i]`` channels,
  each followed by batch normalisation and ReLU, a 2x2 max-pool after the second and the third,
  and a linear head on the flattened feature maps. Every convolution after the first is sparsified:
  its channel graph (input channel -> output channel) is the construction's. The first conv has
  one input channel, so it has no graph to choose.
- ``"lstm"``: the image read row by row (``side`` steps of ``side`` pixels), one ``nn.LSTM`` of
  ``hidden[0]`` units and a linear head on its last hidden state. ``W_ih`` (pixels -> units) and
  ``W_hh`` (units -> units) are sparsified, one topology shared by the four gates
  (:mod:`sparsetopo.nn.recurrent`).

The nulls (``permute_inputs``, a seed): for the cnn one fixed permutation of each sparsified
conv's input channels, applied to its input (so a channel graph no longer lines up with the
previous layer's channel order: a rotating construction joins channel ``i`` to ``i .. i+k-1``,
and the previous rotating layer wrote neighbouring channels from neighbouring inputs); for the
lstm one fixed permutation of the pixels within each row, the same for every row and example.
Each keeps the graph (and its spectrum) and removes only its alignment.

Recipe: whatever the config says; the presets use cross-entropy and Adam (the paper gives no
protocol for these networks). Initial weights are torch's own initialisation, drawn under a
generator seeded from the run's seed; a sparsified layer keeps the connected entries of them.
Every run takes the plain autograd loop on the masked layers. It writes no epoch checkpoint
(``train(..., resume=True)`` is refused for it): a sweep resumes such runs run by run.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import NamedTuple

import torch
from torch import nn

from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import sparsify
from sparsetopo.seeding import derive_seed, rng
from sparsetopo.topology import Topology
from sparsetopo.train.config import EpochRecord, RunResult, TrainConfig
from sparsetopo.train.recipe import batch_loss, epoch_lr, make_optimizer, stop_early
from sparsetopo.train.seeds import epoch_generators

__all__ = ["ArchitectureNet", "build_architecture", "image_side", "train_architecture"]


class LayerGraph(NamedTuple):
    """One sparsified weight matrix's topology, as a layer of an MLP offers it (``.topology``)."""

    name: str
    topology: Topology


def image_side(n_features: int, architecture: str) -> int:
    """The side of the square images ``n_features`` pixels make; SparsetopoError when they make none."""
    side = math.isqrt(n_features)
    if side * side != n_features or side < 4:
        raise SparsetopoError(f"architecture {architecture!r} reads square images of at least 4x4 pixels, but the "
                              f"data set has {n_features} features: use fashion-mnist, mnist or digits")
    return side


class ChannelPermutation(nn.Module):
    """Reorders the channels of its input by one fixed permutation (the cnn's null)."""

    def __init__(self, perm: torch.Tensor):
        super().__init__()
        self.register_buffer("perm", perm, persistent=False)

    def forward(self, x):
        return x.index_select(1, self.perm)


class ArchitectureNet(nn.Module):
    """A cnn or lstm of a :class:`TrainConfig`: ``forward`` maps flat images ``(batch, side*side)``
    to logits; ``layers`` lists the sparsified weight matrices' topologies (as an MLP's layers
    offer theirs, for the sweep's rows and graph measures)."""

    def __init__(self, config: TrainConfig, side: int, n_classes: int):
        super().__init__()
        self.architecture, self.side = config.architecture, side
        if config.architecture == "cnn":
            parts, channels = [], 1
            for i, width in enumerate(config.hidden):
                parts += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
                if i in (1, 2):   # 28 -> 14 -> 7 (8 -> 4 -> 2 for digits)
                    parts.append(nn.MaxPool2d(2))
                channels = width
            self.features = nn.Sequential(*parts)
            pooled = side // 2 // 2 if len(config.hidden) > 2 else side // 2
            self.head = nn.Linear(channels * pooled * pooled, n_classes)
        else:
            self.lstm = nn.LSTM(side, config.hidden[0], batch_first=True)
            self.head = nn.Linear(config.hidden[0], n_classes)
        self.row_perm = None

    def forward(self, x: torch.Tensor, generator=None) -> torch.Tensor:
        rows = x.reshape(x.shape[0], self.side, self.side)
        if self.architecture == "cnn":
            return self.head(self.features(rows.unsqueeze(1)).flatten(1))
        if self.row_perm is not None:
            rows = rows.index_select(2, self.row_perm)
        out, _ = self.lstm(rows)
        return self.head(out[:, -1])

    @property
    def layers(self) -> list[LayerGraph]:
        """The topology of every sparsified matrix: the cnn's convs after the first; the lstm's
        ``W_ih`` then ``W_hh`` (the first gate's: the gates share one)."""
        if self.architecture == "cnn":
            return [LayerGraph(name, m.topology) for name, m in self.named_modules() if hasattr(m, "topology")]
        return [LayerGraph(path, ts[0]) for path, ts in self.lstm.topologies.items()]

    def masked(self) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
        """``(name, weight, mask)`` of every sparsified matrix (the mask broadcast to the weight)."""
        if self.architecture == "cnn":
            return [(name, m.weight, m.mask.expand_as(m.weight)) for name, m in self.named_modules()
                    if hasattr(m, "topology")]
        return [(path, self.lstm.get_parameter(path), getattr(self.lstm, path.replace(".", "_") + "_mask"))
                for path in self.lstm.topologies]

    def weight_stats(self) -> list[dict]:
        """Per sparsified matrix: max, min, mean, std and count of its connected weights."""
        stats = []
        for _, weight, mask in self.masked():
            w = weight.detach()[mask.bool()].double()
            stats.append({"max": float(w.max()), "min": float(w.min()), "mean": float(w.mean()),
                          "std": float(w.std()) if w.numel() > 1 else 0.0, "nnz": int(w.numel())})
        return stats

    def parameter_count(self) -> int:
        """Trainable numbers: every parameter, less the masked-out entries of the sparsified matrices."""
        total = sum(p.numel() for p in self.parameters())
        return total - sum(int((mask == 0).sum()) for _, _, mask in self.masked())


def build_architecture(config: TrainConfig, n_features: int, n_classes: int) -> ArchitectureNet:
    """The cnn or lstm ``config`` names, sparsified by its construction at its density, with its null."""
    side = image_side(n_features, config.architecture)
    with torch.random.fork_rng(devices=[]):   # torch's initialisers draw from the global generator
        torch.manual_seed(derive_seed(config.seed, "init"))
        net = ArchitectureNet(config, side, n_classes)
    if config.architecture == "cnn":
        convs = [name for name, m in net.named_modules() if isinstance(m, nn.Conv2d)][1:]
    else:
        convs = ["lstm"]
    net = sparsify(net, config.construction, density=config.density, seed=derive_seed(config.seed, "topology"),
                   include=convs, backend="masked", strict=True)
    if config.permute_inputs is not None:
        if config.architecture == "lstm":
            net.row_perm = _permutation(config.permute_inputs, side, "pixels")
        else:
            for i, module in enumerate(net.features):
                if hasattr(module, "topology"):
                    net.features[i] = nn.Sequential(
                        ChannelPermutation(_permutation(config.permute_inputs, module.in_channels, "channels")),
                        module)
    return net


def _permutation(seed: int, n: int, what: str) -> torch.Tensor:
    """The null's fixed permutation of ``n`` items: its own seed and ``n`` only, never the run's."""
    return torch.from_numpy(rng(seed, "permute_inputs", what, n).permutation(n).astype("int64"))


def train_architecture(config: TrainConfig, split, on_epoch=None, clock=time.perf_counter) -> RunResult:
    """Train the cnn or lstm of ``config`` on ``split`` (:func:`~sparsetopo.train.loop.split_tensors`'s
    tuple for ``config`` without ``permute_inputs``: the null is the network's) and return its
    RunResult. Batches, shuffling and learning rates follow the MLP's autograd loop."""
    started = time.perf_counter()
    device = torch.device(config.device)
    *tensors, n_classes = split
    x_train, y_train, x_val, y_val, x_test, y_test = (t.to(device) for t in tensors)
    model = build_architecture(config, x_train.shape[1], n_classes).to(device)
    optimizer = make_optimizer(config, model.parameters())
    history, status, n = [], "ok", x_train.shape[0]
    for epoch in range(1, config.epochs + 1):
        if stop_early([h.val_accuracy for h in history], config.early_stop):
            break
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(config, epoch)
        model.train()
        tick = clock()
        total = 0.0
        order = torch.randperm(n, generator=epoch_generators(config.seed, epoch).shuffle).to(device)
        for start in range(0, n, config.batch_size):
            batch = order[start: start + config.batch_size]
            out = model(x_train[batch])
            loss = batch_loss(config, out, nn.functional.one_hot(y_train[batch], n_classes).float(), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * batch.numel()
        seconds = clock() - tick
        if not math.isfinite(total):
            status = "diverged"
        val = _accuracy(model, x_val, y_val) if len(y_val) else None
        history.append(EpochRecord(epoch, total / n, _accuracy(model, x_test, y_test), seconds, val))
        if on_epoch is not None:
            on_epoch(history[-1])
        if status != "ok":
            break
    return RunResult(config=config, status=status, reason="a NaN or infinite loss" if status != "ok" else "",
                     test_accuracy=history[-1].test_accuracy if history else _accuracy(model, x_test, y_test),
                     history=history, weight_stats=model.weight_stats(), parameters=model.parameter_count(),
                     seconds=time.perf_counter() - started, model=model,
                     layers=[{**layer.topology.provenance(), "backend": "autograd/masked"} for layer in model.layers])


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i: i + batch]).argmax(dim=1) == y[i: i + batch]).sum()) for i in range(0, len(y), batch))
    return hits / max(1, len(y))


def plain_split(config: TrainConfig) -> TrainConfig:
    """``config`` with no input permutation: the cnn's and lstm's nulls act inside the network."""
    return replace(config, permute_inputs=None)
