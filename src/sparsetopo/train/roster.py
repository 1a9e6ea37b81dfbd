"""The epoch bookkeeping both population engines share: which members still train, and what each epoch recorded.

A population's members train epoch by epoch until each one diverges, stops early or runs out of
epochs. :class:`Roster` holds that state (the active members, each member's history and status)
and writes every epoch's records the one way ``train()`` would write them, whichever engine
computed the epoch: :mod:`sparsetopo.train.fused_population` or :mod:`sparsetopo.train.stack`.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterator, Sequence

import torch

from sparsetopo.nn import SparseMLP
from sparsetopo.train.config import EpochRecord, RunResult, TrainConfig
from sparsetopo.train.loop import build_model, run_result
from sparsetopo.train.recipe import stop_early
from sparsetopo.train.seeds import epoch_generators, epoch_order

# Dropout numbers are drawn ahead for a chunk of batches at a time; this bounds the chunk.
DROPOUT_CHUNK_FLOATS = 1 << 22


def build_members(configs: Sequence[TrainConfig], n_features: int, n_classes: int) -> list[SparseMLP]:
    """Each member's network, exactly as :func:`sparsetopo.train.train` builds it (same topology
    and initial weights)."""
    return [build_model(config, n_features, n_classes) for config in configs]


class Roster:
    """The members of one population through its epochs.

    ``active`` lists the members (indices into ``configs``) still training, in the order of the
    engine's rows; ``histories`` and ``status`` are every member's. ``on_epoch`` is called as
    ``on_epoch(member, record)`` after each epoch of each member still training.
    """

    def __init__(self, configs: Sequence[TrainConfig], on_epoch: Callable[[int, EpochRecord], None] | None):
        self.configs = list(configs)
        self.on_epoch = on_epoch
        self.active = list(range(len(self.configs)))
        self.histories: list[list[EpochRecord]] = [[] for _ in self.configs]
        self.status = ["ok"] * len(self.configs)

    def epochs(self) -> Iterator[int]:
        """The epoch numbers, from 1, while any member still trains."""
        for epoch in range(1, self.configs[0].epochs + 1):
            if not self.active:
                return
            yield epoch

    def orders(self, n: int, epoch: int) -> torch.Tensor:
        """(active members, n): each active member's permutation of this epoch, from its own
        shuffling generator exactly as ``train()`` draws it."""
        return torch.stack([epoch_order(self.configs[i].seed, epoch, n) for i in self.active])

    def dropout_generators(self, epoch: int) -> list[torch.Generator]:
        """Each active member's dropout generator of this epoch, as ``train()`` seeds it."""
        return [epoch_generators(self.configs[i].seed, epoch).dropout for i in self.active]

    def close_epoch(self, epoch: int, n: int, totals, seconds, accuracies, val_accuracies) -> list[int]:
        """Record epoch ``epoch`` of every active member (row ``r`` of each argument is
        ``active[r]``'s): its summed loss over the ``n`` training examples, core-seconds, test
        and validation accuracy (None without a validation split). A member whose loss is not
        finite is marked "diverged"; one that stops early keeps status "ok". Returns the rows
        of the members that train on, and keeps only those active."""
        early_stop = self.configs[0].early_stop
        kept = []
        for row, member in enumerate(self.active):
            train_loss = float(totals[row]) / n
            val = None if val_accuracies[row] is None else float(val_accuracies[row])
            record = EpochRecord(epoch, train_loss, float(accuracies[row]), float(seconds[row]), val)
            self.histories[member].append(record)
            if not math.isfinite(train_loss):
                self.status[member] = "diverged"
            elif not stop_early([h.val_accuracy for h in self.histories[member]], early_stop):
                kept.append(row)   # an early-stopped member keeps its weights, status "ok"
            if self.on_epoch is not None:
                self.on_epoch(member, record)
        self.active = [self.active[row] for row in kept]
        return kept

    def results(self, models: Sequence[SparseMLP], x_test, y_test, started: float, cores: int,
                engine: str) -> list[RunResult]:
        """One RunResult per member; ``seconds`` is its epochs' core-seconds plus an equal share
        of the rest of the call's wall time since ``started`` on ``cores`` cores (building,
        evaluation: :mod:`sparsetopo.train.population`, "Timing")."""
        core_seconds = (time.perf_counter() - started) * cores
        epochs = [sum(h.seconds for h in history) for history in self.histories]
        shared = max(0.0, core_seconds - sum(epochs)) / len(self.configs)
        results = []
        for config, model, history, state, own in zip(self.configs, models, self.histories, self.status, epochs):
            result = run_result(config, model, history, state, x_test, y_test, started, engine)
            result.seconds = own + shared
            results.append(result)
        return results
