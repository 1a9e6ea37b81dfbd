"""Training: what a run is, how one network trains, and how a population trains together.

One job per module:

* :mod:`.config`: :class:`TrainConfig` (the paper's protocol as defaults; validates itself),
  :class:`EpochRecord`, :class:`RunResult`;
* :mod:`.seeds`: the per-epoch seed recipe (shuffle and dropout generators);
* :mod:`.loop`: :func:`train`, one network, with checkpoints and resume;
* :mod:`.recipe`: training options beyond the paper's (loss, optimizer, learning-rate
  schedule, validation split, early stopping);
* :mod:`.fused`: the fused epoch :func:`train` uses when every layer is sparse;
* :mod:`.population`: :func:`train_population`, many networks of one shape at once, on one
  of two engines: :mod:`.fused_population` (numba, the paper's recipe) or :mod:`.stack`
  (stacked torch tensors, any recipe), which share their epoch bookkeeping (:mod:`.roster`).

The compiled training engines of the fused paths live in :mod:`sparsetopo.engines`, on the
layer maths of :mod:`sparsetopo.kernels`; the networks are
:mod:`sparsetopo.nn`'s modules, which know nothing of optimizers or epochs.
"""

from sparsetopo.train.config import EpochRecord, RunResult, TrainConfig
from sparsetopo.train.loop import accuracy, build_model, train, training_tensors
from sparsetopo.train.population import (ENGINES, MEMBER_FIELDS, check_population, members_per_stack,
                                         population_key, train_population)
from sparsetopo.train.seeds import epoch_generators, epoch_order

__all__ = ["ENGINES", "EpochRecord", "MEMBER_FIELDS", "RunResult", "TrainConfig", "accuracy", "build_model",
           "check_population", "epoch_generators", "epoch_order", "members_per_stack", "population_key", "train",
           "train_population", "training_tensors"]
