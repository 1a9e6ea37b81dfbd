"""Sparse recurrent layers: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` with masked gate matrices.

The paper's future work names the LSTM. Its reading here: a recurrent layer's neurons are
its hidden units, and each of its weight matrices is one bipartite graph between units:

- ``weight_ih_l{n}`` (``G * hidden`` x ``inputs``): input units -> hidden units, for layer
  ``n``'s inputs (the features for the first layer, the previous layer's outputs - both
  directions - above it);
- ``weight_hh_l{n}`` (``G * hidden`` x ``hidden``, or ``proj_size`` columns): hidden units ->
  hidden units, the recurrence;
- ``weight_hr_l{n}`` (an LSTM with ``proj_size``): hidden units -> projected units;

for every layer and both directions (``_reverse``), each with its own topology. ``G`` is the
number of gates stacked in the matrix (LSTM: input, forget, cell, output; GRU: reset, update,
new; RNN: 1). Biases stay dense, as the linear layers' do.

Gates (``gates=``): a gate is part of a unit's computation, not a unit of its own, so by
default (``"shared"``) one topology serves every gate of a matrix: hidden unit ``j`` reads the
same inputs in its input, forget, cell and output gates, and the layer is the paper's graph
with each unit computed as an LSTM cell - the reading in which "unit ``j`` is connected to input
``i``" has one meaning. ``"per_gate"`` draws an independent topology per gate (each gate matrix
its own expander): every gate still keeps ``k`` of ``n_out`` connections per input, but a unit
then reads the union of up to ``G`` neighbourhoods. Either way the density of every matrix is
``k / hidden``.

The layer keeps torch's fused kernels: :class:`MaskedRecurrent` hands torch's forward the
masked matrices in place of its weights (:mod:`sparsetopo.nn.masked_params`); no loop over
time steps runs in Python. On CUDA the masked matrices are not torch's flattened weight
buffer, so cuDNN copies them into one per call (torch warns once that the weights "are not
part of single contiguous chunk of memory"); the copy is one pass over the weights.
"""

from __future__ import annotations

from torch import nn

from sparsetopo.nn.masked_params import MaskedParameters

#: The gates stacked in each recurrent matrix, by torch's ``mode``, in torch's order.
GATES = {"LSTM": ("input", "forget", "cell", "output"), "GRU": ("reset", "update", "new"),
         "RNN_TANH": ("",), "RNN_RELU": ("",)}

#: The rules for a recurrent matrix's gates (module docstring).
GATE_RULES = ("shared", "per_gate")


class MaskedRecurrent(MaskedParameters):
    """Mixin for a torch recurrent layer: its forward runs torch's kernel on the masked matrices."""

    def forward(self, input, hx=None):
        self._update_flat_weights()   # torch's: picks up weights replaced since the last call
        flat = self._flat_weights
        masked = self.masked_weights()
        # torch's forward reads self._flat_weights (it re-reads them only when a weight was replaced)
        self._flat_weights = [masked.get(name, weight) for name, weight in zip(self._flat_weights_names, flat)]
        try:
            return super().forward(input, hx)
        finally:
            self._flat_weights = flat


class SparseLSTM(MaskedRecurrent, nn.LSTM):
    """``nn.LSTM`` whose gate matrices are masked by topologies (module docstring)."""

    dense_type = nn.LSTM


class SparseGRU(MaskedRecurrent, nn.GRU):
    """``nn.GRU`` whose gate matrices are masked by topologies (module docstring)."""

    dense_type = nn.GRU


class SparseRNN(MaskedRecurrent, nn.RNN):
    """``nn.RNN`` whose matrices are masked by topologies (module docstring)."""

    dense_type = nn.RNN


def recurrent_topologies(name: str, module: nn.RNNBase, gates: str, make_topology):
    """Every weight matrix's block topologies, ``{parameter: (topology per gate, ...)}``, or
    the first refusal. ``make_topology(seed_name, n_in, n_out)`` returns ``(topology, refusal)``;
    a shared topology is named after its matrix, a per-gate one after the matrix and the gate."""
    topologies = {}
    for pname in module._flat_weights_names:
        if not pname.startswith("weight_"):
            continue
        rows, n_in = getattr(module, pname).shape
        gate_names = GATES[module.mode] if pname.startswith(("weight_ih", "weight_hh")) else ("",)
        path = f"{name}.{pname}" if name else pname
        if gates == "shared" or len(gate_names) == 1:
            topology, refusal = make_topology(path, n_in, rows // len(gate_names))
            blocks = (topology,) * len(gate_names)
        else:
            blocks = []
            for gate in gate_names:
                topology, refusal = make_topology(f"{path}.{gate}", n_in, rows // len(gate_names))
                if refusal is not None:
                    break
                blocks.append(topology)
        if refusal is not None:
            return None, refusal
        topologies[pname] = tuple(blocks)
    return topologies, None
