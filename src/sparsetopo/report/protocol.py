"""What the report says about how the runs were made: protocol, departures, grid, machine.

The paper's protocol is :class:`sparsetopo.train.TrainConfig`'s defaults (Section 4.1: MNIST,
50 epochs, batch 32, MSE, sigmoid, Glorot normal, SGD lr 0.01 with Nesterov momentum 0.9).
Every run's protocol fields are compared with those defaults; each field where some runs
differ is a departure and is listed with its values and run counts. The paper's own variants
(dropout 0.2/0.5, hidden sizes 100/300/500 and 500,300) are not departures.

A departure is what a run *asked for*: ``backend`` compares the config's requested backend
(``auto`` by default), not the engine that ``auto`` picked. What actually computed each run is
information, listed apart in the grid summary ("backends that ran"). Values are listed one per
``; ``-separated item, since some values themselves hold commas ("500,300").
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import sys
from importlib import metadata

import pandas as pd

# Fields compared with TrainConfig's defaults, and what a difference means.
FIELDS = {
    "dataset": "data set",
    "epochs": "training epochs",
    "batch_size": "examples per SGD step",
    "lr": "SGD learning rate",
    "momentum": "Nesterov momentum",
    "activation": "activation on every neuron",
    "init": "weight initialisation",
    "limit_train": "training examples used (None: all)",
    "loss": "loss (mse on the output activation, or cross_entropy on a softmax output)",
    "optimizer": "optimizer (sgd_nesterov or adam)",
    "lr_schedule": "learning-rate schedule",
    "validation_fraction": "training examples held out for validation",
    "early_stop": "early-stopping patience in epochs (0: none)",
    "backend": "compute backend the run requested (changes speed, not the numbers beyond float error)",
    "device": "where the networks computed (changes speed, not the numbers beyond float error)",
}
# Fields whose requested value the store keeps in another column than the field's name: the
# store's "backend" is what computed the run, "requested_backend" what its config asked for.
REQUESTED_COLUMN = {"backend": "requested_backend"}
SEPARATOR = "; "   # between listed values: never inside one (hidden sizes and backends hold commas)
PAPER_HIDDEN = {"100", "300", "500", "500,300"}
PAPER_DROPOUT = {(0.0, 0.0), (0.2, 0.5)}


def _paper_defaults() -> dict:
    from sparsetopo.train import TrainConfig

    return TrainConfig().to_dict()


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and pd.isna(a)):
        return b is None
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _counts(values: pd.Series) -> str:
    counts = values.astype(str).value_counts()
    return SEPARATOR.join(f"{v} ({n} runs)" for v, n in counts.items())


def departures(runs: pd.DataFrame) -> list[dict]:
    """One row per protocol field: the paper's value, the store's values, runs that differ."""
    paper = _paper_defaults()
    rows = []
    for name, meaning in FIELDS.items():
        column = REQUESTED_COLUMN.get(name, name)
        if column not in runs or runs[column].isna().all() and paper.get(name) is not None:
            continue
        expected = paper.get(name)
        differ = ~runs[column].apply(lambda v, e=expected: _same(v, e))
        rows.append({"field": name, "meaning": meaning, "paper": str(expected),
                     "store": _counts(runs[column].where(runs[column].notna(), "None")),
                     "departing_runs": int(differ.sum())})
    hidden = runs["hidden"].astype(str) if "hidden" in runs else pd.Series(dtype=str)
    rows.append({"field": "hidden", "meaning": "hidden layer sizes", "paper": "100; 300; 500 or 500,300",
                 "store": _counts(hidden), "departing_runs": int((~hidden.isin(PAPER_HIDDEN)).sum())})
    pairs = list(zip(runs["dropout_in"].astype(float), runs["dropout_hidden"].astype(float)))
    rows.append({"field": "dropout", "meaning": "dropout on input / hidden layers",
                 "paper": "0/0, or the variant 0.2/0.5",
                 "store": _counts(pd.Series([f"{a:g}/{b:g}" for a, b in pairs], dtype=str)),
                 "departing_runs": sum(p not in PAPER_DROPOUT for p in pairs)})
    return rows


def sweep_meta(db_path) -> dict:
    """The sweep's own description from the store's ``meta`` table ({} when absent)."""
    out = {}
    try:
        from sparsetopo.sweep.store import connect_readonly

        con = connect_readonly(db_path)
        try:
            for key, value in con.execute("SELECT key, value FROM meta"):
                try:
                    out[key] = json.loads(value)
                except (TypeError, ValueError):
                    out[key] = value
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    return out


def grid_summary(df: pd.DataFrame) -> list[tuple[str, str]]:
    """Which values the grid holds, as (axis, values) pairs."""
    def values(col):
        if col not in df:
            return "-"
        v = df[col].dropna()
        uniq = sorted(v.unique(), key=lambda x: (str(type(x)), x))
        text = SEPARATOR.join(f"{u:g}" if isinstance(u, float) else str(u) for u in uniq[:30])
        return text + (f"{SEPARATOR}... ({len(uniq)} values)" if len(uniq) > 30 else "")

    def counted(col, shown=lambda values: values):
        return _counts(shown(df[col].dropna())) if col in df and df[col].notna().any() else "-"
    out = [("runs", f"{len(df)} ({_counts(df['status'])})")]
    for col, name in (("dataset", "data sets"), ("hidden", "hidden sizes"), ("construction", "constructions"),
                      ("k_in", "input-layer degrees"), ("k_out", "output-layer degrees"), ("seed", "seeds")):
        out.append((name, values(col)))
    # requested: the protocol; ran: what auto picked per run (engine/kernel), information only
    out.append(("backends requested", counted("requested_backend")))
    # a run's engines are stored one per layer, comma-joined: shown joined by "+" so that no
    # listed value holds the comma of a list
    out.append(("backends that ran (information: what computed each run, layer by layer)",
                counted("backend", lambda values: values.astype(str).str.replace(",", " + "))))
    return out


def environment() -> list[tuple[str, str]]:
    """Software versions and the machine the report was made on."""
    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"
    rows = [("python", sys.version.split()[0])]
    rows += [(name, version(name)) for name in ("sparsetopo", "numpy", "scipy", "pandas", "torch", "matplotlib")]
    rows += [("platform", platform.platform()), ("processor", platform.machine()),
             ("cpu count", str(os.cpu_count()))]
    return rows
