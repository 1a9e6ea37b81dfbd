"""Helpers shared by the test modules (imported as ``from helpers import ...``)."""

import torch


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    """max |a - ref| relative to the largest |ref|."""
    a, ref = a.detach(), ref.detach()
    return float((a - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
