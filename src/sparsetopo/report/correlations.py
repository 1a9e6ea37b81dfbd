"""Graph measures against test accuracy: the paper's Section 4.5 claim, with intervals.

The paper states that accuracy follows "expander-like" properties of the layer graphs
(spectral gap, algebraic connectivity) rather than their density, and shows a scatter plot
(Figure 5) without a statistic. For every stored run we take the graph measures the sweep
stored (``metrics`` JSON: per layer and for the whole network) and report Pearson's r and
Spearman's rho with test accuracy, each with a 95% bootstrap interval, over all runs, per
construction and per hidden size. Density is listed as a measure too so that the claim
"connectivity more than density" can be read off the same table.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from sparsetopo.report.stats import correlation_ci, make_rng

#: (column name, where it comes from in a run's ``metrics`` JSON: ("layers", 0) or ("network",), key)
MEASURES: dict[str, tuple[tuple, str]] = {
    "algebraic_connectivity_in": (("layers", 0), "algebraic_connectivity"),
    "spectral_gap_in": (("layers", 0), "spectral_gap"),
    "normalized_spectral_gap_in": (("layers", 0), "normalized_spectral_gap"),
    "ramanujan_margin_in": (("layers", 0), "ramanujan_margin"),
    "paper_laplacian_second_largest_in": (("layers", 0), "paper_laplacian_second_largest"),
    "algebraic_connectivity_net": (("network",), "algebraic_connectivity"),
    "spectral_gap_net": (("network",), "spectral_gap"),
    "normalized_spectral_gap_net": (("network",), "normalized_spectral_gap"),
}
DENSITY_COLUMNS = ("density_in", "density")


def _lookup(metrics: dict, path: tuple, key: str):
    node = metrics
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node.get(key) if isinstance(node, dict) else None


def measure_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per finished run: construction, hidden size, accuracy, densities and every measure."""
    ok = runs[runs["status"] == "ok"]
    parsed = [json.loads(m) if isinstance(m, str) else {} for m in ok["metrics"]]
    table = ok[["run_id", "construction", "hidden", "test_accuracy", *DENSITY_COLUMNS]].copy()
    for name, (path, key) in MEASURES.items():
        table[name] = pd.to_numeric(pd.Series([_lookup(m, path, key) for m in parsed], index=ok.index),
                                    errors="coerce")
    return table.reset_index(drop=True)


def correlations(runs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Pearson and Spearman correlation (with 95% bootstrap CIs) of each measure with accuracy.

    Rows: scope "all" (every run), "construction" and "hidden" (one group each); columns
    ``scope, group, measure, n, pearson, pearson_low, pearson_high, spearman, spearman_low,
    spearman_high``. Groups with fewer than 4 runs, or a constant measure, give NaN.
    """
    table = measure_table(runs)
    groups = [("all", "all", table)]
    groups += [("construction", name, part) for name, part in table.groupby("construction", sort=True)]
    groups += [("hidden", name, part) for name, part in table.groupby("hidden", sort=True)]
    rows = []
    for scope, group, part in groups:
        for measure in (*MEASURES, *DENSITY_COLUMNS):
            pair = part[[measure, "test_accuracy"]].dropna()
            row = {"scope": scope, "group": str(group), "measure": measure, "n": len(pair)}
            for method in ("pearson", "spearman"):
                est = correlation_ci(pair[measure].to_numpy(), pair["test_accuracy"].to_numpy(),
                                     make_rng(seed, "correlations", scope, str(group), measure, method), method)
                row.update({method: est.value, f"{method}_low": est.low, f"{method}_high": est.high})
            rows.append(row)
    return pd.DataFrame(rows)


def plot_correlations(table: pd.DataFrame, path_stem) -> list:
    """Bar chart of Spearman's rho (with CI whiskers) per measure, over all runs; PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sparsetopo.atomic import atomic_path

    rows = table[table["scope"] == "all"].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))
    rho = rows["spearman"].to_numpy(dtype=float)
    err = np.vstack([rho - rows["spearman_low"].to_numpy(dtype=float), rows["spearman_high"].to_numpy(dtype=float) - rho])
    colors = ["tab:gray" if m in DENSITY_COLUMNS else "tab:blue" for m in rows["measure"]]
    ax.barh(y, np.nan_to_num(rho), xerr=np.nan_to_num(err), color=colors, capsize=3)
    ax.set_yticks(y, [f"{m} (n={n})" for m, n in zip(rows["measure"], rows["n"])])
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlim(-1, 1)
    ax.set_xlabel("Spearman's rho with test accuracy (95% bootstrap CI); grey = density")
    ax.set_title("Graph measures against accuracy, all runs")
    fig.tight_layout()
    written = []
    for suffix in (".png", ".pdf"):
        target = path_stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120)
        written.append(target)
    plt.close(fig)
    return written
