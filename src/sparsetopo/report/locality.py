"""The permutation null: is a construction's advantage over random edges the graph's, or its
alignment with the pixel order?

With the inputs in raster order, ``regular_rotating`` joins input ``i`` to hidden neurons
``i mod m .. i+k-1 mod m``: neighbouring pixels feed overlapping hidden neurons, a 1-D receptive
field along the image rows. ``random_edge`` has no such alignment. A store that trains the same
networks on the features in their own order and on one fixed permutation of them
(``permute_inputs``, :mod:`sparsetopo.data.permute`) separates the two readings: the
permutation keeps every example's information and every graph (so every spectral measure), and
removes only the alignment.

This module gives the report

* **the permutation-null table**: for every sparse construction other than ``random_edge``, its
  mean accuracy minus ``random_edge``'s at the same hidden size, input and output degree, in
  raster order and permuted, each with a 95% bootstrap interval over seeds (the random-null
  computation of :func:`sparsetopo.report.recipes.random_null`, once per order), beside each
  construction's mean input-layer algebraic connectivity in both orders;
* **claim L1**, "the constructions' advantage over random edges comes from input locality";
* a figure of both orders' differences against input density.

Rule of L1. The cells it speaks about are those where the construction beats random edges in
raster order: (construction, density) cells whose raster-order interval lies above 0. Over
those cells, the mean permuted-order difference gets a 95% bootstrap interval (seeds resampled
jointly across the cells, which share random_edge's runs and sometimes a graph:
:func:`pooled_difference`). L1 is

* **supported** when such cells exist and that interval contains 0 or lies below it (the
  advantage does not survive the permutation);
* **not supported** when no cell beats random edges in raster order (there is no advantage
  for locality to explain), or when the interval lies above 0 (an advantage survives without
  the alignment, so it is at least partly the graph's);
* **inconclusive** when a group has fewer than 2 seeds (no intervals) or no cell has runs in
  both orders.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sparsetopo.report import stats
from sparsetopo.report.claims import ClaimResult
from sparsetopo.report.figures import FigureResult, _save, plt
from sparsetopo.report.formats import POINTS, interval, number
from sparsetopo.report.recipes import NULL, plot_differences, random_null
from sparsetopo.report.results import constructions_in, label, single_layer

RASTER, PERMUTED = "raster", "permuted"
CELL = ["hidden", "k_out", "k_in", "density_in", "construction"]
L1_STATEMENT = "the constructions' advantage over random edges comes from input locality"
L1_RULE = ("supported: some construction beats random_edge in raster order (interval above 0) and, over "
           "those cells, the permuted advantage's interval contains 0 or lies below it; not supported: no "
           "raster advantage, or the permuted one's interval lies above 0")


def has_permutation_null(table: pd.DataFrame) -> bool:
    """Whether ``table`` holds runs both in the features' own order and permuted."""
    if "permute_inputs" not in table:
        return False
    permuted = table["permute_inputs"].notna()
    return bool(permuted.any() and (~permuted).any())


def raster_only(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The runs in the features' own order, with a note, when ``table`` also holds permuted runs;
    ``table`` itself otherwise. The paper's claims are about raster-order data."""
    if not has_permutation_null(table):
        return table, []
    permuted = table["permute_inputs"].notna()
    return table[~permuted], [f"{int(permuted.sum())} run(s) on permuted inputs are left out of claims C1-C8 and "
                              f"their figures; they make the permutation null (claim L1)"]


@dataclass
class LocalityComparison:
    """What the report shows about the permutation null."""

    permutation_seed: int
    table: pd.DataFrame                                  # one row per (order, cell): see :func:`permutation_null`
    claim: ClaimResult
    notes: list[str] = field(default_factory=list)
    figure: FigureResult | None = None

    def to_dict(self) -> dict:
        return {"permutation_seed": self.permutation_seed, "claim": self.claim.to_dict(),
                "table": self.table.to_dict(orient="records"), "notes": self.notes}


def compare_orders(runs: pd.DataFrame, seed: int = 0, out_dir=None) -> LocalityComparison:
    """The permutation null of ``runs`` (one data set and protocol; the analysis slice of every
    run, raster and permuted, with ``alg_conn_in`` filled): table, claim L1 and figure.

    When the runs hold several permutation seeds, the one with the most runs is used.
    """
    permuted_all = runs[runs["permute_inputs"].notna()]
    counts = permuted_all["permute_inputs"].astype(int).value_counts()
    chosen = int(counts.index[0])
    notes = []
    if len(counts) > 1:
        notes.append(f"runs on {len(counts)} input permutations; the permutation null uses seed {chosen} "
                     f"({int(counts.iloc[0])} runs)")
    orders = {RASTER: runs[runs["permute_inputs"].isna()],
              PERMUTED: permuted_all[permuted_all["permute_inputs"].astype(int).eq(chosen)]}
    table = permutation_null(orders, seed=seed)
    claim = locality_claim(orders, table, seed=seed)
    comparison = LocalityComparison(chosen, table, claim, notes)
    if out_dir is not None:
        comparison.figure = locality_figure(table, orders, chosen, out_dir)
    return comparison


def permutation_null(orders: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Each sparse construction minus ``random_edge`` per cell, once per order.

    Columns: ``order`` then :data:`sparsetopo.report.recipes.NULL_COLUMNS` but ``recipe``, and
    ``alg_conn_in`` (the construction's mean input-layer algebraic connectivity over the cell's
    seeds, NaN where unknown). The differences are :func:`random_null`'s.
    """
    null = random_null(orders, seed=seed).rename(columns={"recipe": "order"})
    if null.empty:
        return null.assign(alg_conn_in=pd.Series(dtype=float))
    connectivity = []
    for order, runs in orders.items():
        sparse = single_layer(runs, dropout=False)
        means = (sparse.assign(hidden=sparse["hidden1"]).groupby(["hidden", "k_out", "k_in", "construction"])
                 ["alg_conn_in"].mean().rename("alg_conn_in").reset_index().assign(order=order))
        connectivity.append(means)
    connectivity = pd.concat(connectivity, ignore_index=True)
    for col in ("hidden", "k_out", "k_in"):
        connectivity[col] = connectivity[col].astype(int)
    return null.merge(connectivity, on=["order", "hidden", "k_out", "k_in", "construction"], how="left")


def connectivity_agreement(table: pd.DataFrame) -> tuple[int, float]:
    """(cells with a connectivity in both orders, largest |raster - permuted| difference between
    their mean input-layer algebraic connectivities). The permutation changes the data only, so
    the same networks must give 0."""
    both = _orders_side_by_side(table)
    both = both[both["alg_conn_in_raster"].notna() & both["alg_conn_in_permuted"].notna()]
    if both.empty:
        return 0, float("nan")
    return len(both), float((both["alg_conn_in_raster"] - both["alg_conn_in_permuted"]).abs().max())


def _orders_side_by_side(table: pd.DataFrame) -> pd.DataFrame:
    raster = table[table["order"].eq(RASTER)].drop(columns="order")
    permuted = table[table["order"].eq(PERMUTED)].drop(columns="order")
    return raster.merge(permuted, on=CELL, suffixes=("_raster", "_permuted"))


def pooled_difference(pairs: list[tuple[pd.Series, pd.Series]], rng: np.random.Generator,
                      n_boot: int = stats.N_BOOT, level: float = stats.LEVEL) -> stats.Estimate:
    """Mean over cells of mean(a) - mean(b), each ``a``/``b`` a Series of accuracies indexed by
    seed, with a percentile-bootstrap interval that resamples **seeds**, jointly for every group
    of every cell. Cells are not independent: constructions at one density share random_edge's
    runs, and at the sparsest degrees several constructions are the same graph; resampling a
    seed everywhere at once keeps those ties, where resampling each cell on its own would count
    one network several times and narrow the interval. A seed is the natural unit: runs of one
    seed also share their data order (the shuffling derives from the run seed), so a
    construction and random_edge are compared seed by seed, as paired samples. A group missing a drawn seed averages the
    seeds it has. No interval with fewer than ``stats.MIN_RUNS`` seeds in any group."""
    pairs = [(a.dropna(), b.dropna()) for a, b in pairs]
    pairs = [(a, b) for a, b in pairs if len(a) and len(b)]
    if not pairs:
        return stats.Estimate(float("nan"), float("nan"), float("nan"), 0)
    value = float(np.mean([a.mean() - b.mean() for a, b in pairs]))
    n = min(min(len(a), len(b)) for a, b in pairs)
    if n < stats.MIN_RUNS:
        return stats.Estimate(value, float("nan"), float("nan"), n)
    seeds = sorted(set().union(*(set(a.index) | set(b.index) for a, b in pairs)))
    first = np.array([a.reindex(seeds).to_numpy(float) for a, _ in pairs])    # (cells, seeds)
    second = np.array([b.reindex(seeds).to_numpy(float) for _, b in pairs])
    drawn = rng.integers(0, len(seeds), size=(n_boot, len(seeds)))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a group that drew none of its seeds: NaN, dropped
        boot = np.nanmean(first[:, drawn], axis=2) - np.nanmean(second[:, drawn], axis=2)   # (cells, n_boot)
    low, high = stats._percentiles(boot.mean(axis=0), level)
    return stats.Estimate(value, low, high, n)


def _accuracies(runs: pd.DataFrame, cell) -> tuple[pd.Series, pd.Series]:
    """(construction's, random_edge's) test accuracies of one cell, indexed by seed."""
    sparse = single_layer(runs, dropout=False)
    same = sparse[sparse["hidden1"].eq(cell["hidden"]) & sparse["k_in"].eq(cell["k_in"])
                  & sparse["k_out"].eq(cell["k_out"])]

    def by_seed(rows):
        return rows.groupby("seed")["test_accuracy"].mean()

    return by_seed(same[same["construction"].eq(cell["construction"])]), by_seed(same[same["construction"].eq(NULL)])


def locality_claim(orders: dict[str, pd.DataFrame], table: pd.DataFrame, seed: int = 0) -> ClaimResult:
    """Claim L1 by the module's rule (see the module docstring)."""
    operationalisation = (
        "Cells: (construction, input density) of one-hidden-layer networks without dropout, each construction "
        "minus random_edge at the same degrees, 95% bootstrap interval over seeds, once with the features in "
        "raster order and once after one fixed permutation of them (the same networks and seeds). Winning "
        "cells: raster interval above 0. Measured: the mean permuted-order difference over the winning cells, "
        "with a bootstrap interval resampling seeds jointly across those cells. " + L1_RULE + ".")
    claim = ClaimResult("L1", L1_STATEMENT, operationalisation, "inconclusive", threshold=0.0,
                        unit="accuracy (permuted minus random_edge, winning cells)", rule=L1_RULE)
    both = _orders_side_by_side(table) if not table.empty else pd.DataFrame()
    claim.n_runs = int(sum(len(single_layer(r, dropout=False)) for r in orders.values()))
    if both.empty:
        claim.notes.append("no cell holds random_edge and another sparse construction in both orders")
        return claim
    with_interval = both["ci_low_raster"].notna() & both["ci_low_permuted"].notna()
    if not with_interval.any():
        claim.notes.append(f"fewer than {stats.MIN_RUNS} seeds per group: no intervals")
        return claim
    winning = both[with_interval & (both["ci_low_raster"] > 0)]
    per_cell = [{"construction": r["construction"], "density_in": float(r["density_in"]),
                 "raster": float(r["difference_raster"]), "raster_ci": [float(r["ci_low_raster"]), float(r["ci_high_raster"])],
                 "permuted": float(r["difference_permuted"]),
                 "permuted_ci": [float(r["ci_low_permuted"]), float(r["ci_high_permuted"])]}
                for _, r in winning.iterrows()]
    claim.numbers = {"cells_in_both_orders": int(with_interval.sum()), "winning_cells": len(winning),
                     "winning": per_cell}
    if winning.empty:
        claim.verdict = "not supported"
        claim.notes.append(f"no construction beats random_edge in raster order in any of {int(with_interval.sum())} "
                           f"cells: there is no advantage for input locality to explain")
        return claim
    rng = stats.make_rng(seed, "L1")
    raster = pooled_difference([_accuracies(orders[RASTER], r) for _, r in winning.iterrows()], rng)
    permuted = pooled_difference([_accuracies(orders[PERMUTED], r) for _, r in winning.iterrows()], rng)
    claim.value, claim.ci_low, claim.ci_high = permuted.value, permuted.low, permuted.high
    claim.numbers.update({"raster_mean_advantage": raster.to_dict(), "permuted_mean_advantage": permuted.to_dict(),
                          "share_surviving": permuted.value / raster.value if raster.value else None,
                          "winning_cells_still_above_0": int((winning["ci_low_permuted"] > 0).sum())})
    if not permuted.has_interval:
        claim.notes.append("no interval for the permuted advantage")
        return claim
    claim.verdict = "not supported" if permuted.low > 0 else "supported"
    claim.notes.append(f"{len(winning)} cell(s) beat random_edge in raster order, by {number(raster.value, POINTS)} "
                       f"points on average {interval(raster.low, raster.high, POINTS)}; permuted, the same cells "
                       f"differ by {number(permuted.value, POINTS)} {interval(permuted.low, permuted.high, POINTS)}")
    return claim


# -- the table for the documents -----------------------------------------------------------------

def _interval(row, suffix) -> str:
    low, high = float(row[f"ci_low_{suffix}"]), float(row[f"ci_high_{suffix}"])
    difference = number(row[f"difference_{suffix}"], POINTS)
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{difference} (n/a)"
    return f"{difference} {interval(low, high, POINTS)}"


def _conn(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4g}"


def locality_table(table: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per (hidden size, output degree, construction, input density): the difference
    from random_edge in accuracy points [95% CI], raster and permuted, and the construction's
    mean input-layer algebraic connectivity in both orders."""
    both = _orders_side_by_side(table) if not table.empty else pd.DataFrame()
    if both.empty:
        return [], []
    header = ["hidden", "output k", "construction", "input density", "raster minus random_edge (pt)",
              "permuted minus random_edge (pt)", "algebraic connectivity raster / permuted"]
    order = {c: i for i, c in enumerate(constructions_in(both))}
    both = both.assign(_c=both["construction"].map(order)).sort_values(["hidden", "k_out", "_c", "density_in"])
    rows = [[int(r["hidden"]), int(r["k_out"]), r["construction"], f"{100 * r['density_in']:.3g}%",
             _interval(r, "raster"), _interval(r, "permuted"),
             f"{_conn(r['alg_conn_in_raster'])} / {_conn(r['alg_conn_in_permuted'])}"]
            for _, r in both.iterrows()]
    return header, rows


# -- figure ----------------------------------------------------------------------------------------

def locality_figure(table: pd.DataFrame, orders: dict[str, pd.DataFrame], permutation_seed: int,
                    out_dir) -> FigureResult:
    """Two panels, raster order and permuted: each construction minus random_edge against input
    density with 95% intervals, on a shared y axis."""
    name, title = "locality_null", "Permutation null: topology or input locality"
    if table.empty:
        return FigureResult(name, title, "", skipped="no cell holds random_edge and another sparse construction")
    h = int(table["hidden"].value_counts().index[0])
    k_out = int(table[table["hidden"].eq(h)]["k_out"].value_counts().index[0])
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 4.4), sharey=True, squeeze=False)
    for ax, order in zip(axes[0], (RASTER, PERMUTED)):
        plot_differences(ax, table[table["order"].eq(order) & table["hidden"].eq(h) & table["k_out"].eq(k_out)])
        ax.set_title("pixels in raster order" if order == RASTER else f"pixels permuted (seed {permutation_seed})",
                     fontsize=10)
    axes[0, 0].set_ylabel("accuracy minus random_edge (points)")
    axes[0, 1].legend(fontsize=7)
    png, pdf = _save(fig, Path(out_dir), name)
    return FigureResult(name, title,
                        f"Hidden {h}, output degree {k_out}, one hidden layer, no dropout. Each construction's mean "
                        f"test accuracy minus random_edge's at the same density (whiskers: 95% bootstrap interval "
                        f"over seeds), with the input features in their own (raster) order (left) and after one "
                        f"fixed permutation of them (right): the same networks, seeds and data, without the "
                        f"alignment of the graph with the image.", png, pdf)
