"""One figure per architecture of the paper's future work (claims F1-F5, :mod:`.future`).

Two panels, the inputs in their own order and under the architecture's null (``permute_inputs``):
each construction's mean test accuracy against density, with whiskers spanning its seeds'
lowest and highest accuracy, and the dense networks' mean as a dashed line.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sparsetopo.report.figures import FigureResult, _save, plt

__all__ = ["architecture_figures"]

NULLS = {"cnn": "input channels of every sparsified conv permuted", "lstm": "pixels permuted within each row"}
WHAT = {"cnn": "channel density of the sparsified convs", "lstm": "density of W_ih and W_hh"}


def architecture_figures(runs: pd.DataFrame, out_dir) -> list[FigureResult]:
    """A figure per architecture in ``runs`` (the cnn and lstm runs of a store), saved in ``out_dir``."""
    out = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for kind, part in runs[runs["status"].eq("ok")].groupby("architecture", sort=True):
        out.append(_figure(str(kind), part, Path(out_dir)))
    return out


def _figure(kind: str, runs: pd.DataFrame, out_dir: Path) -> FigureResult:
    name, title = f"future_{kind}", f"{kind.upper()}: accuracy against density, own order and null"
    orders = [("own order", runs[runs["permute_inputs"].isna()]), (NULLS[kind], runs[runs["permute_inputs"].notna()])]
    orders = [(label, rows) for label, rows in orders if len(rows)]
    fig, axes = plt.subplots(1, len(orders), figsize=(5.2 * len(orders), 4.2), sharey=True, squeeze=False)
    for ax, (label, rows) in zip(axes[0], orders):
        dense = rows[rows["construction"].eq("fully_connected")]["test_accuracy"]
        if len(dense):
            ax.axhline(dense.mean(), color="black", linestyle="--", linewidth=1, label="dense")
        for construction, group in rows[rows["construction"].ne("fully_connected")].groupby("construction"):
            stats = group.groupby("arch_density")["test_accuracy"].agg(["mean", "min", "max"]).sort_index()
            ax.errorbar(stats.index, stats["mean"], yerr=[stats["mean"] - stats["min"], stats["max"] - stats["mean"]],
                        marker="o", capsize=3, label=construction)
        ax.set_xscale("log")
        densities = sorted(rows.loc[rows["construction"].ne("fully_connected"), "arch_density"].unique())
        ax.set_xticks(densities, [f"{100 * d:g}%" for d in densities])
        ax.minorticks_off()
        ax.set_title(label)
        ax.set_xlabel(WHAT[kind])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][-1].legend(fontsize=8)
    png, pdf = _save(fig, out_dir, name)
    caption = (f"{kind} runs: each construction's mean test accuracy over seeds against {WHAT[kind]} (whiskers: "
               f"lowest and highest seed), the dense networks' mean dashed; left the inputs in their own order, "
               f"right with the null ({NULLS[kind]}).")
    return FigureResult(name, title, caption, png, pdf)
