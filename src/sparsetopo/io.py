"""Compact model files: :func:`save` / :func:`load` in the safetensors format, and :func:`export_onnx`.

The paper points at "resource constrained applications such as connected and mobile
devices", where a structured topology is described by a handful of numbers instead of a
mask. A file written by :func:`save` holds, as tensors, only the *connected* weights of every
sparse layer (``NAME.values``: length ``nnz`` for a linear layer, ``(nnz, kH, kW)`` for a
convolution, in the topology's CSR order) and its bias, plus every other entry of the model's
``state_dict`` unchanged (dense layers, normalisation statistics). Each sparse layer's
connectivity is stored as its recipe in the file's metadata: construction, sizes, ``k``, seed
and construction version, plus the sha256 fingerprint of its edge set. :func:`load` rebuilds
each mask with :func:`sparsetopo.topology.build` and checks the fingerprint, so a file loads
only into exactly the masks it was trained with. A file written with a construction version
other than the installed one is refused: a newer one needs a newer sparsetopo, and an older
one's masks are no longer what ``build`` returns.

The model's structure is stored too when sparsetopo can rebuild it on its own (a
:class:`~sparsetopo.nn.SparseMLP`, a sparse layer, or ``nn.Sequential`` containers of sparse
layers and common parameter-free or standard torch layers: :data:`REBUILDABLE`); then
``load(path)`` needs nothing else. For any other model, pass a freshly constructed instance
of its (dense) architecture: ``load(path, model=MyNet())``.

:func:`export_onnx` writes an ONNX graph for inference (onnxruntime, mobile runtimes) in which
each sparse layer takes a form whose bytes follow its connections (:mod:`sparsetopo.onnx_export`),
or, with ``dense=True``, the dense operator with its pruned weights as zeros.

safetensors, onnx and onnxruntime are optional: ``pip install 'sparsetopo[io]'``.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
from pathlib import Path

import torch
from torch import nn

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.nn import SparseConv2d, SparseLinear, SparseMLP
from sparsetopo.nn.sparsify import SPARSE_LAYERS, layer_places, put_module, summarize
from sparsetopo.topology import CONSTRUCTIONS, build

FORMAT = "sparsetopo"
FORMAT_VERSION = 1
METADATA_KEY = "sparsetopo"

#: Torch layers whose constructor arguments :func:`save` records, so that :func:`load` can
#: rebuild an ``nn.Sequential`` made of them (and of sparse layers) without the model's class.
REBUILDABLE = {cls.__name__: cls for cls in (
    nn.Linear, nn.Conv2d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU, nn.Softmax, nn.LogSoftmax,
    nn.Flatten, nn.Unflatten, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Dropout2d,
    nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)}


def _require(module: str, purpose: str):
    try:
        return __import__(module, fromlist=["_"])
    except ImportError:
        raise SparsetopoError(f"{purpose} needs the '{module.split('.')[0]}' package: "
                              "pip install 'sparsetopo[io]'") from None


# -- save ------------------------------------------------------------------------------------
def save(model: nn.Module, path, *, input_shape=None) -> Path:
    """Write ``model`` to ``path`` (safetensors) with only its connected weights; atomic.

    ``input_shape``: the shape of one input batch (e.g. ``(1, 1, 28, 28)``), recorded for
    ``sparsetopo export`` (optional). Returns the path.
    """
    st = _require("safetensors.torch", "sparsetopo.save")
    layers, tensors, sparse_keys = {}, {}, set()
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, SPARSE_LAYERS):
            prefix = f"{name}." if name else ""
            sparse_keys |= {prefix + key for key in module.state_dict()}
    for name, module in model.named_modules():  # each sparse layer once, by its canonical name
        if not isinstance(module, SPARSE_LAYERS):
            continue
        prefix = f"{name}." if name else ""
        layers[name] = _recipe(module)
        tensors[prefix + "values"] = module.connected_weights().detach().cpu().contiguous()
        if module.bias is not None:
            tensors[prefix + "bias"] = module.bias.detach().cpu().clone().contiguous()
    for key, value in model.state_dict().items():
        if key not in sparse_keys:
            tensors[key] = value.detach().cpu().clone().contiguous()
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "sparsetopo_version": _version(),
            "layers": layers, "architecture": describe_architecture(model),
            "input_shape": None if input_shape is None else [int(n) for n in input_shape]}
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info)})
    return Path(path)


def _recipe(module) -> dict:
    t = module.topology
    recipe = {"kind": "linear" if isinstance(module, SparseLinear) else "conv2d", "construction": t.construction,
              "n_in": t.n_in, "n_out": t.n_out, "k": t.k, "seed": t.seed, "version": t.version,
              "fingerprint": t.fingerprint, "backend": module.backend, "bias": module.bias is not None}
    if isinstance(module, SparseConv2d):
        recipe["conv"] = module.conv_kwargs()
    return recipe


def _version() -> str:
    from sparsetopo import __version__

    return __version__


# -- the model's structure -------------------------------------------------------------------
def describe_architecture(model: nn.Module) -> dict | None:
    """A JSON description from which :func:`load` rebuilds ``model``'s structure, or None when
    it holds a module sparsetopo cannot rebuild on its own (a custom class)."""
    seen: dict[int, str] = {}

    def node(module, path):
        if id(module) in seen:
            return {"alias": seen[id(module)]}
        seen[id(module)] = path
        if isinstance(module, SPARSE_LAYERS):
            return {"sparse": path}
        if isinstance(module, SparseMLP):
            for i, layer in enumerate(module.layers):
                seen[id(layer)] = f"{path}.layers.{i}" if path else f"layers.{i}"
            return {"type": "SparseMLP", "activation": module.activation_name, "dropout": list(module.dropout),
                    "output": getattr(module, "output", "activation"), "layers": len(module.layers)}
        if type(module) is nn.Sequential:
            children = []
            for name, child in module.named_children():
                described = node(child, f"{path}.{name}" if path else name)
                if described is None:
                    return None
                children.append([name, described])
            return {"type": "Sequential", "children": children}
        if type(module).__name__ in REBUILDABLE and type(module) is REBUILDABLE[type(module).__name__]:
            kwargs = _constructor_kwargs(module)
            return None if kwargs is None else {"type": type(module).__name__, "kwargs": kwargs}
        return None

    return node(model, "")


def _constructor_kwargs(module: nn.Module) -> dict | None:
    kwargs = {}
    for name, param in inspect.signature(type(module).__init__).parameters.items():
        if name in ("self", "device", "dtype") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "bias":  # a bool argument, stored as a Parameter or None
            kwargs[name] = getattr(module, "bias", None) is not None
            continue
        if not hasattr(module, name):
            return None
        value = getattr(module, name)
        value = list(value) if isinstance(value, tuple) else value
        if not _plain(value):
            return None
        kwargs[name] = value
    return kwargs


def _plain(value) -> bool:
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _rebuild(description: dict, layers: dict, backend, path: str = "") -> nn.Module:
    built: dict[str, nn.Module] = {}

    def make(desc, where):
        if "alias" in desc:
            return built[desc["alias"]]
        if "sparse" in desc:
            module = _sparse_layer(desc["sparse"], layers[desc["sparse"]], backend, path)
        elif desc["type"] == "SparseMLP":
            names = [f"{where}.layers.{i}" if where else f"layers.{i}" for i in range(desc["layers"])]
            recipes = [layers[n] for n in names]
            topologies = [_topology(n, r, path) for n, r in zip(names, recipes)]
            kwargs = {} if desc.get("output", "activation") == "activation" else {"output": desc["output"]}
            module = SparseMLP(topologies, activation=desc["activation"], dropout=desc["dropout"],
                               backend=_backend(recipes[0], backend), **kwargs)
            for n, layer in zip(names, module.layers):
                built[n] = layer
        elif desc["type"] == "Sequential":
            module = nn.Sequential()
            for name, child in desc["children"]:
                module.add_module(name, make(child, f"{where}.{name}" if where else name))
        else:
            cls = REBUILDABLE.get(desc["type"])
            if cls is None:
                raise SparsetopoError(f"{path}: unknown module type {desc['type']!r} in the file's architecture")
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in desc["kwargs"].items()}
            module = cls(**kwargs)
        built[where] = module
        return module

    return make(description, "")


# -- load ------------------------------------------------------------------------------------
def read_metadata(path) -> dict:
    """The sparsetopo metadata of a file written by :func:`save` (format, layers' recipes,
    architecture, input shape), checked for format and construction versions."""
    st = _require("safetensors", "sparsetopo.load")
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
    info = json.loads(meta[METADATA_KEY])
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise SparsetopoError(f"{path}: file format {info.get('format')} version {info.get('format_version')} "
                              f"is not supported (this sparsetopo reads {FORMAT} version {FORMAT_VERSION})")
    for name, recipe in info["layers"].items():
        _check_version(path, name, recipe)
    return info


def _check_version(path, name, recipe) -> None:
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


def load(path, model: nn.Module | None = None, *, backend: str | None = None, device=None) -> nn.Module:
    """The model saved in ``path`` by :func:`save`, with identical weights and masks.

    model : None to rebuild the structure recorded in the file (module docstring), or an
        instance of the saved model's architecture, dense or already sparsified; its layers
        named in the file are replaced by sparse ones and every weight is loaded into it.
    backend : the linear layers' backend; None keeps the saved one (masked off CPU).
    device : where to put the model (default: CPU).

    Raises SparsetopoError naming the file and the problem (not a sparsetopo file, another
    construction version, a model that does not match the file).
    """
    st = _require("safetensors.torch", "sparsetopo.load")
    info = read_metadata(path)
    layers = info["layers"]
    target = torch.device(device if device is not None else "cpu")
    if target.type != "cpu" and backend in (None, "auto"):
        backend = "masked"
    tensors = st.load_file(str(path), device="cpu")
    if model is None:
        if info.get("architecture") is None:
            raise SparsetopoError(f"{path} holds a model of a custom class, which sparsetopo cannot rebuild alone: "
                                  "pass an instance of its architecture, load(path, model=MyNet())")
        model = _rebuild(info["architecture"], layers, backend, str(path))
    else:
        model = _install_sparse_layers(model, layers, backend, str(path))

    sparse_keys = set()
    for name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, SPARSE_LAYERS):
            prefix = f"{name}." if name else ""
            sparse_keys |= {prefix + key for key in module.state_dict()}
    for name, module in model.named_modules():
        if isinstance(module, SPARSE_LAYERS):
            prefix = f"{name}." if name else ""
            if name not in layers:
                raise SparsetopoError(f"{path} has no sparse layer {name!r}, but the model has: "
                                      "was the file saved from this architecture?")
            with torch.no_grad():
                module.set_connected_weights(_take(tensors, prefix + "values", path))
                if module.bias is not None:
                    module.bias.copy_(_take(tensors, prefix + "bias", path))
    stored = {f"{name}.{key}" if name else key for name in layers for key in ("values", "bias")}
    rest = {k: v for k, v in tensors.items() if k not in sparse_keys and k not in stored}
    wanted = {k for k in model.state_dict() if k not in sparse_keys}
    missing, unexpected = sorted(wanted - set(rest)), sorted(set(rest) - wanted)
    if missing or unexpected:
        raise SparsetopoError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                              "was it saved from this architecture?")
    model.load_state_dict(rest, strict=False)
    model = model.to(target)
    model.sparsetopo_summary = summarize(model)
    return model


def _take(tensors, key, path):
    if key not in tensors:
        raise SparsetopoError(f"{path} lacks the tensor {key!r}: the file is damaged or not from sparsetopo.save")
    return tensors[key]


def _backend(recipe, backend) -> str:
    chosen = backend if backend is not None else recipe["backend"]
    return chosen if recipe["kind"] == "linear" else "masked"


def _topology(name, recipe, path):
    t = build(recipe["construction"], recipe["n_in"], recipe["n_out"], recipe["k"], seed=recipe["seed"] or 0)
    if t.fingerprint != recipe["fingerprint"]:
        raise SparsetopoError(f"{path}: the mask rebuilt for layer {name!r} differs from the saved one "
                              "(same construction version, other edges): the file was not written by sparsetopo.save")
    return t


def _sparse_layer(name, recipe, backend, path):
    topology = _topology(name, recipe, path)
    if recipe["kind"] == "linear":
        return SparseLinear(topology, backend=_backend(recipe, backend), bias=recipe["bias"])
    conv = recipe["conv"]
    padding = conv["padding"] if isinstance(conv["padding"], str) else tuple(conv["padding"])
    return SparseConv2d(topology, tuple(conv["kernel_size"]), tuple(conv["stride"]), padding,
                        tuple(conv["dilation"]), bias=conv["bias"], padding_mode=conv["padding_mode"])


def _install_sparse_layers(model, layers, backend, path):
    """Replace ``model``'s layers named in the file by sparse layers built from their recipes."""
    places = layer_places(model)
    for name, recipe in layers.items():
        try:
            current = model.get_submodule(name) if name else model
        except AttributeError:
            raise SparsetopoError(f"{path} has a sparse layer {name!r}, but the model has no module of that name: "
                                  "was the file saved from this architecture?") from None
        if isinstance(current, SPARSE_LAYERS):
            if current.topology.fingerprint != recipe["fingerprint"]:
                raise SparsetopoError(f"{path}: layer {name!r} of the model has other connections than the file's")
            continue
        if name not in places:
            raise SparsetopoError(f"{path}: layer {name!r} of the model is a {type(current).__name__}, "
                                  f"not the nn.Linear / nn.Conv2d the file's {recipe['kind']} layer replaces")
        sizes = (current.in_features, current.out_features) if isinstance(current, nn.Linear) else \
            (current.in_channels, current.out_channels)
        if sizes != (recipe["n_in"], recipe["n_out"]):
            raise SparsetopoError(f"{path}: layer {name!r} is {sizes[0]}->{sizes[1]} in the model but "
                                  f"{recipe['n_in']}->{recipe['n_out']} in the file")
        model = put_module(model, places[name][1], _sparse_layer(name, recipe, backend, path))
    return model


# -- ONNX ------------------------------------------------------------------------------------
def dense_equivalent(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which every sparse layer is the dense torch layer computing the
    same function (pruned weights as zeros): what ONNX and other exporters can trace."""
    dense = copy.deepcopy(model)
    replaced: dict[int, nn.Module] = {}
    for path, module in list(dense.named_modules(remove_duplicate=False)):
        if isinstance(module, SPARSE_LAYERS):
            new = replaced.setdefault(id(module), module.to_dense())
            if path == "":
                return new
            parent, _, attr = path.rpartition(".")
            setattr(dense.get_submodule(parent) if parent else dense, attr, new)
    return dense


def export_onnx(model: nn.Module, path, *, input_shape=None, example_input: torch.Tensor | None = None,
                opset: int = 17, dense: bool = False):
    """Write ``model`` as an ONNX graph that onnxruntime runs with the same outputs.

    Give the shape of one input batch (``input_shape``) or an example input; the batch
    dimension is exported as dynamic. The model runs in eval mode (no dropout). Each sparse
    layer is written in a form whose bytes and work follow its connections
    (:mod:`sparsetopo.onnx_export`); ``dense=True`` writes the dense equivalent instead (pruned
    weights as zeros), which any runtime and opset runs.

    Returns a :class:`sparsetopo.onnx_export.OnnxExport`: ``.path`` (also its ``os.fspath``)
    and ``.layers``, per sparse layer the form chosen, its bytes and the dense layer's bytes.
    """
    from sparsetopo.onnx_export import dense_summary, export_sparse, trace_to_onnx

    onnx = _require("onnx", "sparsetopo.export_onnx")
    if example_input is None:
        if input_shape is None:
            raise SparsetopoError("export_onnx needs input_shape (e.g. (1, 1, 28, 28)) or example_input")
        shape = [int(n) for n in input_shape]
        if not shape or min(shape) < 1:
            raise SparsetopoError(f"input_shape={list(input_shape)} must be positive sizes, batch first")
        param = next(model.parameters(), None)
        example_input = torch.zeros(shape, dtype=param.dtype if param is not None else torch.float32)
    if not dense:
        return export_sparse(model, path, example_input, opset)
    proto = trace_to_onnx(dense_equivalent(model).cpu().eval(), example_input, opset)
    with atomic_path(path) as tmp:
        onnx.save_model(proto, str(tmp))
    return dense_summary(model, path)


def onnx_difference(model: nn.Module, path, example_input: torch.Tensor) -> float:
    """Largest absolute difference between ``model`` (eval mode, no gradient) and the ONNX file
    ``path`` run by onnxruntime's CPU provider on ``example_input``."""
    ort = _require("onnxruntime", "checking an ONNX export")
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            expected = model(example_input).detach().cpu().numpy()
    finally:
        model.train(was_training)
    got = session.run(None, {session.get_inputs()[0].name: example_input.detach().cpu().numpy()})[0]
    if got.shape != expected.shape:
        raise SparsetopoError(f"{path}: onnxruntime returned shape {got.shape}, the model {expected.shape}")
    return float(abs(got - expected).max()) if got.size else 0.0
