"""The per-epoch seed recipe: where each epoch's shuffle and dropout numbers come from.

A run's ``seed`` is the root of every random choice (:mod:`sparsetopo.seeding`): the topology
from ``derive_seed(seed, "topology")``, layer ``l``'s initial weights from
``rng(seed, "init", l)``, and, per epoch, the two torch generators below. Re-seeding per epoch
(rather than carrying one generator through the run) is what makes a run resumed from an epoch
checkpoint continue exactly as an uninterrupted one would, and lets the population engines
draw each member's numbers without replaying earlier epochs. :func:`sparsetopo.train.train`
and both population engines take their numbers from here and nowhere else.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from sparsetopo.seeding import derive_seed


class EpochGenerators(NamedTuple):
    shuffle: torch.Generator   # draws the epoch's permutation of the training examples
    dropout: torch.Generator   # draws the dropout numbers, batch by batch, layer by layer


def epoch_generators(seed: int, epoch: int) -> EpochGenerators:
    """Fresh generators for epoch ``epoch`` (1-based) of the run seeded ``seed``."""
    return EpochGenerators(torch.Generator().manual_seed(derive_seed(seed, "shuffle", epoch)),
                           torch.Generator().manual_seed(derive_seed(seed, "dropout", epoch)))


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits the ``n`` training examples (int64 permutation)."""
    return torch.randperm(n, generator=epoch_generators(seed, epoch).shuffle)
