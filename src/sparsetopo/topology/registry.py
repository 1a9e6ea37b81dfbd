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


def build(construction: str, n_in: int, n_out: int, k: int | None = None, seed: int = 0) -> Topology:
    """Build one layer's topology.

    Parameters
    ----------
    construction : a name in :data:`CONSTRUCTIONS`.
    n_in, n_out : layer sizes, each >= 1.
    k : degree, 1 <= k <= n_out. Optional for ``fully_connected`` (where it must equal n_out).
    seed : seed of the random constructions (deterministic ones record it and ignore it).

    Raises
    ------
    SparsetopoError naming the bad value and the valid range.
    """
    spec = get_construction(construction)
    n_in = check_int("n_in", n_in, 1)
    n_out = check_int("n_out", n_out, 1)
    if spec.name == "fully_connected":
        if k is not None and check_int("k", k, 1, n_out) != n_out:
            raise SparsetopoError(
                f"k={k} does not fit fully_connected with n_out={n_out}: use k={n_out} or omit k"
            )
        k = n_out
    elif k is None:
        raise SparsetopoError(f"{spec.name} needs a degree k with 1 <= k <= n_out={n_out}")
    else:
        k = check_int("k", k, 1, n_out)
    seed = check_int("seed", seed, 0)
    _check_fits_in_memory(n_in, n_out, k)
    topo = spec.function(n_in, n_out, k, seed)
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
) -> list[Topology]:
    """Topologies for a multi-layer network, e.g. ``sizes=[784, 300, 10]``, ``degrees=[30, 10]``.

    ``constructions`` is one name for every layer or one per layer. Layer ``l`` is built with the
    seed ``derive_seed(seed, "layer", l)`` so that random layers differ from each other.
    """
    n_layers = len(sizes) - 1
    if n_layers < 1:
        raise SparsetopoError(f"sizes={list(sizes)} needs at least two entries (input and output)")
    names = [constructions] * n_layers if isinstance(constructions, str) else list(constructions)
    for what, values in (("constructions", names), ("degrees", list(degrees))):
        if len(values) != n_layers:
            raise SparsetopoError(
                f"{what}={values} has {len(values)} entries; layer sizes {list(sizes)} need {n_layers} (one per layer)"
            )
    return [
        build(names[l], sizes[l], sizes[l + 1], degrees[l], derive_seed(seed, "layer", l))
        for l in range(n_layers)
    ]
