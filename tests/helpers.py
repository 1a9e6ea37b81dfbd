"""Helpers shared by the test modules (imported as ``from helpers import ...``)."""

import torch


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| relative to the largest |ref|."""
    a, ref = a.detach(), ref.detach()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def layer_pair(topology, backend: str = "sparse", seed: int = 3):
    """``(masked, other)``: the same layer on the masked backend and on ``backend``, with the same
    initial weights and the same non-zero bias."""
    import numpy as np

    from sparsetopo.nn import SparseLinear

    masked = SparseLinear(topology, gen=np.random.default_rng(seed), backend="masked")
    other = SparseLinear(topology, gen=np.random.default_rng(seed), backend=backend)
    with torch.no_grad():
        masked.bias.copy_(torch.linspace(-1, 1, topology.n_out))
        other.bias.copy_(masked.bias)
    return masked, other
