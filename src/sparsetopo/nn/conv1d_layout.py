"""The state_dict of a sparse layer that replaced Hugging Face's ``Conv1D`` keeps ``Conv1D``'s layout.

``transformers``' ``Conv1D`` (GPT-2's projections) stores its weight ``(in, out)``, the
transpose of ``nn.Linear``'s. :func:`~sparsetopo.nn.sparsify` replaces it by a sparse linear
layer, whose weight is ``(out, in)``; the model's ``state_dict`` would then no longer load into
the dense model it came from (``from_pretrained``, a dense twin), nor take a dense checkpoint.
:func:`keep_conv1d_layout` makes the layer write its ``weight`` key as ``(in, out)`` and read
one back (transposed before the layer masks it), so the model's keys and shapes stay
``Conv1D``'s. A square weight is always read as ``(in, out)``; a non-square one in the
layer's own ``(out, in)`` is accepted as it is.
"""

from __future__ import annotations

import torch
from torch import nn


def _write_conv1d_layout(module: nn.Module, state_dict, prefix: str, local_metadata) -> None:
    weight = state_dict.get(prefix + "weight")
    if isinstance(weight, torch.Tensor) and weight.dim() == 2:
        state_dict[prefix + "weight"] = weight.t()


def read_conv1d_layout(module: nn.Module, state_dict, prefix: str) -> None:
    """Turn an ``(in, out)`` ``weight`` in ``state_dict`` into the layer's ``(out, in)``, in
    place; the layer calls it first thing on load, where ``conv1d_layout`` is set."""
    weight = state_dict.get(prefix + "weight")
    n_in, n_out = module.topology.n_in, module.topology.n_out
    if isinstance(weight, torch.Tensor) and tuple(weight.shape) == (n_in, n_out):
        state_dict[prefix + "weight"] = weight.t().contiguous()


def keep_conv1d_layout(new: nn.Module, transposed: bool) -> None:
    """Give ``new``, a sparse linear layer, ``Conv1D``'s state_dict layout when ``transposed``
    (the layer it replaces is a ``Conv1D``)."""
    if transposed and hasattr(new, "conv1d_layout"):   # a block layer's state is its tiles
        new.conv1d_layout = True   # read by the layer's _load_from_state_dict (read_conv1d_layout)
        new._register_state_dict_hook(_write_conv1d_layout)
