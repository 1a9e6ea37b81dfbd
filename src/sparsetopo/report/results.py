"""The results table the report reads: loading a store, filling derived columns, choosing slices.

One row per training run. The sweep store's columns (see :mod:`sparsetopo.sweep`) are read as
they are; columns a store lacks but can be derived (``hidden1`` from ``hidden``, ``k_in`` from
``degrees``, ``w0_max`` from ``weight_stats`` JSON, ...) are filled here, so that figures and
claims never need to know which version of the store wrote the rows.

The paper compares networks trained under one protocol. A store may hold several (other
learning rates, epochs, initialisations); :func:`analysis_slice` keeps the protocol with the
most runs for the accuracy analyses and says what it left out.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sparsetopo.errors import SparsetopoError

# Constructions named by the paper's figures, in the order their legends use; then those beyond the paper.
CONSTRUCTION_ORDER = (
    "regular_rotating",
    "fibonacci_rotating",
    "long_short_rotating",
    "random_rotating",
    "random_regular",
    "random_edge",
    "fully_connected",
    "butterfly",
)
LABELS = {
    "regular_rotating": "Regular",
    "fibonacci_rotating": "Fibonacci",
    "long_short_rotating": "Long-short",
    "random_rotating": "Random rotating",
    "random_regular": "Random regular (expander)",
    "random_edge": "Random edge",
    "fully_connected": "Fully connected",
    "butterfly": "Flat butterfly",
}
# Protocol fields that must agree for two runs to be compared (the grid varies the others).
PROTOCOL_FIELDS = ("dataset", "epochs", "batch_size", "lr", "momentum", "init", "activation", "limit_train",
                   "loss", "optimizer", "lr_schedule", "validation_fraction", "early_stop")
NUMERIC = ("hidden1", "n_hidden_layers", "k_in", "k_out", "density_in", "density", "dropout_in",
           "dropout_hidden", "epochs", "batch_size", "lr", "momentum", "seed", "test_accuracy",
           "train_loss", "parameters", "seconds", "seconds_per_epoch", "alg_conn_in",
           "spectral_gap_in", "alg_conn_net")
FULL_DENSITY = 1.0 - 1e-9


def label(construction: str) -> str:
    return LABELS.get(construction, str(construction))


def load_table(db_path) -> pd.DataFrame:
    """Read a results store into a DataFrame (one row per run), with derived columns filled.

    :func:`sparsetopo.sweep.load_results` checks that ``db_path`` is a sweep store (naming it in
    a SparsetopoError otherwise) and reads it read-only.
    """
    from sparsetopo.sweep import load_results

    try:
        frame = load_results(db_path)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError) as exc:  # a store damaged past its tables
        first = str(exc).splitlines()[0]
        raise SparsetopoError(f"{str(db_path)!r} is not a readable sparsetopo results store ({first}); give --db "
                              f"the .sqlite file a sweep wrote") from None
    return normalise(frame)


def _ints(text) -> list[int | None]:
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    if isinstance(text, (list, tuple)):
        return [None if v is None else int(v) for v in text]
    out: list[int | None] = []
    for token in str(text).strip("[]() ").split(","):
        token = token.strip().strip("'\"")
        if not token:
            continue
        out.append(None if token.lower() in ("full", "all", "none", "null") else int(float(token)))
    return out


def _json(text):
    if isinstance(text, (list, dict)):
        return text
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with every column the report uses present (NaN where it cannot be derived)."""
    df = frame.copy().reset_index(drop=True)
    n = len(df)
    if "status" not in df:
        df["status"] = "ok"
    if "run_id" not in df:
        df["run_id"] = [f"row{i}" for i in range(n)]
    hidden = [_ints(h) for h in df.get("hidden", pd.Series([None] * n))]
    if "hidden1" not in df:
        df["hidden1"] = [h[0] if h else np.nan for h in hidden]
    if "n_hidden_layers" not in df:
        df["n_hidden_layers"] = [len(h) if h else np.nan for h in hidden]
    degrees = [_ints(d) for d in df.get("degrees", pd.Series([None] * n))]
    for col, pick in (("k_in", 0), ("k_out", -1)):
        if col not in df:
            values = []
            for h, d in zip(hidden, degrees):
                k = d[pick] if d else None
                if k is None and pick == 0 and h:
                    k = h[0]
                values.append(np.nan if k is None else k)
            df[col] = values
    for col in NUMERIC:
        if col not in df:
            df[col] = np.nan
        df[col] = pd.to_numeric(df[col], errors="coerce")
    if df["density_in"].isna().any():
        df["density_in"] = df["density_in"].fillna(df["k_in"] / df["hidden1"])
    if "construction" not in df:
        df["construction"] = "unknown"
    fc = df["construction"].eq("fully_connected")
    df.loc[fc & df["density"].isna(), "density"] = 1.0
    df.loc[fc & df["density_in"].isna(), "density_in"] = 1.0
    df["dropout_in"] = df["dropout_in"].fillna(0.0)
    df["dropout_hidden"] = df["dropout_hidden"].fillna(0.0)
    spe = df["seconds_per_epoch"]
    df["seconds_per_epoch"] = spe.fillna(df["seconds"] / df["epochs"].where(df["epochs"] > 0))
    for col in ("backend", "init", "dataset", "activation"):
        if col not in df:
            df[col] = None
    # stores written before "backend" named the engine kept the requested backend there
    requested = df["requested_backend"] if "requested_backend" in df else pd.Series(None, index=df.index, dtype=object)
    df["requested_backend"] = requested.where(requested.notna(), df["backend"])
    _fill_weight_columns(df)
    df["is_full"] = (df["density"] >= FULL_DENSITY) | fc
    df["has_dropout"] = (df["dropout_in"] > 0) | (df["dropout_hidden"] > 0)
    return df


def _fill_weight_columns(df: pd.DataFrame) -> None:
    stats = ("max", "min", "mean", "std")
    parsed = [_json(w) for w in df["weight_stats"]] if "weight_stats" in df else [None] * len(df)
    for prefix, pick in (("w0", 0), ("wlast", -1)):
        for s in stats:
            col = f"{prefix}_{s}"
            derived = [float(w[pick][s]) if isinstance(w, list) and w and s in w[pick] else np.nan
                       for w in parsed]
            if col not in df:
                df[col] = derived
            else:
                df[col] = pd.to_numeric(df[col], errors="coerce").fillna(pd.Series(derived, index=df.index))


@dataclass
class Slice:
    """The runs one analysis uses, and a note on what was left out and why."""

    runs: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def analysis_slice(df: pd.DataFrame, dataset: str | None = None, keep_backends: bool = False) -> Slice:
    """Runs that finished ("ok"), of one dataset and one training protocol.

    The protocol is, per architecture, the combination of :data:`PROTOCOL_FIELDS` with the
    most runs (different architectures may use different protocols); with
    ``keep_backends=False`` also only the requested backend with the most runs (backends
    compute the same numbers, so keeping several would count a seed twice; the engine that
    computed a run, its ``backend``, does not make it another network).
    """
    notes = []
    runs = df
    bad = runs["status"].ne("ok")
    if bad.any():
        notes.append(f"{int(bad.sum())} run(s) with status other than 'ok' (diverged) are excluded "
                     f"from accuracy analyses")
        runs = runs[~bad]
    if dataset is not None:
        if not runs["dataset"].eq(dataset).any():
            present = sorted(map(str, df["dataset"].dropna().unique()))
            raise SparsetopoError(f"dataset {dataset!r} has no runs in the store: choose one of {present}")
        runs = runs[runs["dataset"].eq(dataset)]
    fields = [f for f in PROTOCOL_FIELDS if f in runs and runs[f].notna().any()]
    if len(runs) and fields:
        # Per architecture (hidden sizes): the claims only compare runs of one architecture, and a
        # sweep may train, say, its deep variant with another learning rate on purpose.
        combo = runs[fields].astype(str).agg("|".join, axis=1)
        arch = runs["hidden"].astype(str) if "hidden" in runs else pd.Series("", index=runs.index)
        keep = pd.Series(False, index=runs.index)
        for a in arch.unique():
            mine = arch.eq(a)
            top_key = combo[mine].value_counts().index[0]
            keep |= mine & combo.eq(top_key)
            left = int((mine & ~combo.eq(top_key)).sum())
            if left:
                desc = ", ".join(f"{f}={v}" for f, v in zip(fields, top_key.split("|")))
                notes.append(f"hidden {a}: {left} run(s) under another protocol are left out; the analyses "
                             f"use the protocol with most runs ({desc})")
        runs = runs[keep]
    if not keep_backends and len(runs) and runs["requested_backend"].notna().any():
        counts = runs["requested_backend"].value_counts()
        if len(counts) > 1:
            main = counts.index[0]
            notes.append(f"accuracy analyses use backend {main!r} only ({int(counts.iloc[1:].sum())} run(s) on "
                         f"other backends repeat the same networks; they appear in the timing figure)")
            runs = runs[runs["requested_backend"].eq(main)]
    return Slice(runs.reset_index(drop=True), notes)


def single_layer(runs: pd.DataFrame, dropout: bool = False) -> pd.DataFrame:
    """One-hidden-layer runs, with (``dropout=True``) or without dropout."""
    return runs[runs["n_hidden_layers"].eq(1) & runs["has_dropout"].eq(dropout)]


def figure2_hidden(runs: pd.DataFrame) -> int | None:
    """The paper's Figure 2 uses hidden size 300; else the largest one-hidden-layer size present."""
    sizes = sorted(set(single_layer(runs)["hidden1"].dropna().astype(int)))
    if not sizes:
        return None
    return 300 if 300 in sizes else sizes[-1]


def largest_hidden(runs: pd.DataFrame) -> int | None:
    sizes = single_layer(runs)["hidden1"].dropna()
    return int(sizes.max()) if len(sizes) else None


def fixed_k_out(runs: pd.DataFrame) -> pd.DataFrame:
    """Rows at one output-layer degree, so that a curve over ``k_in`` varies only ``k_in``.

    Chooses the output degree that appears with the most distinct input degrees (ties: the
    largest, i.e. the most connected output layer). Fully connected rows are kept regardless.
    """
    sparse = runs[~runs["is_full"]]
    if sparse.empty:
        return runs
    spread = sparse.groupby("k_out")["k_in"].nunique()
    best = spread[spread.eq(spread.max())].index.max()
    return runs[runs["k_out"].eq(best) | runs["is_full"]]


def constructions_in(runs: pd.DataFrame) -> list[str]:
    present = set(runs["construction"].dropna())
    return [c for c in CONSTRUCTION_ORDER if c in present] + sorted(present - set(CONSTRUCTION_ORDER))
