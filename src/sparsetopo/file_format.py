"""What a file written by :func:`sparsetopo.save` holds, and the checks of its metadata.

The tensors are the connected weights of every sparse layer in its topology's CSR order
(``NAME.values``), its bias, and every other ``state_dict`` entry of the model; the metadata
(JSON under :data:`METADATA_KEY`) names the format and its version, each sparse layer's recipe
and, when sparsetopo can rebuild it, the model's structure (:mod:`sparsetopo.io`).

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
    shape = info.get("input_shape")
    if shape is not None and not (isinstance(shape, list) and shape
                                  and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        raise SparsetopoError(f"{path}: the recorded input_shape={shape!r} is not a list of positive sizes")
    return info


#: Every field of a sparse layer's recipe and the types it may hold.
RECIPE_FIELDS = {"kind": str, "construction": str, "n_in": int, "n_out": int, "k": int, "seed": (int, type(None)),
                 "version": int, "fingerprint": str, "backend": str, "bias": bool}
LAYER_KINDS = ("linear", "conv1d", "conv2d", "conv3d")
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
    if recipe["kind"] not in LAYER_KINDS:
        raise SparsetopoError(f"{path}: layer {label!r} has kind={recipe['kind']!r}: this sparsetopo reads "
                              f"{', '.join(map(repr, LAYER_KINDS))} layers")
    if recipe["kind"] != "linear":
        if not isinstance(recipe.get("conv"), dict):
            raise SparsetopoError(f"{path}: the {recipe['kind']} layer {label!r} has no 'conv' arguments in its recipe")
        check(CONV_FIELDS, recipe["conv"], "conv.")


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
