"""The paper's figures remade from a results store: one function per figure.

Every function takes the analysis runs (see :func:`sparsetopo.report.results.analysis_slice`),
an output folder and a seeded Generator, writes ``<name>.png`` and ``<name>.pdf``, and returns a
:class:`FigureResult`. When the store lacks the runs a figure needs, the function raises
:class:`FigureSkipped` with the reason; :func:`make_figures` turns that into a skipped entry that
the report prints, so that a partial store never stops the report.

Curves are means over seeds; the shaded band is the 95% bootstrap interval of the mean wherever
a point has more than one seed (no band for single-seed points). Accuracy is shown in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sparsetopo.atomic import atomic_path  # noqa: E402
from sparsetopo.report import stats  # noqa: E402
from sparsetopo.report.pictures import draw_edge_matrix  # noqa: E402
from sparsetopo.report.results import (  # noqa: E402
    CONSTRUCTION_ORDER,
    constructions_in,
    figure2_hidden,
    fixed_k_out,
    label,
    single_layer,
)

COLORS = dict(zip(CONSTRUCTION_ORDER, ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange",
                                       "tab:brown", "black", "tab:olive"]))
DPI = 110
EXAMPLE_SHAPE = (48, 24, 5)  # the edge-matrix pictures: n_in, n_out, k
#: each figure's title, by file name
TITLES = {
    "fig2_accuracy_vs_degree": "Figure 2 (left): accuracy against input degree",
    "fig2_accuracy_contour": "Figure 2 (right): accuracy over both degrees",
    "fig3_constructions": "Figure 3: constructions at equal degree",
    "fig4_dropout_deep": "Figure 4: with dropout, and a deeper network",
    "fig5_connectivity": "Figure 5: algebraic connectivity and accuracy",
    "fig6_weights": "Figure 6: learned weight statistics",
    "edge_matrices": "Edge matrices of the constructions",
    "timing": "Training time per epoch",
}


class FigureSkipped(Exception):
    """The store lacks the runs a figure needs; the message says which."""


@dataclass
class FigureResult:
    name: str
    title: str
    caption: str
    png: Path | None = None
    pdf: Path | None = None
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def _save(fig, out_dir: Path, name: str) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, dpi=DPI, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths[0], paths[1]


def _result(fig, out_dir: Path, name: str, caption: str, notes: list[str] | None = None) -> FigureResult:
    """Save ``fig`` as ``name`` (:func:`_save`) and describe it under its title in :data:`TITLES`."""
    png, pdf = _save(fig, out_dir, name)
    return FigureResult(name, TITLES[name], caption, png, pdf, notes=notes or [])


def _cell_stats(rows: pd.DataFrame, x: str, y: str, rng) -> pd.DataFrame:
    """Per value of ``x``: mean of ``y`` and its bootstrap interval (NaN with a single seed)."""
    out = []
    for xv, g in rows.groupby(x):
        e = stats.mean_ci(g[y].to_numpy(float), rng)
        out.append((xv, e.value, e.low, e.high, e.n))
    return pd.DataFrame(out, columns=[x, "mean", "low", "high", "n"]).sort_values(x)


def _curve(ax, rows, x, y, rng, scale=1.0, **style):
    cells = _cell_stats(rows, x, y, rng)
    if cells.empty:
        return cells
    line, = ax.plot(cells[x], cells["mean"] * scale, marker="o", markersize=3.5, **style)
    band = cells[cells["n"] > 1]
    if not band.empty:
        ax.fill_between(band[x], band["low"] * scale, band["high"] * scale, color=line.get_color(),
                        alpha=0.18, linewidth=0)
    return cells


def _reference(ax, rows, rng, scale=100.0, text="fully connected"):
    """A horizontal line (and band) at the fully connected accuracy."""
    if rows.empty:
        return
    e = stats.mean_ci(rows["test_accuracy"].to_numpy(float), rng)
    ax.axhline(e.value * scale, color="black", linestyle="--", linewidth=1,
               label=f"{text} ({e.value * scale:.2f}%, n={e.n})")
    if e.has_interval:
        ax.axhspan(e.low * scale, e.high * scale, color="black", alpha=0.08, linewidth=0)


def _log_if_wide(ax, values, axis="x", percent=False):
    """Log scale when the values span more than 20x; ticks at the measured values when few.

    ``percent``: the values are fractions, labelled as percentages.
    """
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if not values.size:
        return
    target = ax.xaxis if axis == "x" else ax.yaxis
    fmt = (lambda v, _: f"{100 * v:.3g}%") if percent else (lambda v, _: f"{v:.4g}")
    if values.max() / values.min() > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        ticks = np.unique(values)
        if ticks.size <= 10:
            target.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        target.set_minor_formatter(matplotlib.ticker.NullFormatter())
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(fmt))


def _accuracy_axis(ax):
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)


def _finish_accuracy_panel(ax, title: str) -> None:
    """A panel of accuracies per construction: its y axis, title and legend."""
    _accuracy_axis(ax)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)


def _fig2_rows(runs):
    h = figure2_hidden(runs)
    if h is None:
        raise FigureSkipped("no one-hidden-layer runs without dropout")
    rows = single_layer(runs, dropout=False)
    return h, rows[rows["hidden1"].eq(h)]


# -- Figure 2 ------------------------------------------------------------------------------------

def figure2_degree(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Figure 2 (left): accuracy against the input layer's degree, regular construction.

    The paper: hidden layer 300, regular construction, "no precipitous drop off of accuracy until
    well below 10% of the connections remain". We use hidden 300 or the largest size present, the
    output degree held at one value, and mark 10% input density.
    """
    h, rows = _fig2_rows(runs)
    reg = fixed_k_out(rows[rows["construction"].eq("regular_rotating") | rows["is_full"]])
    sparse = reg[~reg["is_full"] & reg["construction"].eq("regular_rotating")]
    if sparse["k_in"].nunique() < 2:
        raise FigureSkipped(f"fewer than two input degrees of regular_rotating at hidden {h}")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    _curve(ax, sparse, "k_in", "test_accuracy", rng, scale=100.0, color=COLORS["regular_rotating"],
           label="Regular (mean over seeds, 95% CI)")
    _reference(ax, reg[reg["is_full"]], rng)
    ax.axvline(0.10 * h, color="0.5", linestyle=":", label="10% of connections")
    _log_if_wide(ax, sparse["k_in"])
    ax.set_xlabel(f"input-layer degree k (connections per input neuron, of {h})")
    _accuracy_axis(ax)
    top = ax.secondary_xaxis("top", functions=(lambda k: 100.0 * k / h, lambda d: d * h / 100.0))
    top.set_xlabel("input-layer density (%)")
    top.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    top.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    k_out = sparse["k_out"].iloc[0]
    ax.set_title(f"Regular, hidden {h}, output degree {k_out:g}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _result(fig, out_dir, "fig2_accuracy_vs_degree",
                   f"Test accuracy of regular_rotating networks with hidden layer {h} against the input "
                   f"layer's degree (output degree {k_out:g}); dashed: fully connected.")


def figure2_contour(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Figure 2 (right): contour of accuracy over (input degree, output degree), regular construction."""
    h, rows = _fig2_rows(runs)
    reg = rows[rows["construction"].eq("regular_rotating") & ~rows["is_full"]]
    grid = reg.groupby(["k_in", "k_out"])["test_accuracy"].mean().reset_index()
    if grid["k_in"].nunique() < 2 or grid["k_out"].nunique() < 2:
        raise FigureSkipped(f"regular_rotating at hidden {h} needs at least two input and two output degrees")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    table = grid.pivot(index="k_out", columns="k_in", values="test_accuracy")
    x, y, z = grid["k_in"].to_numpy(float), grid["k_out"].to_numpy(float), 100 * grid["test_accuracy"].to_numpy()
    if not table.isna().any().any():
        cs = ax.contourf(table.columns.to_numpy(float), table.index.to_numpy(float), 100 * table.to_numpy(),
                         levels=12, cmap="viridis")
    elif len(grid) >= 3:
        cs = ax.tricontourf(x, y, z, levels=12, cmap="viridis")
    else:
        plt.close(fig)
        raise FigureSkipped("too few (input, output) degree pairs for a contour")
    ax.scatter(x, y, s=12, color="white", edgecolors="black", linewidths=0.6, zorder=3, clip_on=False,
               label="measured cells")
    fig.colorbar(cs, ax=ax, label="test accuracy (%)")
    _log_if_wide(ax, x, "x")
    _log_if_wide(ax, y, "y")
    ax.set_xlabel(f"input-layer degree k_in (of {h} hidden neurons)")
    ax.set_ylabel("output-layer degree k_out (of the output neurons)")
    ax.set_title(f"Regular, hidden {h}: accuracy over both degrees", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return _result(fig, out_dir, "fig2_accuracy_contour",
                   f"Mean test accuracy of regular_rotating networks (hidden {h}) over the input and output "
                   f"layers' degrees; dots mark the measured cells.")


# -- Figure 3 ------------------------------------------------------------------------------------

def _by_construction(ax, rows, x, rng, constructions=None):
    for c in constructions or constructions_in(rows):
        part = rows[rows["construction"].eq(c) & ~rows["is_full"]]
        if not part.empty:
            _curve(ax, part, x, "test_accuracy", rng, scale=100.0, color=COLORS.get(c), label=label(c))


def figure3_constructions(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Figure 3: constructions compared at very sparse degrees (left) and across degrees (right).

    The paper: "constructions vary in performance at very sparse levels on the left, as well as
    for increasing levels of connectedness on the right". Same hidden size and output degree as
    Figure 2; the left panel keeps input densities below 10%.
    """
    h, rows = _fig2_rows(runs)
    rows = fixed_k_out(rows)
    sparse = rows[~rows["is_full"]]
    if sparse["construction"].nunique() < 2:
        raise FigureSkipped(f"fewer than two sparse constructions at hidden {h}")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    very = sparse[sparse["density_in"] < 0.10]
    if very.empty:
        left.text(0.5, 0.5, "no runs below 10% input density", ha="center", va="center", transform=left.transAxes)
        left.set_axis_off()
    else:
        cs = constructions_in(very)
        ks = sorted(very["k_in"].unique())
        width = 0.8 / len(cs)
        for i, c in enumerate(cs):
            cells = _cell_stats(very[very["construction"].eq(c)], "k_in", "test_accuracy", rng)
            pos = np.array([ks.index(k) for k in cells["k_in"]]) + (i - (len(cs) - 1) / 2) * width
            err = np.vstack([cells["mean"] - cells["low"], cells["high"] - cells["mean"]]) * 100
            err = np.where(np.isfinite(err), err, 0.0)
            left.bar(pos, cells["mean"] * 100, width, color=COLORS.get(c), label=label(c), yerr=err,
                     capsize=2, error_kw={"linewidth": 0.8})
        left.set_xticks(range(len(ks)), [f"{k:g}\n({100 * k / h:.1f}%)" for k in ks])
        left.set_xlabel("input-layer degree k (input density)")
        lo = np.nanmin(very.groupby(["construction", "k_in"])["test_accuracy"].mean()) * 100
        left.set_ylim(max(0.0, lo - 5), None)
        _accuracy_axis(left)
        left.set_title(f"very sparse (< 10% input density), hidden {h}", fontsize=10)
        left.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    _by_construction(right, sparse, "density_in", rng)
    _reference(right, rows[rows["is_full"]], rng)
    _log_if_wide(right, sparse["density_in"], percent=True)
    right.set_xlabel("input-layer density k / hidden size")
    _finish_accuracy_panel(right, f"across degrees, hidden {h}, output degree {sparse['k_out'].iloc[0]:g}")
    return _result(fig, out_dir, "fig3_constructions",
                   f"Test accuracy per construction, hidden {h}. Left: input densities below 10% "
                   f"(bars: mean, whiskers: 95% CI). Right: all densities; dashed: fully connected.")


# -- Figure 4 ------------------------------------------------------------------------------------

def figure4_dropout_deep(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Figure 4: constructions with dropout (0.2 input, 0.5 hidden; left) and the two-hidden-layer
    network 784-500-300-10 with both sparse degrees varied together and the last layer full (right).
    """
    drop = runs[runs["n_hidden_layers"].eq(1) & runs["has_dropout"]]
    deep = runs[runs["n_hidden_layers"].ge(2) & ~runs["has_dropout"]]
    if drop.empty and deep.empty:
        raise FigureSkipped("no runs with dropout and none with two hidden layers")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    notes = []
    for ax, rows, what in ((axes[0], drop, "dropout"), (axes[1], deep, "deep")):
        if rows.empty:
            ax.text(0.5, 0.5, f"no {what} runs in the store", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            notes.append(f"{what} panel empty: no such runs in the store")
            continue
        if what == "dropout":
            h = int(rows["hidden1"].max())
            rows = fixed_k_out(rows[rows["hidden1"].eq(h)])
            x, title = "density_in", (f"dropout {rows['dropout_in'].iloc[0]:g} / {rows['dropout_hidden'].iloc[0]:g}, "
                                      f"hidden {h}")
            ax.set_xlabel("input-layer density k / hidden size")
        else:
            arch = rows["hidden"].astype(str).value_counts().index[0]
            rows = rows[rows["hidden"].astype(str).eq(arch)].assign(net_density=lambda d: d["density"].fillna(d["density_in"]))
            x, title = "net_density", f"two hidden layers ({arch}), last layer full"
            ax.set_xlabel("network density (connections / fully connected)")
        _by_construction(ax, rows, x, rng)
        _reference(ax, rows[rows["is_full"]], rng)
        _log_if_wide(ax, rows[x], percent=True)
        _finish_accuracy_panel(ax, title)
    return _result(fig, out_dir, "fig4_dropout_deep",
                   "Left: one hidden layer trained with dropout. Right: two hidden layers, both sparse "
                   "degrees varied together, last layer fully connected. Dashed: fully connected.", notes=notes)


# -- Figure 5 ------------------------------------------------------------------------------------

def figure5_connectivity(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Figure 5: algebraic connectivity per construction against degree (left), accuracy against it (right).

    The paper names "algebraic connectivity" without plotting its definition; we plot the Fiedler
    value (second smallest Laplacian eigenvalue) of the input layer's bipartite graph on the left
    and of the whole network graph against accuracy on the right.
    """
    h, rows = _fig2_rows(runs)
    rows = rows[~rows["is_full"]]
    if rows["alg_conn_in"].notna().sum() < 2:
        raise FigureSkipped(f"no algebraic connectivity for sparse runs at hidden {h} (store columns are NULL "
                            f"and the topologies could not be rebuilt)")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    one_out = fixed_k_out(rows)
    for c in constructions_in(one_out):
        part = one_out[one_out["construction"].eq(c) & one_out["alg_conn_in"].notna()]
        if not part.empty:
            _curve(left, part, "k_in", "alg_conn_in", rng, color=COLORS.get(c), label=label(c))
    _log_if_wide(left, one_out["k_in"])
    left.set_xlabel(f"input-layer degree k (of {h})")
    left.set_ylabel("algebraic connectivity of input layer\n(2nd smallest Laplacian eigenvalue)")
    left.grid(True, alpha=0.3)
    left.set_title(f"connectivity per construction, hidden {h}", fontsize=10)
    left.legend(fontsize=7)
    col = "alg_conn_net" if rows["alg_conn_net"].notna().sum() >= 2 else "alg_conn_in"
    for c in constructions_in(rows):
        part = rows[rows["construction"].eq(c) & rows[col].notna()]
        right.scatter(part[col], part["test_accuracy"] * 100, s=12, alpha=0.75, color=COLORS.get(c), label=label(c))
    vals = rows[col].dropna()
    positive = vals[vals > 1e-9]
    if len(positive) and positive.max() / positive.min() > 20:
        # log scale that still shows disconnected graphs (connectivity 0) at the left edge
        low = 10.0 ** np.floor(np.log10(positive.min()))
        right.set_xscale("symlog", linthresh=low, linscale=0.5)
        decades = 10.0 ** np.arange(np.log10(low), np.ceil(np.log10(positive.max())) + 1)
        ticks = np.concatenate([[0.0], decades]) if (vals <= 0).any() else decades
        right.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(ticks))
        right.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        right.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    right.set_xlabel("algebraic connectivity of the " + ("whole network graph" if col == "alg_conn_net" else "input layer"))
    rho = stats.spearman(rows[col], rows["test_accuracy"])
    _finish_accuracy_panel(right, f"accuracy against connectivity (Spearman rho = {rho:.2f})")
    return _result(fig, out_dir, "fig5_connectivity",
                   f"Left: Fiedler value of the input layer per construction against degree (hidden {h}). "
                   f"Right: each sparse run's accuracy against its network's connectivity.")


# -- Figure 6 ------------------------------------------------------------------------------------

def figure6_weights(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Figure 6: max, min and standard deviation of the learned connected weights of the input
    layer against its degree, one curve per hidden size (the paper: they fall with both)."""
    rows = single_layer(runs, dropout=False)
    rows = rows[rows["w0_max"].notna()]
    if rows["k_in"].nunique() < 2:
        raise FigureSkipped("fewer than two input degrees with weight statistics")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    sizes = sorted(rows["hidden1"].dropna().unique())
    cmap = plt.get_cmap("viridis")
    for ax, (col, what) in zip(axes, (("w0_max", "maximum"), ("w0_min", "minimum"), ("w0_std", "standard deviation"))):
        for i, h in enumerate(sizes):
            part = rows[rows["hidden1"].eq(h)]
            _curve(ax, part, "k_in", col, rng, color=cmap(i / max(1, len(sizes) - 1) * 0.85), label=f"hidden {h:g}")
        _log_if_wide(ax, rows["k_in"])
        ax.set_xlabel("input-layer degree k (connections per input neuron)")
        ax.set_ylabel(f"{what} (weight value)")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"{what} of the input layer's connected weights", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return _result(fig, out_dir, "fig6_weights",
                   "Maximum, minimum and standard deviation of the trained input layer's connected "
                   "weights against its degree, averaged over constructions and seeds, per hidden size.")


# -- edge matrices and timing ------------------------------------------------------------------

def edge_matrices(runs: pd.DataFrame, out_dir, rng) -> FigureResult:
    """A picture of each construction's edge matrix on a small example (Section 3's figures)."""
    from sparsetopo.topology import CONSTRUCTIONS, build

    n, m, k = EXAMPLE_SHAPE
    names = list(CONSTRUCTIONS)
    cols = 4
    fig, axes = plt.subplots(-(-len(names) // cols), cols, figsize=(3.4 * cols, 3.2 * -(-len(names) // cols)),
                             squeeze=False)
    for ax, name in zip(axes.ravel(), names):
        topo = build(name, n, m, None if name == "fully_connected" else k, seed=0)
        draw_edge_matrix(ax, topo)
        ax.set_title(f"{label(name)}\nk = {topo.k}, density {topo.density:.2f}", fontsize=9)
        ax.set_xlabel("output neuron j", fontsize=8)
        ax.set_ylabel("input neuron i", fontsize=8)
    for ax in axes.ravel()[len(names):]:
        ax.set_axis_off()
    fig.suptitle(f"Edge matrices Adj[i][j] ({n} inputs x {m} outputs, black = connection, seed 0)")
    fig.tight_layout()
    return _result(fig, out_dir, "edge_matrices",
                   f"Every construction on a {n} x {m} layer with k = {k} (random ones with seed 0).")


def timing(runs_all_backends: pd.DataFrame, out_dir, rng) -> FigureResult:
    """Training time per epoch against network density, one curve per backend and architecture."""
    rows = runs_all_backends[runs_all_backends["seconds_per_epoch"].notna() & ~runs_all_backends["has_dropout"]]
    rows = rows.assign(net_density=rows["density"].fillna(rows["density_in"]), backend=rows["backend"].fillna("unknown"))
    rows = rows[rows["net_density"].notna()]
    if rows.empty:
        raise FigureSkipped("no run records its seconds per epoch and density")
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    styles = ["-", "--", ":", "-."]
    archs = rows["hidden"].astype(str).value_counts().index.tolist()[:4]
    for b_i, (backend, part) in enumerate(rows.groupby("backend")):
        for a_i, arch in enumerate(archs):
            sub = part[part["hidden"].astype(str).eq(arch)].assign(d=lambda d: d["net_density"].round(4))
            if not sub.empty:
                _curve(ax, sub, "d", "seconds_per_epoch", rng, color=plt.get_cmap("tab10")(b_i),
                       linestyle=styles[a_i], label=f"{backend}, hidden {arch}")
    _log_if_wide(ax, rows["net_density"], percent=True)
    _log_if_wide(ax, rows["seconds_per_epoch"], "y")
    ax.set_xlabel("network density (connections / fully connected)")
    ax.set_ylabel("training time per epoch (s)")
    ax.grid(True, alpha=0.3)
    ax.set_title("training time per epoch by backend", fontsize=10)
    ax.legend(fontsize=7)
    notes = []
    if "trained_with" in rows and rows["trained_with"].eq("population").any():
        notes.append(f"{int(rows['trained_with'].eq('population').sum())} of {len(rows)} runs were trained in "
                     f"populations (networks of one shape trained together); on one thread each member is "
                     f"clocked on its own, on more its time is the population's divided by its size")
    return _result(fig, out_dir, "timing",
                   "Seconds per training epoch against density, per backend (colour) and hidden sizes "
                   "(line style). The timing table's epochs (one network at a time, one core) are CPU "
                   "seconds of that core, which other jobs do not inflate; sweep runs' are a worker's "
                   "wall seconds, which may share the machine.", notes=notes)


FIGURES = {
    "fig2_accuracy_vs_degree": figure2_degree,
    "fig2_accuracy_contour": figure2_contour,
    "fig3_constructions": figure3_constructions,
    "fig4_dropout_deep": figure4_dropout_deep,
    "fig5_connectivity": figure5_connectivity,
    "fig6_weights": figure6_weights,
    "edge_matrices": edge_matrices,
    "timing": timing,
}


def make_figures(runs: pd.DataFrame, runs_all_backends: pd.DataFrame, out_dir, seed: int = 0) -> list[FigureResult]:
    """Every figure; one whose data is absent comes back with ``skipped`` set instead of files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for name, fn in FIGURES.items():
        data = runs_all_backends if name == "timing" else runs
        try:
            results.append(fn(data, out_dir, stats.make_rng(seed, "figure", name)))
        except FigureSkipped as exc:
            plt.close("all")
            results.append(FigureResult(name, TITLES[name], "", skipped=str(exc)))
    return results
