"""Train one sparse MLP under the paper's protocol: ``train(TrainConfig(...)) -> RunResult``.

The paper (Section 4.1): MNIST, 784-H-10 with H in {100, 300, 500}, 50 epochs, batch 32, mean
squared error on one-hot targets, sigmoid on every neuron, Glorot normal initialisation, SGD
with learning rate 0.01 and Nesterov momentum 0.9, the adjacency imposed at every update.
Those are :class:`TrainConfig`'s defaults. Keras' Nesterov SGD and torch's are the same
update written two ways (velocity ``v`` there is ``-lr * buf`` here).

Every random choice (topology, initial weights, shuffling, dropout) derives from
``config.seed``; shuffling and dropout are re-seeded per epoch, so a run resumed from its
epoch checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError, check_int
from sparsetopo.nn import ACTIVATIONS, BACKENDS, INITIALISERS, SparseMLP
from sparsetopo.seeding import derive_seed
from sparsetopo.topology import build_stack, get_construction


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the paper's protocol (Section 4.1)."""

    dataset: str = "mnist"                       # the paper's data set
    hidden: tuple[int, ...] = (300,)             # hidden layer sizes; the paper: 100, 300, 500 or (500, 300)
    construction: str = "regular_rotating"       # every layer's construction
    degrees: tuple[int | None, ...] | None = None  # out-degree k per layer; None (or a None entry) = all outputs
    epochs: int = 50                             # passes over the training set
    batch_size: int = 32                         # examples per SGD step
    lr: float = 0.01                             # SGD learning rate ("1%")
    momentum: float = 0.9                        # Nesterov momentum
    activation: str = "sigmoid"                  # on every neuron, output included
    dropout: tuple[float, float] = (0.0, 0.0)    # rates on the input layer and on hidden layers (paper's variant: 0.2, 0.5)
    init: str = "glorot"                         # "glorot" (Keras glorot_normal) or "glorot_sparse" (real fan-in/out)
    backend: str = "auto"                        # masked, sparse or auto (per layer, the measured faster); numbers equal up to float error
    seed: int = 0                                # topology, initial weights, shuffling and dropout all derive from it
    limit_train: int | None = None               # use only the first N training examples (None: all)

    def __post_init__(self):
        def as_tuple(value):
            return tuple(value) if isinstance(value, (list, tuple)) else (value,)

        object.__setattr__(self, "hidden", as_tuple(self.hidden))
        object.__setattr__(self, "dropout", as_tuple(self.dropout))
        if self.degrees is not None:
            object.__setattr__(self, "degrees", as_tuple(self.degrees))

    def validate(self) -> "TrainConfig":
        """Raise SparsetopoError naming the first bad field; return self when all are valid."""
        for h in self.hidden:
            check_int("hidden size", h, 1)
        get_construction(self.construction)
        check_int("epochs", self.epochs, 0)
        check_int("batch_size", self.batch_size, 1)
        check_int("seed", self.seed, 0)
        if self.limit_train is not None:
            check_int("limit_train", self.limit_train, 1)
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SparsetopoError(f"lr={self.lr} must be a positive number")
        if not 0 <= self.momentum < 1:
            raise SparsetopoError(f"momentum={self.momentum} must be in [0, 1)")
        if len(self.dropout) != 2 or not all(0 <= p < 1 for p in self.dropout):
            raise SparsetopoError(f"dropout={list(self.dropout)} must be two rates in [0, 1): input layer, hidden layers")
        for name, value, valid in (("activation", self.activation, ACTIVATIONS), ("init", self.init, INITIALISERS),
                                   ("backend", self.backend, BACKENDS)):
            if value not in valid:
                raise SparsetopoError(f"unknown {name} {value!r}: choose one of {', '.join(valid)}")
        if self.degrees is not None and len(self.degrees) != len(self.hidden) + 1:
            raise SparsetopoError(
                f"degrees={list(self.degrees)} has {len(self.degrees)} entries but a network with hidden "
                f"sizes {list(self.hidden)} has {len(self.hidden) + 1} layers: give one degree per layer"
            )
        return self

    def sizes(self, n_features: int, n_classes: int) -> list[int]:
        return [n_features, *self.hidden, n_classes]

    def layer_degrees(self, sizes: list[int]) -> list[int]:
        """The degree of each layer, None entries replaced by the layer's output count."""
        degrees = self.degrees or (None,) * (len(sizes) - 1)
        return [sizes[l + 1] if k is None else k for l, k in enumerate(degrees)]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SparsetopoError(f"unknown TrainConfig field(s) {unknown}: valid fields are {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int            # 1-based
    train_loss: float     # mean loss over the epoch's batches
    test_accuracy: float
    seconds: float        # training time of the epoch (evaluation excluded)


@dataclass
class RunResult:
    """What one training run yields: everything the paper's analysis needs."""

    config: TrainConfig
    status: str                      # "ok" or "diverged" (NaN/inf loss ended the run)
    test_accuracy: float             # after the last completed epoch
    history: list[EpochRecord]
    weight_stats: list[dict]         # per layer: max, min, mean, std, nnz of connected weights
    parameters: int                  # connections + biases
    seconds: float                   # wall time of this call (includes evaluation)
    layers: list[dict] = field(default_factory=list)  # per layer: provenance of its topology
    model: SparseMLP | None = field(default=None, repr=False, compare=False)  # the trained network

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "status": self.status,
            "test_accuracy": self.test_accuracy,
            "history": [asdict(h) for h in self.history],
            "weight_stats": self.weight_stats,
            "parameters": self.parameters,
            "seconds": self.seconds,
            "layers": self.layers,
        }


def build_model(config: TrainConfig, n_features: int, n_classes: int) -> SparseMLP:
    """The network a config describes, its topologies built from ``config.seed``."""
    sizes = config.sizes(n_features, n_classes)
    degrees = config.layer_degrees(sizes)
    topologies = build_stack(sizes, config.construction, degrees, seed=derive_seed(config.seed, "topology"))
    return SparseMLP(topologies, activation=config.activation, dropout=config.dropout,
                     init=config.init, seed=config.seed, backend=config.backend)


def accuracy(model: SparseMLP, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).double().mean())


def train(
    config: TrainConfig,
    dataset=None,
    data_dir=None,
    checkpoint_dir=None,
    resume: bool = False,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> RunResult:
    """Train ``config`` and return its RunResult.

    dataset : a loaded Dataset (from :func:`sparsetopo.data.load_dataset`); loaded from
        ``config.dataset`` / ``data_dir`` when None.
    checkpoint_dir : where ``checkpoint.pt`` is written after every epoch.
    resume : continue from ``checkpoint_dir``'s checkpoint if there is one; the final result
        equals an uninterrupted run's.
    on_epoch : called after each epoch (for progress bars; the library never prints).
    """
    started = time.perf_counter()
    config.validate()
    x_train, y_train, x_test, y_test, n_classes = training_tensors(config, dataset, data_dir)
    targets = F.one_hot(y_train, n_classes).float()

    model = build_model(config, x_train.shape[1], n_classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                nesterov=config.momentum > 0)
    history: list[EpochRecord] = []
    status = "ok"
    checkpoint = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    if resume and checkpoint is not None and checkpoint.exists():
        history, status = _load_checkpoint(checkpoint, config, model, optimizer)

    fused = model.fused_epoch(optimizer)  # None unless every layer is sparse and there is no dropout
    n = x_train.shape[0]
    for epoch in range(len(history) + 1, config.epochs + 1):
        if status != "ok":
            break
        model.train()
        shuffle = torch.Generator().manual_seed(derive_seed(config.seed, "shuffle", epoch))
        dropout = torch.Generator().manual_seed(derive_seed(config.seed, "dropout", epoch))
        tick = time.perf_counter()
        total = torch.zeros((), dtype=torch.float64)
        order = torch.randperm(n, generator=shuffle)
        if fused is not None:  # same batches, loss and update as the loop below, in one numba call
            total += fused.run(x_train, targets, order, config.batch_size)
        else:
            for start in range(0, n, config.batch_size):
                batch = order[start: start + config.batch_size]
                loss = F.mse_loss(model(x_train[batch], generator=dropout), targets[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * batch.numel()
        seconds = time.perf_counter() - tick
        train_loss = float(total) / n
        if not math.isfinite(train_loss):
            status = "diverged"
        record = EpochRecord(epoch, train_loss, accuracy(model, x_test, y_test), seconds)
        history.append(record)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, config, model, optimizer, history, status)
        if on_epoch is not None:
            on_epoch(record)

    return run_result(config, model, history, status, x_test, y_test, started)


def training_tensors(config: TrainConfig, dataset=None, data_dir=None):
    """``(x_train, y_train, x_test, y_test, n_classes)`` as torch tensors, ``limit_train`` applied.

    Loads ``config.dataset`` when ``dataset`` is None. Shared with population training so that
    both see exactly the same examples in the same order.
    """
    if dataset is None:
        from sparsetopo.data import load_dataset

        dataset = load_dataset(config.dataset, data_dir=data_dir)
    x_train = torch.as_tensor(dataset.x_train, dtype=torch.float32)
    y_train = torch.as_tensor(dataset.y_train, dtype=torch.int64)
    if config.limit_train is not None:
        x_train, y_train = x_train[: config.limit_train], y_train[: config.limit_train]
    x_test = torch.as_tensor(dataset.x_test, dtype=torch.float32)
    y_test = torch.as_tensor(dataset.y_test, dtype=torch.int64)
    return x_train, y_train, x_test, y_test, int(dataset.n_classes)


def run_result(config: TrainConfig, model: SparseMLP, history: list[EpochRecord], status: str,
               x_test: torch.Tensor, y_test: torch.Tensor, started: float) -> RunResult:
    """The RunResult of a finished run whose trained network is ``model`` (shared with population training)."""
    return RunResult(
        config=config,
        status=status,
        test_accuracy=history[-1].test_accuracy if history else accuracy(model, x_test, y_test),
        history=history,
        weight_stats=model.weight_stats(),
        parameters=model.parameter_count(),
        seconds=time.perf_counter() - started,
        layers=[{**layer.topology.provenance(), "backend": layer.backend} for layer in model.layers],
        model=model,
    )


def _save_checkpoint(path: Path, config, model, optimizer, history, status) -> None:
    state = {"config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "history": [asdict(h) for h in history], "status": status}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, config, model, optimizer) -> tuple[list[EpochRecord], str]:
    state = torch.load(path, weights_only=True)
    if state["config"] != config.to_dict():
        raise SparsetopoError(
            f"{path} was written by a different configuration; remove it or choose another --out directory"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return [EpochRecord(**h) for h in state["history"]], state["status"]
