"""How much of a model is sparse: every weight layer, sparse or dense, and why.

:func:`~sparsetopo.nn.sparsify` replaces the layers it can and leaves the rest dense. A user
who sparsifies a model someone else wrote needs to see what stayed dense and why, or a GPT-2
whose attention and MLP weights all stayed dense looks sparsified. :func:`coverage` takes a
census of the model's *weight layers* - every module that holds a parameter of two or more
dimensions (linear and convolution weights, embedding tables, recurrent gate matrices,
attention's packed projections) - and reads each as sparse (its topology's connections) or
dense, with the reason sparsify recorded for it (a sparse one by its construction, its block
size when it is built on blocks, and its exact density).

Shares are of *dense-equivalent weights*: a sparse 784x300 layer counts 235,200 weights, all of
them sparse, however few connections it keeps, so ``sparse_share`` answers "what fraction of
the model's weight matrices did the topologies reach".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsetopo.nn.masked_params import MaskedParameters

#: A dense share at or above this, for reasons the user did not choose, makes sparsify warn.
WARN_DENSE_SHARE = 0.25


class CoverageWarning(UserWarning):
    """sparsify left a large share of a model's weights dense for reasons the user did not
    choose (unsupported layer types, tied weights, layers too small for the density).
    Silence it with ``warnings.filterwarnings("ignore", category=CoverageWarning)``."""


@dataclass(frozen=True)
class LayerCoverage:
    """One weight layer: ``weights`` is its dense-equivalent weight count; ``reason`` says
    how it was made sparse or why it stayed dense; ``chosen`` is True where the user chose
    to leave it dense (``exclude``, or not in ``include``)."""

    name: str
    kind: str
    weights: int
    sparse: bool
    reason: str
    chosen: bool = False


@dataclass(frozen=True)
class Coverage:
    """The census of :func:`coverage`; ``str()`` (and the REPL) show it as a table."""

    layers: tuple[LayerCoverage, ...]

    @property
    def weights(self) -> int:
        return sum(layer.weights for layer in self.layers)

    @property
    def sparse_share(self) -> float:
        """Fraction of all weight-layer weights that sit in sparse layers (0 for no weights)."""
        total = self.weights
        return sum(layer.weights for layer in self.layers if layer.sparse) / total if total else 0.0

    @property
    def unchosen_dense_share(self) -> float:
        """Fraction of all weights left dense for a reason the user did not choose."""
        total = self.weights
        return sum(layer.weights for layer in self.unchosen_dense) / total if total else 0.0

    @property
    def sparse(self) -> list[LayerCoverage]:
        return [layer for layer in self.layers if layer.sparse]

    @property
    def dense(self) -> list[LayerCoverage]:
        return [layer for layer in self.layers if not layer.sparse]

    @property
    def unchosen_dense(self) -> list[LayerCoverage]:
        return [layer for layer in self.dense if not layer.chosen]

    def rows(self) -> list[dict]:
        """One dict per weight layer, for JSON or a DataFrame."""
        return [dict(vars(layer)) for layer in self.layers]

    def __str__(self) -> str:
        header = ("layer", "type", "weights", "state", "why")
        table = [header] + [(layer.name or "<model>", layer.kind, f"{layer.weights:,}",
                             "sparse" if layer.sparse else "dense", layer.reason) for layer in self.layers]
        widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
        lines.append(f"{len(self.sparse)} of {len(self.layers)} weight layers sparse, holding "
                     f"{self.sparse_share:.1%} of {self.weights:,} weights")
        return "\n".join(line.rstrip() for line in lines)

    __repr__ = __str__


def weight_layers(model: nn.Module, sparse_types: tuple[type, ...]) -> dict[str, tuple[nn.Module, int]]:
    """Every module of ``model`` holding a weight, by canonical name, with its dense-equivalent
    weight count: a sparse layer counts its topology's full ``n_in * n_out`` (times the kernel and groups),
    any other module the elements of its own parameters of two or more dimensions. A parameter
    shared by several modules (tied weights) counts once, at its first owner; the later owners
    are still listed, with the weights they do not share. A torch layer masked in place
    (:mod:`sparsetopo.nn.masked_params`) counts its masked matrices, a child's (attention's
    ``out_proj``) included; that child is then not listed on its own."""
    seen: set[int] = set()
    masked: set[int] = set()   # matrices counted with the masked layer that owns them
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, MaskedParameters):
            mine = [module.get_parameter(path) for path in module.topologies]   # a tied table counts once
            layers[name] = (module, sum(p.numel() for p in mine if id(p) not in seen))
            masked.update(id(module.get_parameter(path)) for path in module.topologies)
            seen.update(id(p) for p in module.parameters(recurse=False))
            seen.update(masked)
            continue
        if isinstance(module, sparse_types):
            t = module.topology
            per_edge = 1
            for size in (*getattr(module, "kernel_size", ()), getattr(module, "groups", 1)):
                per_edge *= size   # a convolution's kernel, and its groups (each holds the topology)
            layers[name] = (module, t.n_in * t.n_out * per_edge)
            seen.update(id(p) for p in module.parameters(recurse=False))
            continue
        if isinstance(module, parametrize.ParametrizationList):
            continue  # its originals are counted with the layer they parametrize
        matrices = [p for p in module.parameters(recurse=False) if p.dim() >= 2]
        if parametrize.is_parametrized(module):  # weight_norm and the like: count the computed weight
            matrices += [p for plist in module.parametrizations.values() for p in plist.parameters()]
            with torch.no_grad():
                computed = sum(getattr(module, tname).numel() for tname in module.parametrizations)
            layers[name] = (module, computed)
            seen.update(id(p) for p in matrices)
            continue
        if matrices and all(id(p) in masked for p in matrices):
            continue
        if matrices:  # listed even when all its matrices are tied to an earlier module's (0 weights of its own)
            layers[name] = (module, sum(p.numel() for p in matrices if id(p) not in seen))
            seen.update(id(p) for p in matrices)
    return layers


def coverage(model: nn.Module, sparse_types: tuple[type, ...], reasons: dict[str, tuple[str, bool]],
             default_reason) -> Coverage:
    """The census of ``model``'s weight layers. ``reasons`` maps a dense layer's name to
    ``(reason, chosen)`` as sparsify recorded it; a layer without one gets
    ``default_reason(module)``. A sparse layer's reason names its construction and density."""
    rows = []
    for name, (module, weights) in weight_layers(model, sparse_types).items():
        kind = type(module).__name__
        if isinstance(module, MaskedParameters):
            rows.append(LayerCoverage(name, kind, weights, True, module.describe()))
            continue
        if isinstance(module, sparse_types):
            t = module.topology
            blocks = f", blocks of {t.block_in}x{t.block_out}" if t.is_blocked else ""
            rows.append(LayerCoverage(name, kind, weights, True,
                                      f"{t.construction}{blocks}, density {t.density:.3g}, backend {module.backend}"))
            continue
        reason, chosen = reasons.get(name) or default_reason(module)
        rows.append(LayerCoverage(name, kind, weights, False, reason, chosen))
    return Coverage(tuple(rows))
