"""Grid blocks that would train a sparse construction fully connected, by accident.

A block that names ``random_edge`` or ``regular_rotating`` but gives no degree axis (and no
``[protocol] degrees``) trains every layer with k = n_out: density 1.0, the same network as
``fully_connected``, and nothing in the results says so. :func:`dense_cells` finds such cells;
:func:`check_dense` warns (:class:`DenseGridWarning`, which library users can filter) or, with
``strict``, refuses (:class:`DenseGridError`). A dense cell among sparse ones of the same
construction (``degrees_in = [3, 30, "full"]``) is a deliberate reference point and is left
alone: only a construction that the block trains *only* dense is reported.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from sparsetopo.errors import SparsetopoError, SparsetopoWarning
from sparsetopo.sweep.spec import SweepSpec, expand

__all__ = ["DenseCell", "DenseGridError", "DenseGridWarning", "check_dense", "dense_cells"]

DENSE_CONSTRUCTIONS = ("fully_connected",)   # dense by design: never reported


class DenseGridWarning(SparsetopoWarning):
    """A sweep spec trains a sparse construction with every layer fully connected."""


class DenseGridError(SparsetopoError):
    """The same finding as :class:`DenseGridWarning`, refused (``strict``)."""


@dataclass(frozen=True)
class DenseCell:
    """A construction a grid block trains only fully connected, at one hidden size."""

    block: str                # the block's name: [grid.NAME]
    construction: str
    hidden: tuple[int, ...]


def dense_cells(spec: SweepSpec, data_dir=None) -> list[DenseCell]:
    """Every (block, construction, hidden) whose runs are all dense although the construction
    is a sparse one, in the spec's order."""
    cells = []
    for name, block in spec.blocks:
        sparse: dict[tuple, bool] = {}   # (construction, hidden) -> has a cell with a sparse layer
        for config in expand(replace(spec, blocks=((name, block),)), data_dir=data_dir):
            if config.construction not in DENSE_CONSTRUCTIONS:
                key = (config.construction, config.hidden)
                sparse[key] = sparse.get(key, False) or config.degrees is not None or config.density < 1
        cells.extend(DenseCell(name, construction, hidden)
                     for (construction, hidden), any_sparse in sparse.items() if not any_sparse)
    return cells


def dense_message(spec: SweepSpec, cells: list[DenseCell]) -> str:
    """One line naming the cells and the keys that would make them sparse."""
    by_block: dict[str, list[str]] = {}
    for cell in cells:
        what = f"{cell.construction} (hidden {','.join(map(str, cell.hidden))})"
        by_block.setdefault(cell.block, []).append(what)
    where = "; ".join(f"[grid.{block}] {', '.join(names)}" for block, names in by_block.items())
    return (f"sweep spec {spec.source} trains sparse constructions with every layer fully connected "
            f"(density 1.0, the same networks as fully_connected): {where}. Add degrees_in or densities_in "
            f"(or degrees, one per layer; density for a cnn or lstm) to those blocks, or train them as fully_connected")


def check_dense(spec: SweepSpec, strict: bool = False, data_dir=None, stacklevel: int = 2) -> list[DenseCell]:
    """Warn once for ``spec`` (:class:`DenseGridWarning`) when :func:`dense_cells` finds any;
    with ``strict`` raise :class:`DenseGridError` instead. Returns the cells found."""
    cells = dense_cells(spec, data_dir=data_dir)
    if cells:
        message = dense_message(spec, cells)
        if strict:
            raise DenseGridError(f"{message} (refused as strict; without --strict it is a warning)")
        warnings.warn(message, DenseGridWarning, stacklevel=stacklevel + 1)
    return cells
