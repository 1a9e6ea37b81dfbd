"""Claims per training recipe, and each construction against a random null: for stores that hold several recipes.

A sweep spec may train one grid under several named recipes (``[recipes.NAME]`` tables; the
store's ``recipe`` column names each run's). The question such a store answers is whether a
verdict is about the topologies or about how the networks were trained. Two tables answer it:

* **claims per recipe**: every claim (C1..C8) checked, by the rules of
  :mod:`sparsetopo.report.claims`, on each recipe's runs alone (each its own analysis slice),
  one row per claim and one column per recipe;
* **the random null**: for every sparse construction other than ``random_edge``, its mean
  accuracy minus ``random_edge``'s at the same hidden size, input degree and output degree
  (one-hidden-layer runs without dropout), with a 95% bootstrap interval over seeds, per input
  density and recipe. The paper's claims that topology matters (C3, C6) imply that some
  construction beats i.i.d. random edges at equal density; an interval above 0 says it does,
  below 0 that it loses to them, across 0 that the two cannot be told apart with these seeds.

Recipes are taken in the order their first run was planned, so a spec's first recipe comes first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from sparsetopo.report import claims as _claims
from sparsetopo.report import graph, stats
from sparsetopo.report.claims import ClaimResult
from sparsetopo.report.figures import COLORS, FigureResult, _log_if_wide, _save, plt
from sparsetopo.report.formats import POINTS, in_points, interval, number
from sparsetopo.report.results import analysis_slice, constructions_in, label, single_layer

NULL = "random_edge"
#: Columns of :func:`random_null`'s table.
NULL_COLUMNS = ("recipe", "hidden", "k_out", "k_in", "density_in", "construction", "accuracy",
                "accuracy_random_edge", "difference", "ci_low", "ci_high", "n")


def recipes_in(table: pd.DataFrame) -> list[str]:
    """The recipe names a results table holds, in planned order ([] when it names none)."""
    if "recipe" not in table:
        return []
    ordered = table.sort_values("position", kind="stable") if "position" in table else table
    return [str(r) for r in dict.fromkeys(ordered["recipe"].dropna())]


@dataclass
class RecipeComparison:
    """What the report shows about several recipes."""

    recipes: list[str]
    claims: dict[str, list[ClaimResult]]                 # recipe -> C1..C8
    null: pd.DataFrame                                   # :data:`NULL_COLUMNS`, one row per comparison
    notes: list[str] = field(default_factory=list)
    figure: FigureResult | None = None

    def to_dict(self) -> dict:
        """JSON-ready: per recipe the claims (as claims.json has them) and the null rows."""
        return {"recipes": self.recipes,
                "claims": {r: [c.to_dict() for c in cs] for r, cs in self.claims.items()},
                "random_null": self.null.to_dict(orient="records"), "notes": self.notes}


def compare_recipes(table: pd.DataFrame, recipes: list[str], seed: int = 0, dataset: str | None = None,
                    with_timings: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
                    out_dir=None) -> RecipeComparison:
    """Check every claim on each recipe's runs and compute the random-null table.

    table : the store's normalised runs (:func:`sparsetopo.report.results.load_table`).
    with_timings : adds the store's one-network-at-a-time epoch timings to a recipe's runs of
        every backend (claim C8); None checks C8 on the runs alone.
    out_dir : where the figure goes (None: no figure).
    """
    per_claims, per_runs, notes = {}, {}, []
    for recipe in recipes:
        mine = table[table["recipe"].eq(recipe)]
        chosen = analysis_slice(mine, dataset=dataset)
        runs, _ = graph.fill_connectivity(chosen.runs)
        timed = analysis_slice(mine, dataset=dataset, keep_backends=True).runs
        if with_timings is not None:
            timed = with_timings(timed)
        per_claims[recipe] = _claims.check_all(runs, timed, seed=seed)
        per_runs[recipe] = runs
        notes += [f"recipe {recipe!r}: {n}" for n in chosen.notes]
    unlabelled = int(table["recipe"].isna().sum()) if "recipe" in table else 0
    if unlabelled:
        notes.append(f"{unlabelled} run(s) name no recipe and are left out of the per-recipe tables")
    null = random_null(per_runs, seed=seed)
    comparison = RecipeComparison(list(recipes), per_claims, null, notes)
    if out_dir is not None:
        comparison.figure = null_figure(null, per_runs, out_dir)
    return comparison


def random_null(runs_by_recipe: dict[str, pd.DataFrame], seed: int = 0) -> pd.DataFrame:
    """Each sparse construction's accuracy minus ``random_edge``'s in the same cell.

    A cell is (recipe, hidden size, input degree, output degree) over one-hidden-layer runs
    without dropout; the difference of means has a percentile-bootstrap interval over the
    seeds of both groups (:func:`sparsetopo.report.stats.diff_ci`; NaN bounds with a single seed).
    Returns one row per (cell, construction), :data:`NULL_COLUMNS`.
    """
    rows = []
    for recipe, runs in runs_by_recipe.items():
        rng = stats.make_rng(seed, "random-null", recipe)
        sparse = single_layer(runs, dropout=False)
        sparse = sparse[~sparse["is_full"]]
        for (h, k_in, k_out), cell in sparse.groupby(["hidden1", "k_in", "k_out"], sort=True):
            null = cell[cell["construction"].eq(NULL)]["test_accuracy"].to_numpy(float)
            if null.size == 0:
                continue
            for c in constructions_in(cell):
                if c == NULL:
                    continue
                acc = cell[cell["construction"].eq(c)]["test_accuracy"].to_numpy(float)
                e = stats.diff_ci(acc, null, rng)
                rows.append((recipe, int(h), int(k_out), int(k_in), float(cell["density_in"].iloc[0]), c,
                             float(acc.mean()), float(null.mean()), e.value, e.low, e.high, e.n))
    return pd.DataFrame(rows, columns=list(NULL_COLUMNS))


# -- tables for the documents ------------------------------------------------------------------------

def _claim_cell(c: ClaimResult) -> str:
    if c.value is None:
        return c.verdict
    value = number(c.value, c.unit) + (" pt" if in_points(c.unit) else "")
    if c.ci_low is None or c.ci_high is None:
        return f"{c.verdict}: {value}"
    return f"{c.verdict}: {value} {interval(c.ci_low, c.ci_high, c.unit)}"


def claims_table(comparison: RecipeComparison) -> tuple[list[str], list[list[str]]]:
    """One row per claim, one column per recipe: ``verdict: value [95% CI]``."""
    header = ["id", "claim (paper)", *comparison.recipes]
    first = comparison.claims[comparison.recipes[0]]
    rows = []
    for i, claim in enumerate(first):
        rows.append([claim.id, claim.statement, *(_claim_cell(comparison.claims[r][i]) for r in comparison.recipes)])
    return header, rows


def null_table(null: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """One row per (recipe, hidden size, output degree, construction), one column per input
    density: ``difference [95% CI]`` in accuracy points, and a count of the cells whose
    interval lies above 0 / below 0 / across 0."""
    if null.empty:
        return [], []
    densities = sorted(null["density_in"].unique())
    header = ["recipe", "hidden", "output k", "construction",
              *(f"{100 * d:.3g}% density" for d in densities), "cells above / below / across 0"]
    rows = []
    order = {r: i for i, r in enumerate(dict.fromkeys(null["recipe"]))}
    keys = null[["recipe", "hidden", "k_out", "construction"]].drop_duplicates()
    keys = keys.assign(_r=keys["recipe"].map(order)).sort_values(["_r", "hidden", "k_out"], kind="stable")
    for _, key in keys.iterrows():
        mine = null[(null["recipe"] == key["recipe"]) & (null["hidden"] == key["hidden"])
                    & (null["k_out"] == key["k_out"]) & (null["construction"] == key["construction"])]
        cells, counts = [], [0, 0, 0]
        for d in densities:
            row = mine[mine["density_in"] == d]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            low, high = float(r["ci_low"]), float(r["ci_high"])
            if not (np.isfinite(low) and np.isfinite(high)):
                cells.append(f"{number(r['difference'], POINTS)} (n/a)")
                continue
            cells.append(f"{number(r['difference'], POINTS)} {interval(low, high, POINTS)}")
            counts[0 if low > 0 else 1 if high < 0 else 2] += 1
        rows.append([key["recipe"], int(key["hidden"]), int(key["k_out"]), key["construction"], *cells,
                     " / ".join(map(str, counts))])
    return header, rows


# -- figure --------------------------------------------------------------------------------------------

def plot_differences(ax, rows: pd.DataFrame) -> None:
    """Each construction's ``difference`` from random_edge (rows of :data:`NULL_COLUMNS`, one
    hidden size and output degree) against input density, whiskers from ``ci_low`` to
    ``ci_high``, and a red line at 0."""
    shown = constructions_in(rows)
    for i, c in enumerate(shown):
        part = rows[rows["construction"].eq(c)].sort_values("density_in")
        # small multiplicative offsets keep the whiskers of one density apart
        x = part["density_in"].to_numpy(float) * (1 + 0.03 * (i - (len(shown) - 1) / 2))
        y = part["difference"].to_numpy(float) * 100
        low = part["ci_low"].astype(float).to_numpy() * 100
        high = part["ci_high"].astype(float).to_numpy() * 100
        err = np.vstack([np.where(np.isfinite(low), y - low, 0), np.where(np.isfinite(high), high - y, 0)])
        ax.errorbar(x, y, yerr=err, marker="o", markersize=3, capsize=2, linewidth=1, color=COLORS.get(c),
                    label=label(c))
    ax.axhline(0.0, color="tab:red", linewidth=1)
    ax.grid(True, alpha=0.3)
    ax.set_xlabel("input-layer density")
    _log_if_wide(ax, rows["density_in"], percent=True)


def null_figure(null: pd.DataFrame, runs_by_recipe: dict[str, pd.DataFrame], out_dir) -> FigureResult:
    """Per recipe (columns): accuracy per construction against input density (top) and each
    construction minus random_edge at the same density (bottom, with 95% intervals)."""
    name, title = "recipes_random_null", "Recipes and the random null"
    recipes = list(runs_by_recipe)
    if null.empty:
        return FigureResult(name, title, "", skipped="no cell holds random_edge and another sparse construction")
    h = int(null["hidden"].value_counts().index[0])
    fig, axes = plt.subplots(2, len(recipes), figsize=(4.6 * len(recipes), 7.4), squeeze=False, sharex=True)
    for j, recipe in enumerate(recipes):
        top, bottom = axes[0, j], axes[1, j]
        runs = single_layer(runs_by_recipe[recipe], dropout=False)
        runs = runs[runs["hidden1"].eq(h)]
        sparse = runs[~runs["is_full"]]
        k_out = sparse["k_out"].value_counts().index[0] if len(sparse) else None
        sparse = sparse[sparse["k_out"].eq(k_out)]
        for c in constructions_in(sparse):
            cells = sparse[sparse["construction"].eq(c)].groupby("density_in")["test_accuracy"].mean()
            top.plot(cells.index, cells.values * 100, marker="o", markersize=3, color=COLORS.get(c), label=label(c))
        fc = runs[runs["is_full"]]["test_accuracy"]
        if len(fc):
            top.axhline(fc.mean() * 100, color="black", linestyle="--", linewidth=1,
                        label=f"fully connected ({fc.mean() * 100:.2f}%)")
        top.set_title(recipe, fontsize=10)
        top.grid(True, alpha=0.3)
        plot_differences(bottom, null[(null["recipe"] == recipe) & (null["hidden"] == h) & (null["k_out"] == k_out)])
        if j == 0:
            top.set_ylabel("test accuracy (%)")
            bottom.set_ylabel("accuracy minus random_edge (points)")
    axes[0, -1].legend(fontsize=7)
    axes[1, -1].legend(fontsize=7)
    png, pdf = _save(fig, Path(out_dir), name)
    return FigureResult(name, title,
                        f"Hidden {h}, one hidden layer, no dropout. Top: mean test accuracy per construction "
                        f"against input density, one panel per recipe; dashed: fully connected. Bottom: each "
                        f"construction minus random_edge at the same density (whiskers: 95% bootstrap "
                        f"interval over seeds); above the red line beats the random null.", png, pdf)
