"""Sparse attention: ``nn.MultiheadAttention`` with masked projections.

Reading of the paper's graph: each projection of attention is a linear layer of its own, so
each is one bipartite graph with its own topology, as a separate ``nn.Linear`` would have:

- the query projection: ``embed_dim`` input units -> ``embed_dim`` query units;
- the key and value projections: ``kdim`` (``vdim``) input units -> ``embed_dim`` units;
- ``out_proj``: ``embed_dim`` -> ``embed_dim``.

torch packs the first three into one ``in_proj_weight`` (``3 * embed_dim`` x ``embed_dim``) when
``kdim == vdim == embed_dim``, and keeps ``q_proj_weight``, ``k_proj_weight`` and
``v_proj_weight`` otherwise; the packed matrix holds three blocks with three topologies. The
topologies are seeded by role (``NAME.q_proj``, ``NAME.k_proj``, ``NAME.v_proj``,
``NAME.out_proj``), so the packed and the separate forms of one layer get the same graphs.
Biases (and ``bias_k``/``bias_v``) stay dense.

The layer keeps torch's code, fast paths included: :class:`SparseMultiheadAttention` runs
``nn.MultiheadAttention.forward`` with each projection weight read as ``weight * mask``
(:mod:`sparsetopo.nn.masked_params`). While ONNX traces it, torch's fused attention kernel,
which ONNX has no operator for, is switched off, so a model holding it exports.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from sparsetopo.nn.masked_params import MaskedParameters, substituted


class SparseMultiheadAttention(MaskedParameters, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` whose projections are masked by topologies (module docstring)."""

    dense_type = nn.MultiheadAttention

    def forward(self, *args, **kwargs):
        with substituted(self, self.masked_weights()), _without_fast_path_in_onnx_export():
            return super().forward(*args, **kwargs)


@contextmanager
def _without_fast_path_in_onnx_export():
    """While ONNX traces the model, torch's fused attention kernel (which ONNX has no operator
    for) is switched off, as the exporter needs; the setting is restored afterwards."""
    if not torch.onnx.is_in_onnx_export():
        yield
        return
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def attention_topologies(name: str, module: nn.MultiheadAttention, make_topology):
    """The projections' topologies, ``{parameter: (topology per block, ...)}``, or the first
    refusal; ``make_topology`` as :func:`sparsetopo.nn.recurrent.recurrent_topologies`'s."""
    embed = module.embed_dim
    roles = [("q_proj", embed), ("k_proj", module.kdim), ("v_proj", module.vdim), ("out_proj", embed)]
    made = {}
    for role, n_in in roles:
        topology, refusal = make_topology(f"{name}.{role}" if name else role, n_in, embed)
        if refusal is not None:
            return None, refusal
        made[role] = topology
    if module._qkv_same_embed_dim:
        topologies = {"in_proj_weight": (made["q_proj"], made["k_proj"], made["v_proj"])}
    else:
        topologies = {f"{role}_weight": (made[role],) for role in ("q_proj", "k_proj", "v_proj")}
    topologies["out_proj.weight"] = (made["out_proj"],)
    return topologies, None
