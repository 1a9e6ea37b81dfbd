"""Accuracy per second of training: block topologies against neuron-level ones, and the butterfly.

The paper claims accuracy ("can surpass fully connected") and speed ("speed-ups of computations
from the very beginning of training") one at a time. A store that trains the constructions at
neuron level (block 1) and on blocks of neurons (``block`` > 1, each connection of the block
graph a dense tile), each run timed on one thread, answers the practitioner's question instead:
for a training budget in seconds, which topology gives the best network? This module gives the
report

* **the Pareto figure**: test accuracy against training seconds, one point per run, coloured by
  construction and shaped by block size, with the front (the best accuracy reached within each
  time) drawn;
* **a table** of mean accuracy at equal density, each block size against block 1, per
  construction;
* **claims B1-B4**, each with a 95% bootstrap interval that resamples seeds jointly across the
  cells it pools (:func:`sparsetopo.report.locality.pooled_difference`), and the verdict rules
  of C1-C8: supported when the interval lies wholly on the claim's side of its threshold, not
  supported when wholly on the other side, inconclusive otherwise.

Equal density. Densities are nominal: the input layer's ``k_in`` over its output blocks (over
its outputs at block 1), what the run asked for (``random_edge`` realises another density with
every seed). A block layer's density moves in steps of one output block per input block, so
a block run is compared with the block-1 run of the same construction and architecture whose
nominal input density is nearest, within a factor of :data:`DENSITY_MATCH`; cells without such
a partner are left out and counted in the claim's numbers.

Rules, each on raster-order runs unless it says otherwise (``permute_inputs`` unset), all
architectures of the store pooled:

* **B1** (block 16 keeps the accuracy): per construction (fully connected excluded) and
  density, block-16 accuracy minus block-1 accuracy. Supported when the pooled difference's
  interval lies above -1 point.
* **B2** (blocks win at equal time): for every training budget ``t`` between the first time
  both kinds have a network and the longest mean time, the best mean accuracy among block
  configurations (``block`` > 1) trained in mean time <= ``t``, minus the best among
  neuron-level ones (block 1, fully connected included). The measured value is the mean over
  those budgets. Supported when its interval lies above 0.
* **B3** (the locality lead survives blocks): at block 16, for the rotating constructions, the
  lead over ``random_edge`` in raster order minus the same lead on permuted inputs (the part of
  the lead that L1 attributes to input locality). Supported when the interval lies above 0;
  inconclusive without permuted runs.
* **B4** (the butterfly is as accurate as the expander): ``butterfly`` minus
  ``random_regular`` at the same block size and equal density. "At least as accurate" is read
  as non-inferior within half a point: supported when the interval lies above -0.5 point.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from sparsetopo.report import stats
from sparsetopo.report.claims import ClaimResult
from sparsetopo.report.figures import COLORS, FigureResult, _save, plt
from sparsetopo.report.formats import POINTS, interval, number
from sparsetopo.report.locality import pooled_difference
from sparsetopo.report.results import constructions_in, label

BLOCK_STUDIED = 16          # the block size B1 and B3 speak about
DENSITY_MATCH = 1.35        # a block run's partner: nearest block-1 density within this factor
ROTATING = ("regular_rotating", "long_short_rotating", "fibonacci_rotating", "random_rotating")
NULL, BUTTERFLY, EXPANDER, DENSE = "random_edge", "butterfly", "random_regular", "fully_connected"
B2_BOOT = 500               # resamples for B2, whose statistic recomputes two fronts per draw
MARKERS = {1: "o", 2: "v", 4: "s", 8: "P", 16: "^", 32: "D", 64: "X"}
ARCH = ["hidden", "n_hidden_layers", "sizes"]
UNIT = "accuracy"

STATEMENTS = {
    "B1": f"at block {BLOCK_STUDIED}, a construction is within 1 point of its neuron-level accuracy at equal density",
    "B2": "at equal training time, the best block topology beats the best neuron-level one",
    "B3": f"the rotating constructions' locality lead over random_edge (L1) holds at block {BLOCK_STUDIED}",
    "B4": "butterfly is at least as accurate as random_regular at equal density",
}
RULES = {
    "B1": "supported: the interval of (block 16 minus block 1) lies above -1 point; not supported: below",
    "B2": "supported: the interval of (best block minus best neuron-level, mean over budgets) lies above 0",
    "B3": "supported: the interval of (raster lead minus permuted lead) lies above 0; not supported: below",
    "B4": "supported: the interval of (butterfly minus random_regular) lies above -0.5 point; not supported: below",
}
THRESHOLDS = {"B1": -0.01, "B2": 0.0, "B3": 0.0, "B4": -0.005}


def has_blocks(table: pd.DataFrame) -> bool:
    """Whether ``table`` holds runs on blocks of neurons (a ``block`` column above 1)."""
    return "block" in table and bool((table["block"].fillna(1) > 1).any())


def neuron_level_only(table: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The block-1 runs, with a note, when ``table`` also holds block runs; ``table`` otherwise.
    The paper's claims C1-C8 are about connections between neurons."""
    if not has_blocks(table):
        return table, []
    blocked = table["block"].fillna(1) > 1
    return table[~blocked], [f"{int(blocked.sum())} run(s) on blocks of neurons are left out of claims C1-C8 and "
                             f"their figures; they make the accuracy-per-second comparison (claims B1-B4)"]


@dataclass
class FrontierComparison:
    """What the report shows about blocks, training time and the butterfly."""

    claims: list[ClaimResult]
    table: tuple[list[str], list[list[str]]]
    figure: FigureResult | None = None
    notes: list[str] = field(default_factory=list)

    def section(self) -> tuple[str, str, tuple]:
        """(title, text, (header, rows)) for the documents."""
        text = ("Mean test accuracy (in %, over seeds; raster order) of each construction at each block size, "
                "at the block-1 density it is matched to (the nearest within a factor "
                f"{DENSITY_MATCH}); in brackets the difference from block 1 in points. Claims "
                + ", ".join(f"{c.id}: {c.verdict}" for c in self.claims) + ".")
        return "Accuracy per second: blocks, neurons and the butterfly", text, self.table

    def to_dict(self) -> dict:
        header, rows = self.table
        return {"claims": [c.to_dict() for c in self.claims], "table": [dict(zip(header, r)) for r in rows],
                "notes": self.notes}


def _prepare(runs: pd.DataFrame) -> pd.DataFrame:
    """The columns this module reads: ``block`` (1 when absent), ``hidden``, ``sizes``, ``order``,
    ``seconds`` (the run's training epochs, summed), and ``density_in`` replaced by the input
    layer's *nominal* density, ``k_in`` over the hidden layer's output blocks: what the run asked for. The realised density of ``random_edge``
    differs from seed to seed, and would split one cell into one cell per seed."""
    df = runs.copy()
    df["block"] = (df["block"] if "block" in df else pd.Series(1, index=df.index)).fillna(1).astype(int)
    df["hidden"] = df["hidden1"]
    # the hidden sizes as the store writes them ("300", "500,300"): what the table names
    df["sizes"] = (runs["hidden"] if "hidden" in runs else df["hidden1"]).astype(str)
    nominal = df["k_in"] / np.ceil(df["hidden1"] / df["block"])
    df["density_in"] = nominal.where(nominal.notna() & df["construction"].ne(DENSE), df["density_in"])
    permuted = df["permute_inputs"].notna() if "permute_inputs" in df else pd.Series(False, index=df.index)
    df["order"] = np.where(permuted, "permuted", "raster")
    # Training seconds: the epochs' own clocks summed, not the run's total, which also holds what
    # happens around them (a worker's first run loads or compiles its kernels, every run builds
    # its network and evaluates the test set after each epoch).
    if {"seconds_per_epoch", "epochs_done"} <= set(df.columns):
        trained = df["seconds_per_epoch"] * df["epochs_done"]
        df["seconds"] = trained.where(trained.notna(), df["seconds"] if "seconds" in df else np.nan)
    return df


def _by_seed(rows: pd.DataFrame, column: str = "test_accuracy") -> pd.Series:
    return rows.groupby("seed")[column].mean()


def _cells(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (architecture, construction, block, order, input density)."""
    keys = [*ARCH, "construction", "block", "order", "density_in"]
    return df.groupby(keys, dropna=False).size().rename("runs").reset_index()


def _partner(cells: pd.DataFrame, row, block: int, construction: str | None = None):
    """The density of the cell at ``block`` (same architecture, order and, unless given, construction)
    nearest to ``row``'s density within :data:`DENSITY_MATCH`; None when there is none."""
    same = cells[cells["hidden"].eq(row["hidden"]) & cells["n_hidden_layers"].eq(row["n_hidden_layers"])
                 & cells["order"].eq(row["order"]) & cells["block"].eq(block)
                 & cells["construction"].eq(construction or row["construction"])]
    if same.empty:
        return None
    ratio = np.abs(np.log(same["density_in"].to_numpy(float) / float(row["density_in"])))
    best = int(np.argmin(ratio))
    return float(same["density_in"].iloc[best]) if ratio[best] <= np.log(DENSITY_MATCH) else None


def _select(df: pd.DataFrame, row, block: int, density: float, construction: str | None = None,
            order: str | None = None) -> pd.DataFrame:
    return df[df["hidden"].eq(row["hidden"]) & df["n_hidden_layers"].eq(row["n_hidden_layers"])
              & df["order"].eq(order or row["order"]) & df["block"].eq(block)
              & df["construction"].eq(construction or row["construction"]) & np.isclose(df["density_in"], density)]


def _claim(cid: str, operationalisation: str) -> ClaimResult:
    return ClaimResult(cid, STATEMENTS[cid], operationalisation, "inconclusive", threshold=THRESHOLDS[cid],
                       unit=UNIT, rule=RULES[cid])


def _finish(claim: ClaimResult, estimate: stats.Estimate, pairs: int, unmatched: int) -> ClaimResult:
    claim.numbers.update({"cells": pairs, "cells_without_partner": unmatched, "estimate": estimate.to_dict()})
    if pairs == 0:
        claim.notes.append("no cell has a partner to compare with")
        return claim
    claim.value, claim.ci_low, claim.ci_high = (stats._clean(estimate.value), stats._clean(estimate.low),
                                                stats._clean(estimate.high))
    if not estimate.has_interval:
        claim.notes.append(f"fewer than {stats.MIN_RUNS} seeds in some group: no interval")
        return claim
    claim.verdict = stats.verdict_above(estimate, THRESHOLDS[claim.id])
    claim.notes.append(f"{pairs} cell(s): {number(estimate.value, POINTS)} points "
                       f"{interval(estimate.low, estimate.high, POINTS)}")
    return claim


def check_b1(df: pd.DataFrame, rng) -> ClaimResult:
    claim = _claim("B1", f"Cells: construction (fully connected excluded), architecture and input density of the "
                         f"raster-order block-{BLOCK_STUDIED} runs, each paired with the same construction's block-1 "
                         f"runs at the nearest density; block {BLOCK_STUDIED} minus block 1, pooled over cells.")
    cells = _cells(df)
    studied = cells[cells["block"].eq(BLOCK_STUDIED) & cells["order"].eq("raster") & cells["construction"].ne(DENSE)]
    pairs, unmatched = [], 0
    for _, row in studied.iterrows():
        density = _partner(cells, row, 1)
        if density is None:
            unmatched += 1
            continue
        pairs.append((_by_seed(_select(df, row, BLOCK_STUDIED, row["density_in"])), _by_seed(_select(df, row, 1, density))))
    return _finish(claim, pooled_difference(pairs, rng), len(pairs), unmatched)


def check_b3(df: pd.DataFrame, rng) -> ClaimResult:
    claim = _claim("B3", f"Cells: rotating construction, architecture and input density at block {BLOCK_STUDIED}, "
                         "with random_edge at the nearest density; per seed, the construction's raster minus "
                         "permuted accuracy, against random_edge's (the lead in raster order minus the lead on "
                         "permuted inputs), pooled over cells.")
    if not df["order"].eq("permuted").any():
        claim.notes.append("no runs on permuted inputs: the locality part of the lead cannot be measured")
        return claim
    cells = _cells(df)
    studied = cells[cells["block"].eq(BLOCK_STUDIED) & cells["order"].eq("raster") & cells["construction"].isin(ROTATING)]
    pairs, unmatched = [], 0
    for _, row in studied.iterrows():
        density = _partner(cells, row, BLOCK_STUDIED, NULL)
        if density is None:
            unmatched += 1
            continue

        def gap(construction, d):
            raster = _by_seed(_select(df, row, BLOCK_STUDIED, d, construction, "raster"))
            permuted = _by_seed(_select(df, row, BLOCK_STUDIED, d, construction, "permuted"))
            return (raster - permuted).dropna()   # seeds run in both orders

        pairs.append((gap(row["construction"], row["density_in"]), gap(NULL, density)))
    return _finish(claim, pooled_difference(pairs, rng), sum(len(a) > 0 and len(b) > 0 for a, b in pairs), unmatched)


def check_b4(df: pd.DataFrame, rng) -> ClaimResult:
    claim = _claim("B4", "Cells: block size, architecture and input density of the raster-order butterfly runs, "
                         "each paired with random_regular at the same block size and nearest density; butterfly "
                         "minus random_regular, pooled over cells.")
    cells = _cells(df)
    studied = cells[cells["construction"].eq(BUTTERFLY) & cells["order"].eq("raster")]
    pairs, unmatched = [], 0
    for _, row in studied.iterrows():
        density = _partner(cells, row, int(row["block"]), EXPANDER)
        if density is None:
            unmatched += 1
            continue
        pairs.append((_by_seed(_select(df, row, int(row["block"]), row["density_in"])),
                      _by_seed(_select(df, row, int(row["block"]), density, EXPANDER))))
    return _finish(claim, pooled_difference(pairs, rng), len(pairs), unmatched)


def fronts(times: np.ndarray, accuracy: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """The best accuracy reached within each budget: ``max(accuracy[times <= t])`` per ``t``,
    ``-inf`` where no configuration fits. ``times``/``accuracy`` may carry a trailing axis of
    bootstrap draws, which the result keeps."""
    fits = times[None, ...] <= budgets.reshape(-1, *([1] * times.ndim))
    return np.where(fits & np.isfinite(accuracy)[None, ...], accuracy[None, ...], -np.inf).max(axis=1)


def check_b2(df: pd.DataFrame, rng) -> ClaimResult:
    claim = _claim("B2", "Configurations: construction, block size, architecture and input density, raster order, "
                         "each with its mean accuracy and mean training seconds over seeds. For every budget "
                         "between the first time both kinds have a configuration and the longest mean time, the "
                         "best block configuration (block > 1) within the budget minus the best neuron-level one "
                         "(block 1); the mean over budgets, with an interval resampling seeds jointly.")
    raster = df[df["order"].eq("raster") & df["seconds"].notna()]
    keys = [*ARCH, "construction", "block", "density_in"]
    groups = list(raster.groupby(keys, dropna=False))
    if not groups:
        claim.notes.append("no timed raster-order runs")
        return claim
    seeds = sorted(raster["seed"].unique())
    acc = np.array([_by_seed(g).reindex(seeds).to_numpy(float) for _, g in groups])           # (configs, seeds)
    sec = np.array([_by_seed(g, "seconds").reindex(seeds).to_numpy(float) for _, g in groups])
    blocked = np.array([key[keys.index("block")] > 1 for key, _ in groups])
    if blocked.all() or not blocked.any():
        claim.notes.append("the store needs both block and neuron-level configurations")
        return claim
    mean_acc, mean_sec = np.nanmean(acc, axis=1), np.nanmean(sec, axis=1)
    start = max(mean_sec[blocked].min(), mean_sec[~blocked].min())
    budgets = np.unique(mean_sec[mean_sec >= start])
    value = float(np.mean(fronts(mean_sec[blocked], mean_acc[blocked], budgets)
                          - fronts(mean_sec[~blocked], mean_acc[~blocked], budgets)))
    claim.numbers.update({"configurations": len(groups), "block_configurations": int(blocked.sum()),
                          "budgets": len(budgets), "first_budget_seconds": float(start)})
    n = int(np.min(np.sum(np.isfinite(acc), axis=1)))
    estimate = stats.Estimate(value, float("nan"), float("nan"), n)
    if n >= stats.MIN_RUNS:
        drawn = rng.integers(0, len(seeds), size=(B2_BOOT, len(seeds)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)     # a configuration that drew none of its seeds
            boot_acc, boot_sec = np.nanmean(acc[:, drawn], axis=2), np.nanmean(sec[:, drawn], axis=2)
        boot_sec = np.where(np.isfinite(boot_sec), boot_sec, np.inf)
        gaps = (fronts(boot_sec[blocked], boot_acc[blocked], budgets)
                - fronts(boot_sec[~blocked], boot_acc[~blocked], budgets))        # (budgets, draws)
        gaps = np.where(np.isfinite(gaps), gaps, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            low, high = stats._percentiles(np.nanmean(gaps, axis=0), stats.LEVEL)
        estimate = stats.Estimate(value, low, high, n)
    return _finish(claim, estimate, len(budgets), 0)


def accuracy_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Per construction and block-1 density: mean accuracy at each block size, matched by density."""
    raster = df[df["order"].eq("raster")]
    blocks = sorted(raster["block"].unique())
    cells = _cells(raster)
    header = ["architecture", "construction", "input density (block 1)"] + [f"block {b}" for b in blocks]
    rows = []
    order = {c: i for i, c in enumerate(constructions_in(raster))}
    base = cells[cells["block"].eq(1)].assign(_c=lambda t: t["construction"].map(order))
    for _, row in base.sort_values(["hidden", "n_hidden_layers", "_c", "density_in"]).iterrows():
        reference = _select(raster, row, 1, row["density_in"])["test_accuracy"].mean()
        out = [f"hidden {row['sizes']}", row["construction"],
               f"{100 * row['density_in']:.3g}%"]
        for b in blocks:
            if b == 1:
                out.append(f"{100 * reference:.2f}")
                continue
            rows_b = cells[cells["block"].eq(b) & cells["construction"].eq(row["construction"])
                           & cells["hidden"].eq(row["hidden"]) & cells["n_hidden_layers"].eq(row["n_hidden_layers"])]
            match = [r for _, r in rows_b.iterrows() if _partner(cells, r, 1) == float(row["density_in"])]
            if not match:
                out.append("")
                continue
            acc = _select(raster, match[0], b, match[0]["density_in"])["test_accuracy"].mean()
            out.append(f"{100 * acc:.2f} ({number(acc - reference, POINTS)})")
        rows.append(out)
    return header, rows


def pareto_figure(df: pd.DataFrame, out_dir) -> FigureResult:
    """Test accuracy against training seconds, one point per raster-order run, with the front."""
    name, title = "frontier", "Accuracy per second of training"
    raster = df[df["order"].eq("raster") & df["seconds"].notna()]
    if raster.empty:
        return FigureResult(name, title, "", skipped="no timed raster-order runs")
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for construction in constructions_in(raster):
        for block, rows in raster[raster["construction"].eq(construction)].groupby("block"):
            ax.scatter(rows["seconds"], 100 * rows["test_accuracy"], s=22, alpha=0.75,
                       color=COLORS.get(construction, "tab:gray"), marker=MARKERS.get(int(block), "*"),
                       edgecolors="none")
    order = np.argsort(raster["seconds"].to_numpy(float))
    times = raster["seconds"].to_numpy(float)[order]
    best = np.maximum.accumulate(raster["test_accuracy"].to_numpy(float)[order])
    ax.step(times, 100 * best, where="post", color="black", linewidth=1.2, label="front (best within the time)")
    handles = [plt.Line2D([], [], color=COLORS.get(c, "tab:gray"), marker="o", linestyle="", label=label(c))
               for c in constructions_in(raster)]
    handles += [plt.Line2D([], [], color="gray", marker=MARKERS.get(int(b), "*"), linestyle="", label=f"block {b}")
                for b in sorted(raster["block"].unique())]
    handles.append(plt.Line2D([], [], color="black", label="front"))
    ax.legend(handles=handles, fontsize=7, ncol=2, loc="lower right")
    ax.set_xscale("log")
    # plain seconds on the log axis ("2", "3", "10"), not powers of ten ("2 x 10^0")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("training seconds (one thread)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    png, pdf = _save(fig, Path(out_dir), name)
    return FigureResult(name, title, "Each point is one run (raster-order inputs): colour the construction, shape the "
                        "block size. The black step is the front: the best test accuracy any run reached within "
                        "that many seconds of training.", png, pdf)


def compare_blocks(runs: pd.DataFrame, seed: int = 0, out_dir=None) -> FrontierComparison:
    """Claims B1-B4, the accuracy table and (with ``out_dir``) the Pareto figure of ``runs``
    (one data set and protocol, every block size and input order)."""
    df = _prepare(runs)
    claims = [check(df, stats.make_rng(seed, cid))
              for cid, check in (("B1", check_b1), ("B2", check_b2), ("B3", check_b3), ("B4", check_b4))]
    for claim in claims:
        claim.n_runs = len(df)
    comparison = FrontierComparison(claims, accuracy_table(df))
    if out_dir is not None:
        comparison.figure = pareto_figure(df, out_dir)
    return comparison
