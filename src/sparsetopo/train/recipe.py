"""Training options beyond the paper's: loss, optimizer, learning-rate schedule, validation split, early stop.

The paper trains with one recipe (Section 4.1): mean squared error on sigmoid outputs, SGD
with Nesterov momentum, a constant learning rate, every training image used for training.
Those are :class:`~sparsetopo.train.config.TrainConfig`'s defaults. The fields below let a run
use another recipe, so that one can ask whether a verdict about topologies depends on how the
networks were trained:

* ``loss``: ``"mse"`` (the paper's, on the activation of the output layer) or
  ``"cross_entropy"`` (a softmax output: the output layer computes logits, no activation, and
  the loss is ``torch.nn.functional.cross_entropy``, i.e. Keras' ``categorical_crossentropy``
  on a softmax layer, averaged over the batch);
* ``optimizer``: ``"sgd_nesterov"`` (the paper's; ``momentum`` 0 gives plain SGD) or
  ``"adam"`` (``torch.optim.Adam`` with betas (0.9, 0.999), eps 1e-8, no weight decay; the
  config's ``momentum`` is not used);
* ``lr_schedule``: ``"constant"`` (the paper's) or ``"cosine"``: epoch ``e`` (1-based) of
  ``E`` uses ``lr * (1 + cos(pi * (e - 1) / E)) / 2``, from ``lr`` down towards 0, set once
  per epoch (so a resumed run continues with the same rates);
* ``validation_fraction``: the fraction of the training examples (after ``limit_train``) held
  out for validation, never trained on; 0 (the paper's) keeps them all. The test set is never
  used for it;
* ``early_stop``: patience in epochs, 0 (the paper's) for none. With it, a run stops after
  the epoch in which its validation accuracy has not improved on its best for that many
  epochs; the network it returns is the one at that epoch (Keras' ``EarlyStopping`` without
  restoring the best weights). It needs ``validation_fraction > 0``.

Masked weights stay exactly 0 under every optimizer: their gradient is exactly 0 (weight
times mask in the forward pass, or no weight at all on the sparse backend); SGD's buffers and
Adam's moment estimates of such a weight stay 0, and Adam's step ``m / (sqrt(v) + eps)`` is
then exactly 0 too.

The validation examples are the same for every run of a data set, whatever its seed:
a permutation drawn from :func:`sparsetopo.seeding.rng` with the fixed root
:data:`VALIDATION_ROOT` and the number of examples. Runs that differ only in seed or topology
therefore see the same validation and training examples, as they see the same test set, and a
population of such runs shares one training array.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from sparsetopo.seeding import rng

__all__ = ["ADAM_BETAS", "ADAM_EPS", "LOSSES", "LR_SCHEDULES", "OPTIMIZERS", "VALIDATION_ROOT", "batch_loss",
           "epoch_lr", "fused_applies", "make_optimizer", "output_layer", "stop_early",
           "validation_split"]

LOSSES = ("mse", "cross_entropy")
OPTIMIZERS = ("sgd_nesterov", "adam")
LR_SCHEDULES = ("constant", "cosine")
ADAM_BETAS = (0.9, 0.999)   # torch's and Keras' defaults
ADAM_EPS = 1e-8             # torch's default (Keras uses 1e-7)
#: Root seed of the validation split (the split does not depend on a run's seed: module docstring).
VALIDATION_ROOT = 0


def output_layer(config) -> str:
    """What the output layer computes: ``"activation"`` (the paper: the hidden activation on
    the outputs too) or ``"linear"`` (logits, for the softmax inside cross-entropy)."""
    return "linear" if config.loss == "cross_entropy" else "activation"


def fused_applies(config) -> bool:
    """Whether the fused numba engines (:mod:`sparsetopo.train.fused`, the fused population)
    implement ``config``'s recipe: they compute MSE on sigmoid outputs and the Nesterov SGD
    update only (the fused population also needs ordinary layers:
    :func:`sparsetopo.train.population.trains_one_by_one`).
    The learning-rate schedule, the validation split and early stopping happen between epochs
    and work with every engine."""
    return config.loss == "mse" and config.optimizer == "sgd_nesterov" and config.activation == "sigmoid"


def make_optimizer(config, params):
    """The torch optimizer of ``config`` over ``params``, at the first epoch's learning rate."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=epoch_lr(config, 1), betas=ADAM_BETAS, eps=ADAM_EPS)
    return torch.optim.SGD(params, lr=epoch_lr(config, 1), momentum=config.momentum, nesterov=config.momentum > 0)


def batch_loss(config, out: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean loss of one batch: MSE of the outputs against the one-hot ``targets`` (averaged
    over batch and outputs, Keras' ``mse``), or cross-entropy of the logits against ``labels``
    (averaged over the batch)."""
    if config.loss == "cross_entropy":
        return F.cross_entropy(out, labels)
    return F.mse_loss(out, targets)


def epoch_lr(config, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (1-based) under ``config.lr_schedule``."""
    if config.lr_schedule == "cosine" and config.epochs > 0:
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.epochs))
    return config.lr


def validation_split(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(train_index, validation_index)`` into ``n`` training examples, each sorted.

    ``round(fraction * n)`` examples (at least one when ``fraction > 0``, at most ``n - 1``)
    are held out, chosen by a permutation seeded with :data:`VALIDATION_ROOT` and ``n`` only.
    """
    if fraction <= 0 or n < 2:
        return np.arange(n), np.arange(0)
    n_val = min(n - 1, max(1, round(fraction * n)))
    order = rng(VALIDATION_ROOT, "validation", n).permutation(n)
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def stop_early(val_accuracies: list[float], patience: int) -> bool:
    """Whether a run whose validation accuracies so far are ``val_accuracies`` stops now: its
    best (the first epoch reaching it) lies ``patience`` or more epochs back. Never with
    ``patience`` 0."""
    if patience <= 0 or not val_accuracies:
        return False
    best = int(np.argmax(np.asarray(val_accuracies, dtype=float)))
    return len(val_accuracies) - 1 - best >= patience
