"""Masks on the weight matrices of a torch layer that keeps its own forward and its own kernels.

``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` and ``nn.MultiheadAttention`` are not replaced by a new
layer: their fused kernels (cuDNN, torch's native attention) are the point of using them.
Instead :func:`mask_parameters` turns the module into a subclass of its own type
(:mod:`sparsetopo.nn.recurrent`, :mod:`sparsetopo.nn.attention`) that, for each forward,
hands torch's code ``weight * mask`` in place of each masked weight: the gradient of a
pruned entry is then exactly 0, as for the masked :class:`~sparsetopo.nn.SparseLinear`, so
no optimizer step (momentum and decoupled weight decay included) moves it off 0.

A masked matrix is a stack of blocks along its first dimension, each block one bipartite
graph from the matrix's columns (inputs) to the block's rows (outputs): the gates of a
recurrent layer, the query, key and value projections of a packed ``in_proj_weight``. Block
``b`` of parameter ``p`` holds ``topologies[p][b]``; its mask is ``topology.mask().T`` at the
block's rows. Parameters keep torch's names and shapes, so ``state_dict`` is the dense
layer's (zeros at pruned entries); a loaded weight keeps only its connected entries. The masks
are buffers derived from the topologies, never saved, and rebuilt on every move
(``to_empty()`` after construction on the ``meta`` device included: :mod:`sparsetopo.nn.masking`).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from sparsetopo.nn.init import initial_weights
from sparsetopo.nn.masking import DerivedMask, fill_mask, keep_connected
from sparsetopo.topology import Topology


def mask_name(path: str) -> str:
    """The buffer holding the mask of parameter ``path`` (a dotted path has no place in a buffer name)."""
    return path.replace(".", "_") + "_mask"


class MaskedParameters(DerivedMask):
    """Mixin: the weight matrices named in ``self.topologies`` (dotted paths under the module,
    each a tuple of block topologies) are masked. The subclass hands :meth:`masked_weights`
    to torch's forward."""

    topologies: dict[str, tuple[Topology, ...]]
    gates: str

    def edge_index(self, path: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(row, column)`` of every connection of parameter ``path``, block by block."""
        rows, cols, start = [], [], 0
        for t in self.topologies[path]:
            rows.append(torch.from_numpy(t.indices.astype(np.int64)) + start)
            cols.append(torch.from_numpy(t.rows.astype(np.int64)))
            start += t.n_out
        return torch.cat(rows), torch.cat(cols)

    def reset_mask(self) -> None:
        """Rebuild every mask from the topologies, on its current device and dtype."""
        for path in self.topologies:
            fill_mask(getattr(self, mask_name(path)), self.edge_index(path))

    def masked_weights(self) -> dict[str, torch.Tensor]:
        """``weight * mask`` of every masked parameter, by its dotted path (differentiable)."""
        return {path: self.get_parameter(path) * getattr(self, mask_name(path)) for path in self.topologies}

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # a dense checkpoint keeps only the connected entries; a child's key (out_proj.weight) is
        # masked here, before torch hands the child its share of the same dict
        for path in self.topologies:
            weight, mine = state_dict.get(prefix + path), self.get_parameter(path)
            if isinstance(weight, torch.Tensor) and weight.shape == mine.shape:
                state_dict[prefix + path] = keep_connected(weight, self.edge_index(path))
        super(DerivedMask, self)._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                                       unexpected_keys, error_msgs)

    def connections(self) -> int:
        return sum(t.nnz for ts in self.topologies.values() for t in ts)

    def dense_connections(self) -> int:
        return sum(self.get_parameter(path).numel() for path in self.topologies)

    def describe(self) -> str:
        """The summary's one line: construction(s), exact density, gate rule."""
        constructions = sorted({t.construction for ts in self.topologies.values() for t in ts})
        gates = {"shared": ", gates share a topology", "per_gate": ", a topology per gate"}.get(self.gates, "")
        return (f"{'/'.join(constructions)}, density {self.connections() / self.dense_connections():.3g}{gates}, "
                "backend masked")

    backend = "masked"

    def to_dense(self) -> nn.Module:
        """torch's own layer computing the same function (pruned weights as zeros), e.g. for export."""
        dense = copy.deepcopy(self)
        with torch.no_grad():
            for path, value in dense.masked_weights().items():
                dense.get_parameter(path).copy_(value)
        for path in self.topologies:
            del dense._buffers[mask_name(path)]
        for attr in ("topologies", "gates"):
            dense.__dict__.pop(attr, None)
        dense.__class__ = self.dense_type
        return dense

    def extra_repr(self) -> str:
        return ", ".join(part for part in (super().extra_repr(), self.describe()) if part)


def mask_parameters(module: nn.Module, cls: type, topologies: dict[str, tuple[Topology, ...]], gates: str,
                    keep_weights: bool, init: str, gen: np.random.Generator) -> nn.Module:
    """Turn ``module`` (exactly ``cls.dense_type``) into ``cls`` in place, its parameters and
    their state (device, dtype, ``requires_grad``, optimizer references) untouched.

    With ``keep_weights`` the connected entries keep their values; otherwise each block's
    connections are drawn as :func:`~sparsetopo.nn.init.initial_weights` draws a sparse linear
    layer's (``init``, from ``gen``) and every bias of the layer starts at 0."""
    module.__class__ = cls
    module.topologies = {path: tuple(ts) for path, ts in topologies.items()}
    module.gates = gates
    for path in module.topologies:
        weight = module.get_parameter(path)
        module.register_buffer(mask_name(path), torch.zeros(weight.shape, device=weight.device, dtype=weight.dtype),
                               persistent=False)
    module.reset_mask()
    with torch.no_grad():
        for path in module.topologies:
            weight, mask = module.get_parameter(path), getattr(module, mask_name(path))
            if keep_weights:
                weight.mul_(mask)
                continue
            values = np.concatenate([initial_weights(t, init, gen) for t in module.topologies[path]])
            if weight.device.type != "meta":
                fresh = torch.zeros(weight.shape, dtype=weight.dtype)
                fresh[module.edge_index(path)] = torch.from_numpy(values).to(weight.dtype)
                weight.copy_(fresh)
        if not keep_weights:
            for param in module.parameters():
                if param.dim() == 1:   # the biases
                    param.zero_()
    return module


@contextmanager
def substituted(module: nn.Module, tensors: dict[str, torch.Tensor]):
    """Within the block, each parameter ``path`` of ``module`` reads as ``tensors[path]`` (a
    plain tensor computed from it, so gradients reach the parameter); restored afterwards."""
    saved = {}
    try:
        for path, tensor in tensors.items():
            owner_path, _, name = path.rpartition(".")
            owner = module.get_submodule(owner_path) if owner_path else module
            saved[path] = (owner, name, owner._parameters[name])
            owner._parameters[name] = tensor   # not setattr: a plain tensor may not take a parameter's name
        yield
    finally:
        for owner, name, param in saved.values():
            owner._parameters[name] = param
