"""Name -> construction registry and the single :func:`build` entry point.

Every construction is listed once here with its version. Bump a version whenever a change
alters the masks that construction returns for some (n_in, n_out, k, seed): sweep run ids
include it, so stored results are never silently mixed with new masks.
"""

from __future__ import annotations

import os

from dataclasses import dataclass
from typing import Callable, Sequence

from sparsetopo.errors import SparsetopoError, check_int
from sparsetopo.seeding import derive_seed
from sparsetopo.topology import blocks
from sparsetopo.topology import constructions as c
from sparsetopo.topology.value import Topology


@dataclass(frozen=True)
class Construction:
    name: str
    function: Callable[..., Topology]
    random: bool  # does the seed change the mask?
    version: int
    summary: str


CONSTRUCTIONS: dict[str, Construction] = {
    spec.name: spec
    for spec in [
        Construction("fully_connected", c.fully_connected, False, 1, "every input feeds every output (k = n_out)"),
        Construction("random_edge", c.random_edge, True, 1, "each edge independently with probability k/n_out"),
        Construction("random_rotating", c.random_rotating, True, 1, "k random positions, rotated per input"),
        Construction("random_regular", c.random_regular, True, 1, "random biregular expander: out-degree k, balanced in-degree"),
        Construction("regular_rotating", c.regular_rotating, False, 1, "input i feeds i..i+k-1 (mod n_out)"),
        Construction("long_short_rotating", c.long_short_rotating, False, 1, "ceil(k/2) near outputs, floor(k/2) evenly spread"),
        Construction("fibonacci_rotating", c.fibonacci_rotating, False, 1, "outputs at Fibonacci offsets 0,1,2,3,5,8,..."),
        Construction("butterfly", c.butterfly, False, 1, "flat butterfly: input i feeds i and i XOR 1, 2, 4, ..."),
    ]
}


def get_construction(name: str) -> Construction:
    """The registered construction called ``name``; the error lists the valid names."""
    try:
        return CONSTRUCTIONS[name]
    except (KeyError, TypeError):
        raise SparsetopoError(
            f"unknown construction {name!r}: choose one of {', '.join(CONSTRUCTIONS)}"
        ) from None


def build(construction: str, n_in: int, n_out: int, k: int | None = None, seed: int = 0,
          block: int | tuple[int, int] = 1) -> Topology:
    """Build one layer's topology.

    Parameters
    ----------
    construction : a name in :data:`CONSTRUCTIONS`.
    n_in, n_out : layer sizes, each >= 1.
    k : degree, 1 <= k <= n_out (with blocks: output blocks per input block, 1 <= k <=
        ceil(n_out / b_out)). Optional for ``fully_connected`` (where it must be the maximum).
    seed : seed of the random constructions (deterministic ones record it and ignore it).
    block : neurons per block, one int for both sides or ``(b_in, b_out)``; 1 (the default)
        is the ordinary layer. Above 1 the construction runs on the graph of
        ``ceil(n_in/b_in) x ceil(n_out/b_out)`` blocks, and the result is its lift to neurons,
        every block edge a dense tile, the last block of a side truncated when the block size
        does not divide the width (see :mod:`sparsetopo.topology.blocks`).

    Raises
    ------
    SparsetopoError naming the bad value and the valid range.

    Examples
    --------
    The paper's input layer at 10% density, and the same construction on blocks of 16 neurons:

    >>> from sparsetopo import build
    >>> layer = build("regular_rotating", 784, 300, k=30)
    >>> layer.density, int(layer.out_degrees.min()), int(layer.out_degrees.max())
    (0.1, 30, 30)
    >>> blocked = build("regular_rotating", 1024, 1024, k=6, block=16)   # 6 of 64 output blocks
    >>> blocked.density, blocked.nnz == 1024 * 6 * 16
    (0.09375, True)
    """
    spec = get_construction(construction)
    n_in = check_int("n_in", n_in, 1)
    n_out = check_int("n_out", n_out, 1)
    b_in, b_out = blocks.block_sizes(block, n_in, n_out)
    rows, cols = blocks.n_blocks(n_in, b_in), blocks.n_blocks(n_out, b_out)
    where = "" if (b_in, b_out) == (1, 1) else f" output blocks of {b_out} (ceil({n_out}/{b_out}) = {cols})"
    label = "k" if not where else f"k (with{where})"
    if spec.name == "fully_connected":
        if k is not None and check_int(label, k, 1, cols) != cols:
            raise SparsetopoError(
                f"k={k} does not fit fully_connected with n_out={n_out}{where}: use k={cols} or omit k"
            )
        k = cols
    elif k is None:
        bound = f"n_out={n_out}" if not where else f"the number of{where}"
        raise SparsetopoError(f"{spec.name} needs a degree k with 1 <= k <= {bound}")
    else:
        k = check_int(label, k, 1, cols)
    seed = check_int("seed", seed, 0)
    _check_fits_in_memory(n_in, n_out, k * b_out)
    topo = spec.function(rows, cols, k, seed)
    if (b_in, b_out) != (1, 1):
        indptr, indices = blocks.lift(topo.indptr, topo.indices, n_in, n_out, b_in, b_out)
        topo = Topology(n_in, n_out, topo.construction, k, topo.seed, indptr=indptr, indices=indices,
                        block_in=b_in, block_out=b_out)
    object.__setattr__(topo, "version", spec.version)  # the registry owns the version
    return topo


#: Bytes a topology holds per connection (int32 output, int64 input, with room for the
#: construction's working copies) and per neuron (the int64 row pointers).
BYTES_PER_CONNECTION = 24
BYTES_PER_NEURON = 16


def _check_fits_in_memory(n_in: int, n_out: int, k: int) -> None:
    """Refuse a layer whose index arrays cannot fit in this machine's memory, naming the sizes,
    before numpy fails part-way with a MemoryError."""
    need = BYTES_PER_CONNECTION * n_in * k + BYTES_PER_NEURON * (n_in + n_out)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): let numpy decide
        return
    if need > memory:
        raise SparsetopoError(f"n_in={n_in:,} inputs with k={k:,} connections each ({n_in * k:,} connections) need "
                              f"about {need / 2**30:,.0f} GiB, more than this machine's {memory / 2**30:,.0f} GiB of "
                              "memory: choose a smaller n_in or k")


def build_stack(
    sizes: Sequence[int],
    constructions: str | Sequence[str],
    degrees: Sequence[int | None],
    seed: int = 0,
    block: int | tuple[int, int] = 1,
    blocks: Sequence[int | tuple[int, int]] | None = None,
) -> list[Topology]:
    """Topologies for a multi-layer network, e.g. ``sizes=[784, 300, 10]``, ``degrees=[30, 10]``.

    ``constructions`` is one name for every layer or one per layer. Layer ``l`` is built with the
    seed ``derive_seed(seed, "layer", l)`` so that random layers differ from each other.
    ``block`` is every layer's block size (see :func:`build`); ``blocks``, when given, one per
    layer instead.
    """
    n_layers = len(sizes) - 1
    if n_layers < 1:
        raise SparsetopoError(f"sizes={list(sizes)} needs at least two entries (input and output)")
    names = [constructions] * n_layers if isinstance(constructions, str) else list(constructions)
    blocks = [block] * n_layers if blocks is None else list(blocks)
    for what, values in (("constructions", names), ("degrees", list(degrees)), ("blocks", blocks)):
        if len(values) != n_layers:
            raise SparsetopoError(
                f"{what}={values} has {len(values)} entries; layer sizes {list(sizes)} need {n_layers} (one per layer)"
            )
    return [
        build(names[l], sizes[l], sizes[l + 1], degrees[l], derive_seed(seed, "layer", l), block=blocks[l])
        for l in range(n_layers)
    ]
