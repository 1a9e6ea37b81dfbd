"""Pictures of a topology: its edge matrix and, for small layers, its bipartite graph.

The paper (Section 3.2.1) shows the regular construction's edge matrix beside its graph; we
draw the same for any construction. Matplotlib's Agg backend is used so that no screen is needed.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sparsetopo.atomic import atomic_path  # noqa: E402
from sparsetopo.topology.value import Topology  # noqa: E402

GRAPH_MAX_NODES = 80  # above this many neurons the bipartite drawing is an unreadable hairball
MATRIX_MAX_PIXELS = 4096  # larger edge matrices are shown block-averaged (density per block)
BLOCK_GRID_MAX_LINES = 64  # a block layer's block boundaries are drawn up to this many per side


def edge_matrix_image(topology: Topology) -> np.ndarray:
    """The mask as a float image, block-averaged to at most MATRIX_MAX_PIXELS per side."""
    n, m = topology.shape
    bn = -(-n // MATRIX_MAX_PIXELS)
    bm = -(-m // MATRIX_MAX_PIXELS)
    if bn == 1 and bm == 1:
        return topology.mask().astype(float)
    image = np.zeros((-(-n // bn), -(-m // bm)))
    np.add.at(image, (topology.rows // bn, topology.indices // bm), 1.0)
    return image / (bn * bm)


def draw_edge_matrix(ax, topology: Topology) -> None:
    ax.imshow(edge_matrix_image(topology), cmap="Greys", vmin=0, vmax=1,
              interpolation="nearest", aspect="auto")
    ax.set_xlabel(f"output neuron j (0..{topology.n_out - 1})")
    ax.set_ylabel(f"input neuron i (0..{topology.n_in - 1})")
    ax.set_title(f"edge matrix Adj[i][j] (black = connection), density {topology.density:.3f}")
    if topology.is_blocked:
        _draw_block_grid(ax, topology)


def _draw_block_grid(ax, topology: Topology) -> None:
    """Thin lines between a block layer's blocks (where there are few enough to see), so its
    tiles read as the graph of blocks the construction ran on."""
    n, m = topology.shape
    scale_n, scale_m = -(-n // MATRIX_MAX_PIXELS), -(-m // MATRIX_MAX_PIXELS)  # image pixels per neuron
    for size, total, scale, line in ((topology.block_in, n, scale_n, ax.axhline),
                                     (topology.block_out, m, scale_m, ax.axvline)):
        edges = np.arange(size, total, size)
        if 0 < edges.size <= BLOCK_GRID_MAX_LINES:
            for edge in edges:
                line(edge / scale - 0.5, color="tab:blue", linewidth=0.5, alpha=0.5)


def draw_bipartite(ax, topology: Topology) -> None:
    n, m = topology.shape
    y_in = np.linspace(1, 0, n) if n > 1 else np.array([0.5])
    y_out = np.linspace(1, 0, m) if m > 1 else np.array([0.5])
    segments = np.stack(
        [np.column_stack([np.zeros(topology.nnz), y_in[topology.rows]]),
         np.column_stack([np.ones(topology.nnz), y_out[topology.indices]])], axis=1)
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segments, colors="0.4", linewidths=0.6, alpha=0.7))
    ax.scatter(np.zeros(n), y_in, s=25, color="tab:blue", zorder=3, label=f"inputs ({n})")
    ax.scatter(np.ones(m), y_out, s=25, color="tab:orange", zorder=3, label=f"outputs ({m})")
    ax.set_xlim(-0.15, 1.15)
    ax.set_ylim(-0.05, 1.1)
    ax.axis("off")
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    ax.set_title("bipartite graph")


def draw_topology(topology: Topology, path) -> Path:
    """Write the edge matrix (and the graph, for small layers) to ``path`` (PNG, PDF or SVG)."""
    with_graph = topology.n_in + topology.n_out <= GRAPH_MAX_NODES
    fig, axes = plt.subplots(1, 2 if with_graph else 1, figsize=(11 if with_graph else 6, 5),
                             squeeze=False)
    draw_edge_matrix(axes[0, 0], topology)
    if with_graph:
        draw_bipartite(axes[0, 1], topology)
    blocks = f" blocks of {topology.block_in}x{topology.block_out}" if topology.is_blocked else ""
    fig.suptitle(f"{topology.construction}: {topology.n_in} x {topology.n_out}, k = {topology.k}{blocks}")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", dpi=120)
    plt.close(fig)
    return path
