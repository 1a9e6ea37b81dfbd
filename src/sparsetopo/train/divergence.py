"""When a run has stopped being able to learn: the one rule, used by every training engine.

Two ways a run ends "diverged": its training loss is not finite (NaN or infinite, the
paper's protocol has no guard against it), or the trained network is saturated: every hidden
neuron sits at its activation's flat end for every probe example (a sigmoid within
``SATURATION`` of 0 or 1, a tanh within it of -1 or 1, a ReLU at exactly 0). Such a network's
gradients are zero, so its loss stays flat however long it trains; a huge learning rate
gets there in one epoch with finite numbers (weights of 1e4 and more), and its test accuracy
is chance. The rule looks at the network, not at the weights' size, so a healthy run with
large weights is not caught.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

SATURATION = 1e-6     # how close to the flat end counts as saturated
PROBE_EXAMPLES = 512  # test examples the saturation check runs on


def hidden_outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Each hidden layer's activations on ``x``, computed by ``model`` in eval mode."""
    outputs = []
    model.eval()
    with torch.no_grad():
        a = x
        for layer in model.layers[:-1]:
            a = model.act(layer(a))
            outputs.append(a)
    return outputs


def saturated_layers(model, x: torch.Tensor, hidden: Callable | None = None) -> list[int]:
    """Indices of the hidden layers whose every neuron is saturated on every row of ``x``.

    ``hidden``: what computes the hidden activations, ``hidden(x) -> [tensor per hidden
    layer]`` (a fused engine's kernels); :func:`hidden_outputs` of ``model`` when None."""
    name = model.activation_name
    found = []
    for l, a in enumerate(hidden(x) if hidden is not None else hidden_outputs(model, x)):
        if name == "sigmoid":
            flat = (a < SATURATION) | (a > 1 - SATURATION)
        elif name == "tanh":
            flat = a.abs() > 1 - SATURATION
        else:  # relu: a dead unit passes no gradient
            flat = a == 0
        if bool(flat.all()):
            found.append(l)
    return found


def divergence_reason(history, model, x_probe: torch.Tensor, hidden: Callable | None = None) -> str:
    """Why the run ending with ``history`` and ``model`` cannot learn; "" when it can.
    ``hidden``: see :func:`saturated_layers`."""
    if history and not math.isfinite(history[-1].train_loss):
        return f"training loss {history[-1].train_loss} at epoch {history[-1].epoch}"
    for layer in model.layers:
        for p in layer.parameters():
            if not bool(torch.isfinite(p).all()):
                return "non-finite weights"
    saturated = saturated_layers(model, x_probe[:PROBE_EXAMPLES], hidden)
    if saturated:
        largest = max(float(w.abs().max()) for w in (layer.connected_weights() for layer in model.layers))
        return (f"hidden layer {saturated[0] + 1} saturated on every probe example (largest weight {largest:.3g}): "
                f"its gradients vanish and the run cannot learn; lower the learning rate")
    return ""
