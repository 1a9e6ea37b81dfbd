"""The paper's future work: claims F1-F5 on CNN and LSTM runs (``TrainConfig.architecture``).

The paper ends by naming CNNs and LSTMs as future work. The ``cnn`` and ``recurrent`` presets
put every construction between a CNN's channels and into an LSTM's W_ih and W_hh
(:mod:`sparsetopo.train.architectures`) at a few densities (``TrainConfig.density``), each
network also trained with its null (``permute_inputs``: the CNN's input channels, the LSTM's
pixels within each row, permuted once). These runs are not the paper's MLPs: the report keeps
them out of claims C1-C8 (:func:`split_architectures`) and checks these instead. Every interval
is a 95% percentile bootstrap over seeds; accuracies are in points (1 point = 0.01).

Rules, printed with each claim:

* **F1 (cnn)** and **F3 (lstm)**, "the rotating constructions beat random_edge at equal
  density": over every (rotating construction, density) cell, the mean of the cells' accuracy
  differences to ``random_edge`` at the same density, resampling each group's seeds
  (:func:`pooled_lead`). Supported when its interval lies above 0, not supported when it lies
  below 0, inconclusive otherwise. F1 reads the channels in their own order (the
  configuration a CNN is built in). F3 asks about W_hh, so it reads the runs whose pixels are
  permuted within rows when the store has them: the permutation removes W_ih's alignment with
  the image, and what lead is left belongs to the graphs, not to the pixel order. The other
  order's lead is listed beside it.
* **F2 (cnn)**, "the best sparse CNN at 25% is within 1 point of dense", and **F4 (lstm)**, "a
  10%-dense LSTM is within 2 points of dense": the construction with the highest mean accuracy
  at that density (channels or pixels in their own order) minus the dense networks' mean, with
  a bootstrap interval. Supported when the interval lies above minus the margin, not supported
  when it lies below it, inconclusive otherwise. Picking the best construction favours the
  sparse side; the note says which one it was.
* **F5 (per architecture)**, "accuracy rises with the graphs' algebraic connectivity at equal
  density" (the paper's Section 4.5 reading): the Spearman correlation of the whole network's
  algebraic connectivity with accuracy within each density, averaged over densities
  (:func:`~sparsetopo.report.stats.grouped_spearman_ci`), sparse runs in their own order, per
  architecture. Supported when every architecture's interval lies above 0, not supported when
  one lies below 0, inconclusive otherwise.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from sparsetopo.report import stats
from sparsetopo.report.claims import ClaimResult
from sparsetopo.report.formats import POINTS, interval, number

__all__ = ["ARCHITECTURE_CLAIMS", "check_future", "split_architectures"]

MLP = "mlp"
RANDOM = "random_edge"
DENSE = "fully_connected"
F2_DENSITY, F2_MARGIN = 0.25, 0.01
F4_DENSITY, F4_MARGIN = 0.10, 0.02

#: (id, architecture, statement, rule) of each claim.
ARCHITECTURE_CLAIMS = {
    "F1": ("cnn", "in a CNN's channel graphs, the rotating constructions beat random_edge at equal channel density",
           "supported: the mean lead of the rotating constructions over random_edge (channels in their own order, "
           "pooled over constructions and densities) has an interval above 0; not supported: below 0; "
           "inconclusive: it contains 0"),
    "F2": ("cnn", "the best sparse CNN at 25% channel density is within 1 point of the dense CNN",
           "supported: best construction at 25% minus dense has an interval above -1 point; not supported: below "
           "-1 point; inconclusive: it contains -1 point"),
    "F3": ("lstm", "in an LSTM's recurrent matrix W_hh, the rotating constructions beat random_edge at equal density",
           "supported: the mean lead of the rotating constructions over random_edge (pixels permuted within rows "
           "when the store has them, so that W_ih's alignment with the image is gone; pooled over constructions "
           "and densities) has an interval above 0; not supported: below 0; inconclusive: it contains 0"),
    "F4": ("lstm", "a 10%-dense LSTM is within 2 points of the dense LSTM",
           "supported: best construction at 10% minus dense has an interval above -2 points; not supported: below "
           "-2 points; inconclusive: it contains -2 points"),
    "F5": (None, "in each architecture, accuracy rises with the graphs' algebraic connectivity at equal density",
           "supported: for every architecture, the within-density Spearman correlation of the network's algebraic "
           "connectivity with accuracy has an interval above 0; not supported: one lies below 0; inconclusive "
           "otherwise"),
}


def architectures(table: pd.DataFrame) -> pd.Series:
    """Each run's architecture, read from its stored config ("mlp" for runs stored before it existed)."""
    return _config_field(table, "architecture", MLP)


def _config_field(table: pd.DataFrame, name: str, default) -> pd.Series:
    if "config" not in table:
        return pd.Series([default] * len(table), index=table.index, dtype=object)
    return pd.Series([json.loads(c).get(name, default) if isinstance(c, str) else default for c in table["config"]],
                     index=table.index, dtype=object)


def split_architectures(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame | None, list[str]]:
    """``(mlp runs, cnn and lstm runs or None, notes)``: the paper's claims read only the MLPs."""
    kind = architectures(table)
    others = kind.ne(MLP)
    if not others.any():
        return table, None, []
    rest = table[others].assign(architecture=kind[others],
                                arch_density=pd.to_numeric(_config_field(table[others], "density", 1.0)))
    counts = ", ".join(f"{n} {k}" for k, n in rest["architecture"].value_counts().sort_index().items())
    return table[~others], rest, [f"runs of other architectures ({counts}) are left out of claims C1-C8 and their "
                                  "figures; claims F1-F5 read them"]


def check_future(runs: pd.DataFrame, seed: int = 0) -> list[ClaimResult]:
    """F1-F5 for the architectures ``runs`` holds (F1, F2 with cnn runs; F3, F4 with lstm runs)."""
    runs = runs[runs["status"].eq("ok")]
    present = set(runs["architecture"])
    out = []
    if "cnn" in present:
        cnn = runs[runs["architecture"].eq("cnn")]
        out += [_lead_claim("F1", _in_order(cnn, permuted=False), _in_order(cnn, permuted=True), seed),
                _near_dense_claim("F2", cnn, F2_DENSITY, F2_MARGIN, seed)]
    if "lstm" in present:
        lstm = runs[runs["architecture"].eq("lstm")]
        permuted = _in_order(lstm, permuted=True)
        main, other = (permuted, _in_order(lstm, permuted=False)) if len(permuted) else (lstm, permuted)
        claim = _lead_claim("F3", main, other, seed)
        if not len(permuted):
            claim.notes.append("the store holds no runs with pixels permuted within rows: the lead is read in raster "
                               "order, where W_ih's alignment with the image may contribute")
        out += [claim, _near_dense_claim("F4", lstm, F4_DENSITY, F4_MARGIN, seed)]
    if present:
        out.append(_connectivity_claim(runs, seed))
    return out


def _in_order(runs: pd.DataFrame, permuted: bool) -> pd.DataFrame:
    return runs[runs["permute_inputs"].notna() == permuted]


def _claim(id: str, verdict: str, estimate: stats.Estimate | None = None, **kw) -> ClaimResult:
    _, statement, rule = ARCHITECTURE_CLAIMS[id]
    architecture = ARCHITECTURE_CLAIMS[id][0] or "cnn, lstm"
    how = (f"{architecture} runs (TrainConfig.architecture), compared at equal density (TrainConfig.density); "
           "95% percentile bootstrap intervals over seeds")
    out = ClaimResult(id=id, statement=statement, operationalisation=how, verdict=verdict, rule=rule, **kw)
    if estimate is not None:
        out.value, out.ci_low, out.ci_high = (None if not np.isfinite(v) else float(v)
                                              for v in (estimate.value, estimate.low, estimate.high))
    return out


def pooled_lead(runs: pd.DataFrame, rng: np.random.Generator, n_boot: int = stats.N_BOOT) -> tuple[stats.Estimate, dict]:
    """Mean over (rotating construction, density) cells of the cell's accuracy minus random_edge's
    at that density, with a bootstrap interval resampling every group's seeds; and each cell's
    difference. No interval when a group has fewer than 2 runs."""
    random = {d: g["test_accuracy"].to_numpy(float) for d, g in runs[runs["construction"].eq(RANDOM)].groupby("arch_density")}
    rotating = runs[runs["construction"].str.endswith("rotating")]
    cells, samples, values = {}, [], []
    complete = True   # every cell has enough runs on both sides for an interval
    for (name, density), group in rotating.groupby(["construction", "arch_density"]):
        if density not in random:
            continue
        a, b = group["test_accuracy"].to_numpy(float), random[density]
        values.append(a.mean() - b.mean())
        cells[f"{name}@{density:g}"] = float(a.mean() - b.mean())
        complete = complete and min(a.size, b.size) >= stats.MIN_RUNS
        if complete:
            samples.append(a[rng.integers(0, a.size, (n_boot, a.size))].mean(1)
                           - b[rng.integers(0, b.size, (n_boot, b.size))].mean(1))
    if not values:
        return stats.Estimate(np.nan, np.nan, np.nan, 0), cells
    if not complete:
        return stats.Estimate(float(np.mean(values)), np.nan, np.nan, len(values)), cells
    low, high = stats._percentiles(np.mean(samples, axis=0), stats.LEVEL)
    return stats.Estimate(float(np.mean(values)), low, high, len(values)), cells


def _lead_claim(id: str, runs: pd.DataFrame, other: pd.DataFrame, seed: int) -> ClaimResult:
    if not (runs["construction"].eq(RANDOM).any() and runs["construction"].str.endswith("rotating").any()):
        return _claim(id, "inconclusive", notes=["not enough data: needs random_edge and rotating runs at a shared "
                                                 "density"], n_runs=len(runs))
    estimate, cells = pooled_lead(runs, stats.make_rng(seed, id))
    other_estimate, other_cells = pooled_lead(other, stats.make_rng(seed, id, "other")) if len(other) else (None, {})
    numbers = {"cells": cells}
    if other_estimate is not None:
        numbers["other_order"] = {**other_estimate.to_dict(), "cells": other_cells}
    return _claim(id, stats.verdict_above(estimate, 0.0), estimate, threshold=0.0, unit=POINTS,
                  numbers=numbers, n_runs=len(runs) + len(other))


def _near_dense_claim(id: str, runs: pd.DataFrame, density: float, margin: float, seed: int) -> ClaimResult:
    runs = _in_order(runs, permuted=False)
    dense = runs[runs["construction"].eq(DENSE)]["test_accuracy"].to_numpy(float)
    sparse = runs[np.isclose(runs["arch_density"], density) & runs["construction"].ne(DENSE)]
    if not len(dense) or not len(sparse):
        return _claim(id, "inconclusive", notes=[f"not enough data: needs dense runs and runs at density {density:g}"],
                      n_runs=len(runs))
    means = sparse.groupby("construction")["test_accuracy"].mean()
    best = str(means.idxmax())
    estimate = stats.diff_ci(sparse[sparse["construction"].eq(best)]["test_accuracy"], dense, stats.make_rng(seed, id))
    return _claim(id, stats.verdict_above(estimate, -margin), estimate, threshold=-margin, unit=POINTS,
                  numbers={"best": best, "means": {k: float(v) for k, v in means.items()},
                           "dense": float(dense.mean())},
                  n_runs=len(sparse) + len(dense),
                  notes=[f"best construction at {density:g}: {best}; choosing the best favours the sparse side"])


def network_connectivity(runs: pd.DataFrame) -> pd.Series:
    """The whole network's algebraic connectivity of each run, from its stored graph measures."""
    def read(metrics):
        try:
            return json.loads(metrics)["network"]["algebraic_connectivity"]
        except (TypeError, KeyError, ValueError):
            return None
    return pd.to_numeric(pd.Series([read(m) for m in runs.get("metrics", [None] * len(runs))], index=runs.index),
                         errors="coerce")


def _connectivity_claim(runs: pd.DataFrame, seed: int) -> ClaimResult:
    sparse = _in_order(runs[runs["construction"].ne(DENSE)], permuted=False).assign(
        connectivity=lambda r: network_connectivity(r))
    per, verdicts, weakest = {}, [], None   # the headline: the architecture with the lowest interval
    for kind, part in sparse.groupby("architecture"):
        part = part.dropna(subset=["connectivity"]).reset_index(drop=True)
        groups = [g.index.to_numpy() for _, g in part.groupby("arch_density")]
        estimate = stats.grouped_spearman_ci(groups, part["connectivity"], part["test_accuracy"],
                                             stats.make_rng(seed, "F5", kind))
        per[kind] = estimate.to_dict()
        verdicts.append(stats.verdict_above(estimate, 0.0))
        if weakest is None or not estimate.low >= weakest.low:   # a missing interval (nan) is the weakest
            weakest = estimate
    verdict = stats.combine_all(verdicts)
    notes = [f"{kind}: rho {number(e['value'])}, interval {interval(e['ci_low'], e['ci_high'])}, {e['n']} runs"
             for kind, e in per.items()]
    return _claim("F5", verdict, weakest, threshold=0.0, unit="Spearman rho", numbers={"by_architecture": per},
                  n_runs=len(sparse), notes=notes or ["not enough data: no sparse runs with graph measures"])
