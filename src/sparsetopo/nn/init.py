"""Weight initialisers, computed per connection so both backends start from the same numbers.

The paper initialises with "a Glorot Gaussian" in Keras. We read it as Keras 2's
``glorot_normal``: a normal truncated at two standard deviations, with standard deviation
``sqrt(2 / (fan_in + fan_out)) / 0.8796...`` (the divisor restores the variance the truncation
removes), where fan_in and fan_out are the *dense* layer sizes. Biases start at zero.

``glorot_sparse`` uses each connection's real fan-in (the in-degree of its output neuron) and
fan-out (the out-degree of its input neuron) instead, which keeps pre-activations of very
sparse layers at the scale Glorot intended (with dense fans, a neuron with k of n inputs starts
with a pre-activation variance k/n times too small; see docs/design.md).
"""

from __future__ import annotations

import numpy as np

from sparsetopo.errors import SparsetopoError
from sparsetopo.topology import Topology

TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]

INITIALISERS = ("glorot", "glorot_sparse")


def truncated_normal(gen: np.random.Generator, size: int) -> np.ndarray:
    """Unit normal samples truncated to [-2, 2] by redrawing the ones outside."""
    z = gen.standard_normal(size)
    bad = np.abs(z) > 2
    while bad.any():
        z[bad] = gen.standard_normal(int(bad.sum()))
        bad = np.abs(z) > 2
    return z


def connection_std(topology: Topology, init: str) -> np.ndarray | float:
    """Standard deviation of each connection's initial weight (scalar for dense Glorot)."""
    if init == "glorot":
        return np.sqrt(2.0 / (topology.n_in + topology.n_out)) / TRUNCATED_NORMAL_STD
    if init == "glorot_sparse":
        fan_in = topology.in_degrees[topology.indices]
        fan_out = topology.out_degrees[topology.rows]
        return np.sqrt(2.0 / (fan_in + fan_out)) / TRUNCATED_NORMAL_STD
    raise SparsetopoError(f"unknown initialiser {init!r}: choose one of {', '.join(INITIALISERS)}")


def initial_weights(topology: Topology, init: str, gen: np.random.Generator) -> np.ndarray:
    """Initial weight of every connection, in the topology's CSR order (float32, length nnz)."""
    std = connection_std(topology, init)
    return (truncated_normal(gen, topology.nnz) * std).astype(np.float32)
