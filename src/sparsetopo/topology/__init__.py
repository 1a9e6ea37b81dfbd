"""Layer topologies: pure numpy/scipy, no torch.

``build(name, n_in, n_out, k, seed)`` makes one layer; ``build_stack`` makes a network's layers.
"""

from sparsetopo.topology.constructions import (
    fibonacci_positions,
    long_short_positions,
    regular_positions,
)
from sparsetopo.topology.registry import CONSTRUCTIONS, Construction, build, build_stack, get_construction
from sparsetopo.topology.value import Topology

__all__ = [
    "CONSTRUCTIONS",
    "Construction",
    "Topology",
    "build",
    "build_stack",
    "get_construction",
    "fibonacci_positions",
    "long_short_positions",
    "regular_positions",
]
