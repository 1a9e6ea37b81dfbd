"""What the masked layers share: a ``mask`` derived from the topology, ``weight`` masked on load, a dense twin.

:class:`~sparsetopo.nn.SparseLinear` (masked backend) and :class:`~sparsetopo.nn.SparseConv2d`
hold a dense ``weight`` shaped as torch's layer's, ``(out, in, ...)``, and a fixed 0/1 ``mask``
buffer. The mask is not saved (it is the topology's, and a checkpoint that carried it could
disagree with it), so it must be derived again wherever torch leaves a buffer uninitialised:
``to_empty()`` after a model was built on the ``meta`` device. And a ``weight`` loaded from a
dense checkpoint keeps only its connected entries, so pruned entries are exactly 0 after
``load_state_dict`` as after any optimizer step.
"""

from __future__ import annotations

import torch


class DerivedMask:
    """Mixin for an ``nn.Module`` with ``edge_index()`` (indices into ``weight``'s first two
    dimensions) and ``reset_mask()`` (rebuilds its derived buffers from the topology)."""

    def _apply(self, fn, recurse=True):
        # .to(), .to_empty(), .half(), ... all pass here: to_empty() leaves buffers uninitialised
        # and load_state_dict cannot restore non-persistent ones, so they are derived again
        super()._apply(fn, recurse)
        self.reset_mask()
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + "weight"
        weight = state_dict.get(key)
        mine = self._parameters.get("weight")
        if isinstance(weight, torch.Tensor) and mine is not None and weight.shape == mine.shape:
            state_dict[key] = keep_connected(weight, self.edge_index())   # a wrong shape torch reports itself
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)


def keep_connected(weight: torch.Tensor, edge_index) -> torch.Tensor:
    """A copy of ``weight`` with every entry outside ``edge_index`` exactly 0."""
    if weight.device.type == "meta":
        return weight
    index = tuple(i.to(weight.device) for i in edge_index)
    kept = torch.zeros_like(weight)
    kept[index] = weight[index]
    return kept


@torch.no_grad()
def fill_mask(mask: torch.Tensor, edge_index) -> None:
    """Set ``mask`` to 1 at ``edge_index`` and 0 elsewhere, in place (nothing to do on meta)."""
    if mask.device.type != "meta":
        mask.zero_()
        mask[edge_index] = 1.0


def dense_twin(dense: torch.nn.Module, layer: torch.nn.Module) -> torch.nn.Module:
    """``dense`` (torch's layer of ``layer``'s shape, built on ``meta``) given ``layer``'s effective
    weight (pruned entries as zeros) and bias as its own parameters: the layer's dense twin."""
    dense.weight = torch.nn.Parameter(layer.dense_weight().clone())
    if layer.bias is not None:
        dense.bias = torch.nn.Parameter(layer.bias.detach().clone())
    return dense
