"""The torch layers :func:`~sparsetopo.nn.sparsify` masks in place rather than replaces.

Recurrent layers (:mod:`sparsetopo.nn.recurrent`) and multi-head attention
(:mod:`sparsetopo.nn.attention`) keep their class's forward and kernels; this module maps each
torch type to its masked subclass and plans and applies its topologies, so that ``sparsify``
treats them in two calls.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sparsetopo.errors import SparsetopoError

from sparsetopo.nn.attention import SparseMultiheadAttention, attention_topologies
from sparsetopo.nn.embedding import SparseEmbedding, TiedSparseLinear, embedding_topologies
from sparsetopo.nn.masked_params import MaskedParameters, mask_parameters
from sparsetopo.nn.recurrent import GATE_RULES, SparseGRU, SparseLSTM, SparseRNN, recurrent_topologies
from sparsetopo.topology import build

#: Each torch type masked in place (exactly these types), with its masked subclass.
MASKED_TYPES = {nn.LSTM: SparseLSTM, nn.GRU: SparseGRU, nn.RNN: SparseRNN,
                nn.MultiheadAttention: SparseMultiheadAttention, nn.Embedding: SparseEmbedding}
#: The torch types masked in place only as the second end of a tied embedding (an untied
#: ``nn.Linear`` is replaced by a sparse layer instead).
TIED_TYPES = {nn.Linear: TiedSparseLinear}
#: Every masked class by the name of the torch type a file's recipe records.
RECIPE_CLASSES = {cls.dense_type.__name__: cls for cls in (*MASKED_TYPES.values(), *TIED_TYPES.values())}

__all__ = ["GATE_RULES", "MASKED_TYPES", "RECIPE_CLASSES", "TIED_TYPES", "MaskedParameters", "connected_values",
           "install_recipes", "is_masked_kind",
           "file_entries", "layer_recipe", "load_values", "mask_layer", "plan_layer", "set_connected_values",
           "summary_row", "value_key", "value_keys"]


def is_masked_kind(module: nn.Module) -> bool:
    """A layer sparsify masks in place: exactly one of :data:`MASKED_TYPES`."""
    return type(module) in MASKED_TYPES


def plan_layer(name: str, module: nn.Module, gates: str, make_topology):
    """``(topologies, None)`` for layer ``name``, or ``(None, refusal)`` when a matrix cannot
    be built (``make_topology(seed_name, n_in, n_out)`` as sparsify's rule for k gives it)."""
    if isinstance(module, nn.MultiheadAttention):
        return attention_topologies(name, module, make_topology)
    if isinstance(module, nn.Embedding):
        return embedding_topologies(name, module, make_topology)
    return recurrent_topologies(name, module, gates, make_topology)


def mask_layer(module: nn.Module, topologies, gates: str, keep_weights: bool, init: str,
               gen: np.random.Generator) -> nn.Module:
    """``module`` masked in place by ``topologies`` (:func:`~sparsetopo.nn.masked_params.mask_parameters`);
    an ``nn.Linear`` is masked so only as the tied end of an embedding (:class:`TiedSparseLinear`)."""
    cls = MASKED_TYPES.get(type(module)) or TIED_TYPES[type(module)]
    gated = cls not in (SparseMultiheadAttention, SparseRNN, SparseEmbedding, TiedSparseLinear)
    return mask_parameters(module, cls, topologies, gates if gated else "", keep_weights, init, gen)


def summary_row(name: str, module: MaskedParameters) -> dict:
    """The :func:`~sparsetopo.nn.sparsify.summarize` row of a masked layer: its matrices'
    constructions, degrees and seeds, and their connections together."""
    ts = [t for blocks in module.topologies.values() for t in blocks]
    row = {"name": name, "kind": type(module).dense_type.__name__.lower(),
           "construction": "/".join(sorted({t.construction for t in ts})), "k": sorted({t.k for t in ts}),
           "density": module.connections() / module.dense_connections(), "connections": module.connections(),
           "dense_connections": module.dense_connections(), "seed": [t.seed for t in ts], "backend": "masked",
           "matrices": {path: [blocks[0].n_in, sum(b.n_out for b in blocks)] for path, blocks in module.topologies.items()}}
    if module.gates:
        row["gates"] = module.gates
    return row


# -- the recipe a file keeps (sparsetopo.save / load) -----------------------------------------
def layer_recipe(module: MaskedParameters) -> dict:
    """What rebuilds ``module``'s masks: its torch type, gate rule, and per weight matrix the
    recipe of each block's topology (construction, sizes, k, seed, version, fingerprint)."""
    def block(t):
        recipe = {"construction": t.construction, "n_in": t.n_in, "n_out": t.n_out, "k": t.k, "seed": t.seed,
                  "version": t.version, "fingerprint": t.fingerprint}
        return {**recipe, "block": [t.block_in, t.block_out]} if t.is_blocked else recipe
    return {"type": type(module).dense_type.__name__, "gates": module.gates,
            "matrices": {path: [block(t) for t in blocks] for path, blocks in module.topologies.items()}}


def value_key(name: str, path: str) -> str:
    """The file's tensor holding the connected weights of matrix ``path`` of layer ``name``."""
    return f"{name}.{path}.values" if name else f"{path}.values"


def connected_values(module: MaskedParameters, path: str) -> torch.Tensor:
    """The connected entries of matrix ``path``, block by block in each topology's CSR order."""
    return module.get_parameter(path).detach()[module.edge_index(path)]


@torch.no_grad()
def set_connected_values(module: MaskedParameters, path: str, values: torch.Tensor) -> None:
    weight = module.get_parameter(path)
    weight.zero_()
    weight[module.edge_index(path)] = values.to(weight.dtype).to(weight.device)


def install_recipes(model: nn.Module, recipes: dict, where: str) -> None:
    """Mask every layer of ``model`` named in ``recipes`` (:func:`layer_recipe`) with the
    topologies they rebuild, checking each fingerprint; a layer already masked must hold the
    same topologies. Raises SparsetopoError naming ``where`` (the file) and the layer."""
    for name, recipe in recipes.items():
        label = name or "<the model itself>"
        try:
            module = model.get_submodule(name) if name else model
        except AttributeError:
            raise SparsetopoError(f"{where} has a masked {recipe['type']} {label!r}, but the model has no module of "
                                  "that name: was the file saved from this architecture?") from None
        dense_type = module.dense_type if isinstance(module, MaskedParameters) else type(module)
        cls = RECIPE_CLASSES.get(recipe["type"])
        if cls is None or cls.dense_type is not dense_type:
            raise SparsetopoError(f"{where}: layer {label!r} is a {type(module).__name__} in the model but an "
                                  f"nn.{recipe['type']} in the file: was the file saved from this architecture?")
        topologies = {}
        for path, blocks in recipe["matrices"].items():
            try:
                shape = tuple(module.get_parameter(path).shape)
            except AttributeError:
                shape = None
            built = tuple(build(b["construction"], b["n_in"], b["n_out"], b["k"], seed=b["seed"] or 0,
                                block=tuple(b.get("block", (1, 1)))) for b in blocks)
            if shape != (sum(t.n_out for t in built), built[0].n_in):
                raise SparsetopoError(f"{where}: matrix {path!r} of layer {label!r} is {shape} in the model but "
                                      f"{(sum(t.n_out for t in built), built[0].n_in)} in the file")
            if [t.fingerprint for t in built] != [b["fingerprint"] for b in blocks]:
                raise SparsetopoError(f"{where}: the masks rebuilt for {path!r} of layer {label!r} differ from the "
                                      "saved ones: the file was not written by sparsetopo.save")
            topologies[path] = built
        if isinstance(module, MaskedParameters):
            if {p: [t.fingerprint for t in ts] for p, ts in module.topologies.items()} != \
                    {p: [t.fingerprint for t in ts] for p, ts in topologies.items()}:
                raise SparsetopoError(f"{where}: layer {label!r} of the model has other connections than the file's")
            continue
        mask_parameters(module, cls, topologies, recipe["gates"], True, "glorot", None)
    unknown = [name for name, module in model.named_modules() if isinstance(module, MaskedParameters)
               and name not in recipes]
    if unknown:
        raise SparsetopoError(f"{where} has no masked layer {unknown[0]!r}, but the model has: was the file saved "
                              "from this architecture?")


def file_entries(model: nn.Module) -> tuple[dict, dict]:
    """The recipes (``{layer: layer_recipe}``) and connected-value tensors (``{value_key:
    values}``, on CPU) of every masked layer of ``model``, each once by its canonical name."""
    masked = {name: m for name, m in model.named_modules() if isinstance(m, MaskedParameters)}
    tensors = {value_key(name, path): connected_values(m, path).cpu().contiguous()
               for name, m in masked.items() for path in m.topologies}
    return {name: layer_recipe(m) for name, m in masked.items()}, tensors


def value_keys(recipes: dict) -> set[str]:
    """Every connected-value tensor the recipes of :func:`file_entries` call for."""
    return {value_key(name, path) for name, recipe in recipes.items() for path in recipe["matrices"]}


def load_values(model: nn.Module, recipes: dict, take) -> None:
    """Give the masked layers of ``recipes`` their connected values, ``take(key)`` reading each."""
    for name, recipe in recipes.items():
        for path in recipe["matrices"]:
            set_connected_values(model.get_submodule(name) if name else model, path, take(value_key(name, path)))
