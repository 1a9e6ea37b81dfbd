"""What a run compiles or loads before its first epoch, done before that epoch's clock starts.

The first epoch of a process used to carry the numba kernels' compilation (tens of seconds on
a first run) or their loading from numba's cache (tenths of a second later), and a sweep
stored that as the run's seconds per epoch. :func:`warm_up` is the one place a run readies
what its epochs will run, so that every epoch's time is the epoch's own by construction:

* the fused epoch: its kernel's specialisation for the run's arguments, loaded or compiled
  without running it (:func:`sparsetopo.kernels.cache.load_or_compile`);
* the autograd loop: one forward and backward pass on the first batch, gradients then cleared
  and no step taken, so the model, the optimizer and every random stream are as they were. It
  compiles or loads the sparse layers' kernels, and runs torch's own first-call set-up.

The population engine readies its kernel before each timed call the same way
(:class:`sparsetopo.train.fused_population._FusedPopulation`).
"""

from __future__ import annotations

import torch

from sparsetopo.train.recipe import batch_loss


def warm_up(config, model, fused, x_train: torch.Tensor, targets: torch.Tensor, y_train: torch.Tensor) -> None:
    """Ready the kernels of a run of ``config`` training ``model`` (by ``fused``, a
    :class:`~sparsetopo.train.fused.FusedEpoch`, when not None) on ``x_train``."""
    if fused is not None:
        fused.prepare(x_train, targets, config.batch_size)
        return
    rows = slice(0, config.batch_size)
    model.train()
    # a generator of its own: dropout draws nothing from the run's streams
    out = model(x_train[rows], generator=torch.Generator().manual_seed(0))
    batch_loss(config, out, targets[rows], y_train[rows]).backward()
    model.zero_grad(set_to_none=True)
