"""Training time per epoch against density, measured one network at a time for each backend.

The paper's conclusion claims "shorter training time" for sparse networks (Section 5) but
reports no timing. A sweep's own seconds cannot answer it: runs trained together in a population
share one clock, and workers compete for the cores. So after a sweep we time single epochs of
the sweep's own protocol (its most common one-hidden-layer configuration without dropout),
one network at a time in this process on one core (one torch and one numba thread, as a sweep
worker trains; epochs in CPU seconds of that thread), for each backend and a range of input-layer densities
plus fully connected, several repeats each, interleaved (:func:`timing_configs`), and store them in the sweep's SQLite file (table
``timings``) beside the runs. The report's timing figure and claim C8 read them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from sparsetopo.errors import SparsetopoError
from sparsetopo.train import MEMBER_FIELDS, TrainConfig, train

TABLE = "timings"
DENSITIES = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # input-layer densities; fully connected is added
BACKENDS = ("masked", "sparse")
REPEATS = 3
#: Columns of the ``timings`` table: those of the runs table (:func:`.worker.result_row`) that
#: the report's timing figure and C8 read.
COLUMNS = ("dataset", "hidden", "hidden1", "n_hidden_layers", "construction", "k_in", "k_out", "density_in",
           "density", "dropout_in", "dropout_hidden", "batch_size", "seed", "backend", "seconds_per_epoch",
           "status", "trained_with")


def base_config(runs: pd.DataFrame) -> TrainConfig:
    """The sweep's most common one-hidden-layer protocol without dropout, as one 1-epoch run."""
    configs = [json.loads(text) for text in runs["config"].dropna()]
    single = [c for c in configs if len(c["hidden"]) == 1 and not any(c["dropout"])
              and c.get("architecture", "mlp") == "mlp"]   # the backends' timings are the MLP's
    if not single:
        raise SparsetopoError("the store holds no one-hidden-layer MLP run without dropout to time")
    keys = Counter(json.dumps({k: v for k, v in c.items() if k not in MEMBER_FIELDS}, sort_keys=True)
                   for c in single)
    common = json.loads(keys.most_common(1)[0][0])
    return TrainConfig.from_dict({**common, "construction": "regular_rotating", "degrees": None, "seed": 0,
                                  "init": "glorot", "epochs": 1})


def timing_configs(base: TrainConfig, densities: Sequence[float] = DENSITIES,
                   backends: Sequence[str] = BACKENDS, repeats: int = REPEATS) -> list[TrainConfig]:
    """One-epoch configs: every backend x (each input density, then fully connected) x repeats,
    interleaved: each repeat is one round over every cell, so load that comes and goes while
    they run (another job on the machine) falls on sparse and fully connected cells alike
    instead of on whichever block happened to run then."""
    hidden = base.hidden[0]
    degrees = sorted({max(1, round(d * hidden)) for d in densities} - {hidden})
    layers = [("regular_rotating", (k, None)) for k in degrees] + [("fully_connected", None)]
    return [replace(base, backend=b, construction=c, degrees=d, seed=r)
            for r in range(repeats) for c, d in layers for b in backends]


def measure_epoch_times(db, densities: Sequence[float] = DENSITIES, backends: Sequence[str] = BACKENDS,
                        repeats: int = REPEATS, data_dir=None,
                        on_run: Callable[[int, int], None] | None = None) -> pd.DataFrame:
    """Time one epoch per (backend, density, repeat) of the store's protocol; store and return rows."""
    from sparsetopo.data import load_dataset
    from sparsetopo.sweep.store import load_results
    from sparsetopo.sweep.worker import result_row

    base = base_config(load_results(db))
    dataset = load_dataset(base.dataset, data_dir=data_dir)
    configs = timing_configs(base, densities, backends, repeats)
    rows = []
    with _one_core():  # train() readies its kernels before the clock (sparsetopo.train.warmup)
        for i, config in enumerate(configs):
            result = train(config, dataset=dataset, clock=time.thread_time)   # CPU seconds: see _one_core
            row = result_row(result, "timing", measures=False)  # its backend: what ran, e.g. "fused/sparse"
            rows.append({name: row[name] for name in COLUMNS})
            if on_run is not None:
                on_run(i + 1, len(configs))
    frame = pd.DataFrame(rows)
    with sqlite3.connect(db, timeout=30) as con:
        frame.to_sql(TABLE, con, index=False, if_exists="replace")
    return frame


@contextmanager
def _one_core():
    """One torch and one numba thread while timing, restored after.

    On every core a large layer runs parallel kernels and a small one serial code; when another
    job takes a core, the parallel ones wait on it and the small ones do not, so the ratio swung
    with the load (a quick preset gave C8 = 0.12 under one busy process, 0.48 idle). On one
    core all work runs on the calling thread, so its CPU time (``time.thread_time``) is what
    each epoch is read from: a job that takes turns on the core then adds nothing, where wall
    time charged it to the long epochs more than to the short ones (two busy processes gave
    0.27 against 0.40 idle).
    """
    import torch

    from sparsetopo.kernels.threads import member_threads

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with member_threads(1):   # numba's share, restored after, and BLAS on this thread
            yield
    finally:
        torch.set_num_threads(previous)


def load_timings(db) -> pd.DataFrame:
    """The store's ``timings`` table (empty when it was never measured)."""
    if not Path(db).is_file():
        return pd.DataFrame()
    with sqlite3.connect(db, timeout=30) as con:
        exists = con.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (TABLE,)).fetchone()
        return pd.read_sql_query(f"SELECT * FROM {TABLE}", con) if exists else pd.DataFrame()
