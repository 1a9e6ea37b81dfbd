"""What a file written by :func:`sparsetopo.save` holds, and the checks of its metadata.

The tensors are the connected weights of every sparse layer in its topology's CSR order
(``NAME.values``), its bias, and every other ``state_dict`` entry of the model; the metadata
(JSON under :data:`METADATA_KEY`) names the format and its version, each sparse layer's recipe
and, when sparsetopo can rebuild it, the model's structure (:mod:`sparsetopo.io`). A recurrent
layer or attention masked in place (:mod:`sparsetopo.nn.masked_layers`) has, instead of its
dense weight matrices, their connected entries (``NAME.PATH.values``, block by block in CSR
order) and, under ``masked_layers`` in the metadata, its torch type, gate rule and each
matrix's topology recipes; the key is written only when the model has such layers, so other
files are byte for byte what they were.

The connected weights do not depend on how a layer holds its dense weight in memory: the
layers' switch from ``(in, out)`` to ``nn.Linear``'s ``(out, in)`` left the file unchanged, so
files of format version 1 written before it load as they are (``tests/data/old_format_v1``).
"""

from __future__ import annotations

import json
from pathlib import Path

from sparsetopo.errors import SparsetopoError, pip_install
from sparsetopo.topology import CONSTRUCTIONS

FORMAT = "sparsetopo"
FORMAT_VERSION = 1
METADATA_KEY = "sparsetopo"


def require(module: str, purpose: str):
    """The optional package ``module``, or SparsetopoError naming the extra that installs it."""
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise SparsetopoError(f"{purpose} needs the '{module.split('.')[0]}' package: {pip_install('io')}") from None


def batch_shape(input_shape) -> list[int]:
    """``input_shape`` as a list of positive ints (batch first), or SparsetopoError naming it."""
    try:
        shape = list(input_shape)
    except TypeError:
        shape = None
    if not shape or any(isinstance(n, bool) or not hasattr(n, "__index__") or n.__index__() < 1 for n in shape):
        raise SparsetopoError(f"input_shape={input_shape!r} must be a list of positive sizes, batch first, "
                              "e.g. (1, 1, 28, 28)")
    return [n.__index__() for n in shape]


def read_metadata(path) -> dict:
    """The sparsetopo metadata of a file written by :func:`sparsetopo.save` (format, layers' recipes,
    architecture, input shape), checked for format and construction versions."""
    st = require("safetensors", "sparsetopo.load")
    path = Path(path)
    if not path.is_file():
        raise SparsetopoError(f"{path}: no such file")
    try:
        with st.safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for foreign files
        raise SparsetopoError(f"{path}: not a safetensors file ({exc})") from None
    if METADATA_KEY not in meta:
        raise SparsetopoError(f"{path}: a safetensors file without sparsetopo metadata: write it with sparsetopo.save")
    try:
        info = json.loads(meta[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise SparsetopoError(f"{path}: the sparsetopo metadata is not JSON ({exc}): the file is damaged; "
                              "write it again with sparsetopo.save") from None
    if not isinstance(info, dict):
        raise SparsetopoError(f"{path}: the sparsetopo metadata is a JSON {type(info).__name__}, not an object: "
                              "the file is damaged; write it again with sparsetopo.save")
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise SparsetopoError(f"{path}: file format {info.get('format')} version {info.get('format_version')} "
                              f"is not supported (this sparsetopo reads {FORMAT} version {FORMAT_VERSION})")
    if not isinstance(info.get("layers"), dict):
        raise SparsetopoError(f"{path}: the sparsetopo metadata has no 'layers' object (each sparse layer's recipe): "
                              "the file is damaged; write it again with sparsetopo.save")
    for name, recipe in info["layers"].items():
        check_recipe(path, name, recipe)
        check_version(path, name, recipe)
    check_masked_recipes(path, info.get("masked_layers", {}))
    shape = info.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and shape
                                  and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        raise SparsetopoError(f"{path}: the recorded input_shape={shape!r} is not a list of positive sizes")
    return info


#: The layers a file holds: SparseLinear, BlockSparseLinear (its tiles' connected weights, in
#: the lifted topology's CSR order, as a linear layer's) and SparseConv1d/2d/3d.
KINDS = ("linear", "block", "conv1d", "conv2d", "conv3d")
#: Every field of a sparse layer's recipe and the types it may hold; a recipe may also hold
#: ``block``, ``[b_in, b_out]``, the block sizes of a block topology (absent: 1 and 1).
RECIPE_FIELDS = {"kind": str, "construction": str, "n_in": int, "n_out": int, "k": int, "seed": (int, type(None)),
                 "version": int, "fingerprint": str, "backend": str, "bias": bool}
CONV_FIELDS = {"kernel_size": list, "stride": list, "padding": (list, str), "dilation": list,
               "padding_mode": str, "bias": bool}


def check_recipe(path, name, recipe) -> None:
    """A recipe as :func:`save` writes it, or SparsetopoError naming the layer and the field."""
    label = name or "<the model itself>"
    if not isinstance(recipe, dict):
        raise SparsetopoError(f"{path}: the recipe of layer {label!r} is {recipe!r}, not an object")

    def check(fields, where, prefix=""):
        for field, kind in fields.items():
            value = where.get(field)
            if field not in where or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise SparsetopoError(f"{path}: layer {label!r} has {prefix}{field}={value!r} in its recipe, which "
                                      "should be " + (f"a {kind.__name__}" if isinstance(kind, type) else
                                                      " or ".join(k.__name__ for k in kind))
                                      + ": the file is damaged; write it again with sparsetopo.save")

    check(RECIPE_FIELDS, recipe)
    if recipe["kind"] not in KINDS:
        raise SparsetopoError(f"{path}: layer {label!r} has kind={recipe['kind']!r}: this sparsetopo reads "
                              f"{', '.join(map(repr, KINDS))} layers")
    block = recipe.get("block", [1, 1])
    if not (isinstance(block, list) and len(block) == 2
            and all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in block)):
        raise SparsetopoError(f"{path}: layer {label!r} has block={block!r} in its recipe, which should be two "
                              "positive sizes [b_in, b_out]: the file is damaged; write it again with sparsetopo.save")
    if recipe["kind"] not in ("linear", "block"):
        if not isinstance(recipe.get("conv"), dict):
            raise SparsetopoError(f"{path}: the {recipe['kind']} layer {label!r} has no 'conv' arguments in its recipe")
        check(CONV_FIELDS, recipe["conv"], "conv.")


#: The fields of each topology block of a masked layer's matrix (recurrent layers, attention).
BLOCK_FIELDS = {"construction": str, "n_in": int, "n_out": int, "k": int, "seed": (int, type(None)), "version": int,
                "fingerprint": str}


def check_masked_recipes(path, recipes) -> None:
    """The recipes of layers masked in place (``masked_layers``: a torch type, a gate rule and
    per weight matrix a list of block topologies), or SparsetopoError naming the layer."""
    def damaged(name, what):
        return SparsetopoError(f"{path}: the masked layer {name or '<the model itself>'!r} has {what} in its recipe: "
                               "the file is damaged; write it again with sparsetopo.save")

    if not isinstance(recipes, dict):
        raise SparsetopoError(f"{path}: 'masked_layers' is {recipes!r}, not an object: the file is damaged")
    for name, recipe in recipes.items():
        if not isinstance(recipe, dict) or not isinstance(recipe.get("type"), str) \
                or not isinstance(recipe.get("gates"), str) or not isinstance(recipe.get("matrices"), dict):
            raise damaged(name, f"{recipe!r} (needs type, gates and matrices)")
        for matrix, blocks in recipe["matrices"].items():
            if not isinstance(blocks, list) or not blocks:
                raise damaged(name, f"matrix {matrix!r} = {blocks!r}, not a list of topologies")
            for block in blocks:
                bad = [f for f, kind in BLOCK_FIELDS.items() if not isinstance(block, dict) or
                       not isinstance(block.get(f), kind) or (kind is int and isinstance(block.get(f), bool))]
                if bad:
                    raise damaged(name, f"matrix {matrix!r}: a topology without a valid {bad[0]!r}")
                check_version(path, f"{name}.{matrix}" if name else matrix, block)


def check_version(path, name, recipe) -> None:  # after _check_recipe
    construction = recipe["construction"]
    written = recipe.get("version")
    label = name or "<the model itself>"
    if construction not in CONSTRUCTIONS:
        raise SparsetopoError(f"{path}: layer {label!r} uses construction {construction!r}, which this sparsetopo "
                              f"does not have ({', '.join(CONSTRUCTIONS)}): upgrade sparsetopo")
    installed = CONSTRUCTIONS[construction].version
    if written > installed:
        raise SparsetopoError(f"{path}: layer {label!r} was built by version {written} of {construction}, newer than "
                              f"this sparsetopo's version {installed}: upgrade sparsetopo to load it")
    if written < installed:
        raise SparsetopoError(f"{path}: layer {label!r} was built by version {written} of {construction}, whose masks "
                              f"this sparsetopo (version {installed}) no longer builds: load it with the sparsetopo "
                              "that wrote it")
