"""Train one sparse MLP under the paper's protocol: ``train(TrainConfig(...)) -> RunResult``.

The paper (Section 4.1): MNIST, 784-H-10 with H in {100, 300, 500}, 50 epochs, batch 32, mean
squared error on one-hot targets, sigmoid on every neuron, Glorot normal initialisation, SGD
with learning rate 0.01 and Nesterov momentum 0.9, the adjacency imposed at every update.
Those are :class:`~sparsetopo.train.config.TrainConfig`'s defaults. Keras' Nesterov SGD and
torch's are the same update written two ways (velocity ``v`` there is ``-lr * buf`` here).

An epoch runs one of two ways, with the same batches, loss and update: the fused epoch
(:mod:`sparsetopo.train.fused`, numba) when every layer is sparse or a block layer, the
activation is sigmoid, there is no dropout and the recipe is the paper's MSE with Nesterov SGD
and the batch is at most 48 (:func:`sparsetopo.train.fused.fused_pays`); otherwise
the autograd loop below with the config's torch optimizer. Other losses, optimizers, the learning
rate schedule, the validation split and early stopping: :mod:`sparsetopo.train.recipe`.
The result names the one that ran (``RunResult.backend``: ``fused/sparse``,
``autograd/masked``, ...).

Every random choice (topology, initial weights, shuffling, dropout) derives from
``config.seed`` (:mod:`sparsetopo.train.seeds`); shuffling and dropout are re-seeded per
epoch, so a run resumed from its epoch checkpoint continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import functools
import io
import math
import pickle
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import SparseMLP
from sparsetopo.seeding import derive_seed
from sparsetopo.topology import build_stack
from sparsetopo.train.config import EpochRecord, RunResult, TrainConfig
from sparsetopo.train.divergence import divergence_reason
from sparsetopo.train.fused import FusedEpoch, fused_pays, weight_parameter
from sparsetopo.train.recipe import (batch_loss, epoch_lr, fused_applies, make_optimizer, output_layer, stop_early,
                                     validation_split)
from sparsetopo.train.seeds import epoch_generators
from sparsetopo.train.warmup import warm_up


def build_model(config: TrainConfig, n_features: int, n_classes: int) -> SparseMLP:
    """The network a config describes, its topologies built from ``config.seed``."""
    sizes = config.sizes(n_features, n_classes)
    degrees = config.layer_degrees(sizes)
    topologies = build_stack(sizes, config.construction, degrees, seed=derive_seed(config.seed, "topology"),
                             blocks=config.layer_blocks(sizes))
    return SparseMLP(topologies, activation=config.activation, dropout=config.dropout,
                     init=config.init, seed=config.seed, backend=config.backend, output=output_layer(config),
                     device=config.device, batch_size=config.batch_size)


def training_device(config: TrainConfig) -> torch.device:
    """The torch device ``config.device`` names, checked to exist on this machine."""
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SparsetopoError(f"device={config.device!r} but this torch sees no CUDA GPU "
                              "(torch.cuda.is_available() is False): use device='cpu'")
    return device


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
    clock: Callable[[], float] = time.perf_counter,
) -> RunResult:
    """Train ``config`` and return its RunResult.

    dataset : a loaded Dataset (from :func:`sparsetopo.data.load_dataset`); loaded from
        ``config.dataset`` / ``data_dir`` when None.
    checkpoint_dir : where ``checkpoint.pt`` is written after every epoch.
    resume : continue from ``checkpoint_dir``'s checkpoint if there is one; the final result
        equals an uninterrupted run's.
    on_epoch : called after each epoch (for progress bars; the library never prints).
    clock : what ``EpochRecord.seconds`` is read from: wall time by default;
        ``time.thread_time`` gives the calling thread's CPU time, which another job on the
        machine cannot inflate, when every thread count is 1 (all work runs on this thread).

    Examples
    --------
    The paper's recipe (MSE on sigmoid outputs, Nesterov SGD, batch 32) on the bundled 8x8
    digits, with a 64-32-10 network whose layers keep 8 and 5 outputs per input:

    >>> from sparsetopo.train import TrainConfig, train
    >>> config = TrainConfig(dataset="digits", hidden=(32,), degrees=(8, 5), construction="random_regular",
    ...                      epochs=20, lr=1.0, seed=0)
    >>> result = train(config)
    >>> result.status, len(result.history), result.parameters   # 64*8 + 32*5 connections, 42 biases
    ('ok', 20, 714)
    >>> result.test_accuracy > 0.8
    True
    """
    if config.architecture != "mlp":   # a cnn or lstm: its own model, the plain autograd loop
        from sparsetopo.train.architectures import plain_split, train_architecture

        training_device(config)
        if resume:
            raise SparsetopoError(f"a {config.architecture} run keeps no epoch checkpoint to resume from: train it "
                                  "again without resume (a sweep resumes run by run)")
        return train_architecture(config, split_tensors(plain_split(config), dataset, data_dir), on_epoch, clock)
    started = time.perf_counter()
    device = training_device(config)
    x_train, y_train, x_val, y_val, x_test, y_test, n_classes = split_tensors(config, dataset, data_dir)
    x_train, y_train, x_val, y_val, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_val, y_val,
                                                                              x_test, y_test))
    targets = F.one_hot(y_train, n_classes).float()

    model = build_model(config, x_train.shape[1], n_classes).to(device)
    fusable = fused_applies(config) and FusedEpoch.supports(model) and fused_pays(config.batch_size)
    checkpoint = Path(checkpoint_dir) / "checkpoint.pt" if checkpoint_dir is not None else None
    # The fused epoch updates the weights itself: a torch optimizer then only holds its momentum
    # buffers for a checkpoint, and is not made without one (making one imports torch's compiler,
    # about a second of a short run's start).
    optimizer = make_optimizer(config, model.parameters()) if checkpoint is not None or not fusable else None
    history: list[EpochRecord] = []
    status = "ok"
    if resume and checkpoint is not None and checkpoint.exists():
        history, status = _load_checkpoint(checkpoint, config, model, optimizer)

    fused = None
    if fusable:  # the optimizer's own buffers where there is one, so checkpoints hold them either way
        fused = FusedEpoch(model, config.lr, config.momentum, momentum_buffers(optimizer, model))
    # the fused engine evaluates on the kernels it trains with (no second set to compile)
    evaluate = fused.accuracy if fused is not None else functools.partial(accuracy, model)
    if status == "ok" and len(history) < config.epochs:  # compiling and loading, before any clock
        warm_up(config, model, fused, x_train, targets, y_train)
    n = x_train.shape[0]
    for epoch in range(len(history) + 1, config.epochs + 1):
        if status != "ok" or stop_early([h.val_accuracy for h in history], config.early_stop):
            break
        lr = epoch_lr(config, epoch)   # set every epoch, so a resumed run continues the schedule
        for group in optimizer.param_groups if optimizer is not None else ():
            group["lr"] = lr
        if fused is not None:
            fused.lr = lr
        model.train()
        generators = epoch_generators(config.seed, epoch)
        tick = clock()
        total = torch.zeros((), dtype=torch.float64, device=device)
        order = torch.randperm(n, generator=generators.shuffle)  # on the CPU generator whatever the device
        if fused is not None:  # same batches, loss and update as the loop below, in one numba call
            total += fused.run(x_train, targets, order, config.batch_size)
        else:
            order = order.to(device)
            for start in range(0, n, config.batch_size):
                batch = order[start: start + config.batch_size]
                loss = batch_loss(config, model(x_train[batch], generator=generators.dropout), targets[batch],
                                  y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.detach() * batch.numel()
        seconds = clock() - tick
        train_loss = float(total) / n
        if not math.isfinite(train_loss):
            status = "diverged"
        val = evaluate(x_val, y_val) if len(y_val) else None
        record = EpochRecord(epoch, train_loss, evaluate(x_test, y_test), seconds, val)
        history.append(record)
        if checkpoint is not None:
            _save_checkpoint(checkpoint, config, model, optimizer, history, status)
        if on_epoch is not None:
            on_epoch(record)

    return run_result(config, model, history, status, x_test, y_test, started, fused=fused)


def momentum_buffers(optimizer: torch.optim.SGD | None, model: SparseMLP) -> list[torch.Tensor]:
    """Each parameter's momentum buffer (weights then bias, layer by layer), created as zeros in
    the optimizer's state when missing: zeros give ``buf = g`` on the first step, as torch's first
    step does, and living there they are checkpointed and resumed like the autograd path's.
    Without an optimizer (a fused run that saves no checkpoint): fresh zeros."""
    buffers = []
    for layer in model.layers:
        for p in (weight_parameter(layer), layer.bias):
            state = optimizer.state[p] if optimizer is not None else {}
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            buffers.append(state["momentum_buffer"])
    return buffers


def training_tensors(config: TrainConfig, dataset=None, data_dir=None):
    """``(x_train, y_train, x_test, y_test, n_classes)`` as torch tensors, ``limit_train`` applied
    and the validation examples (``validation_fraction``) left out of the training ones.

    Loads ``config.dataset`` when ``dataset`` is None. Shared with population training so that
    both see exactly the same examples in the same order.
    """
    x_train, y_train, _, _, x_test, y_test, n_classes = split_tensors(config, dataset, data_dir)
    return x_train, y_train, x_test, y_test, n_classes


def split_tensors(config: TrainConfig, dataset=None, data_dir=None):
    """``(x_train, y_train, x_val, y_val, x_test, y_test, n_classes)`` as torch tensors.

    The first ``limit_train`` training examples, of which :func:`~sparsetopo.train.recipe.validation_split`
    holds ``validation_fraction`` out for validation (empty ``x_val`` when 0); the test set is
    never touched. With ``permute_inputs`` set, every set's features are permuted by
    :func:`sparsetopo.data.input_permutation` (the same columns for train, validation and test).
    """
    if dataset is None:
        from sparsetopo.data import load_dataset

        dataset = load_dataset(config.dataset, data_dir=data_dir)
    x_train = _shared_tensor(dataset.x_train, torch.float32)
    y_train = _shared_tensor(dataset.y_train, torch.int64)
    if config.limit_train is not None:
        x_train, y_train = x_train[: config.limit_train], y_train[: config.limit_train]
    x_val, y_val = x_train[:0], y_train[:0]
    if config.validation_fraction > 0:
        keep, held = (torch.from_numpy(i) for i in validation_split(x_train.shape[0], config.validation_fraction))
        x_val, y_val = x_train[held], y_train[held]
        x_train, y_train = x_train[keep], y_train[keep]
    x_test = _shared_tensor(dataset.x_test, torch.float32)
    y_test = _shared_tensor(dataset.y_test, torch.int64)
    if config.permute_inputs is not None:  # one place for every engine: the same columns for all three sets
        from sparsetopo.data import permute_features

        x_train, x_val, x_test = (permute_features(x, config.permute_inputs) for x in (x_train, x_val, x_test))
    return x_train, y_train, x_val, y_val, x_test, y_test, int(dataset.n_classes)


def _shared_tensor(array, dtype: torch.dtype) -> torch.Tensor:
    """``array`` as a tensor, sharing its memory where the dtype allows. A sweep task's arrays
    come read-only from Ray's object store, shared by every task of the node; training never
    writes to them (batches and permutations are copies), so torch's warning about a
    non-writable array is silenced rather than the data copied once per task."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.as_tensor(array, dtype=dtype)


def run_result(config: TrainConfig, model: SparseMLP, history: list[EpochRecord], status: str,
               x_test: torch.Tensor, y_test: torch.Tensor, started: float, engine: str | None = None,
               fused: FusedEpoch | None = None) -> RunResult:
    """The RunResult of a finished run whose trained network is ``model`` (shared with population training).

    ``engine``: what computed every layer, as ``engine/kernel`` (``"fused-population/sparse"``,
    ...); None means this process's loop, each layer named by its own backend: ``"fused/sparse"``
    or ``"fused/block"`` when ``fused`` (the fused epoch that trained ``model``, whose kernels
    then evaluate it) is given, else ``"autograd/masked"``, ``"autograd/block"``, ...
    """
    reason = divergence_reason(history, model, x_test, fused.hidden_outputs if fused is not None else None)
    if history:
        test_accuracy = history[-1].test_accuracy
    else:
        test_accuracy = fused.accuracy(x_test, y_test) if fused is not None else accuracy(model, x_test, y_test)
    return RunResult(
        config=config,
        status="diverged" if reason else status,
        reason=reason,
        test_accuracy=test_accuracy,
        history=history,
        weight_stats=model.weight_stats(),
        parameters=model.parameter_count(),
        seconds=time.perf_counter() - started,
        layers=[{**layer.topology.provenance(),
                 "backend": engine or f"{'fused' if fused is not None else 'autograd'}/{layer.backend}"}
                for layer in model.layers],
        model=model,
    )


#: How a checkpoint holds the masked layers' weights: nn.Linear's (out, in).
CHECKPOINT_LAYOUT = "out_in"


def _save_checkpoint(path: Path, config, model, optimizer, history, status) -> None:
    state = {"config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "history": [asdict(h) for h in history], "status": status, "layout": CHECKPOINT_LAYOUT}
    buffer = io.BytesIO()  # torch's own file writer reports a full disk as "[enforce fail at ...]"
    torch.save(state, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _load_checkpoint(path: Path, config, model, optimizer) -> tuple[list[EpochRecord], str]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")  # load_state_dict copies to the model's device
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise SparsetopoError(f"{path} is damaged or not a sparsetopo checkpoint ({type(exc).__name__}): "
                              "remove it, or use --overwrite instead of --resume to start the run again") from None
    if not isinstance(state, dict) or not {"config", "model", "optimizer", "history", "status"} <= set(state):
        raise SparsetopoError(f"{path} is not a sparsetopo checkpoint (its fields are missing): remove it, or use "
                              "--overwrite instead of --resume to start the run again")
    # a checkpoint written before a field existed holds that field's default
    if {**TrainConfig().to_dict(), **state["config"]} != config.to_dict():
        raise SparsetopoError(
            f"{path} was written by a different configuration; remove it or choose another --out directory"
        )
    if state.get("layout") != CHECKPOINT_LAYOUT:
        _from_in_out(state, model)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return [EpochRecord(**h) for h in state["history"]], state["status"]


def _from_in_out(state: dict, model: SparseMLP) -> None:
    """Turn a checkpoint of a sparsetopo whose masked layers held their weight ``(in, out)``
    (one without ``layout``) into today's ``(out, in)``: each such weight and its optimizer
    state (momentum, Adam's moments) is transposed. Sparse layers stored ``values``, read as
    they are."""
    names = [name for name, _ in model.named_parameters()]   # the optimizer's parameter numbers
    for i, layer in enumerate(model.layers):
        key = f"layers.{i}.weight"
        if layer.backend != "masked" or key not in state["model"]:
            continue
        state["model"][key] = state["model"][key].t().contiguous()
        slot = state["optimizer"]["state"].get(names.index(key), {})
        for name, value in slot.items():
            if isinstance(value, torch.Tensor) and value.dim() == 2:
                slot[name] = value.t().contiguous()
