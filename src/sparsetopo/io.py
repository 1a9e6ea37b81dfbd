"""Compact model files: :func:`save` / :func:`load` in the safetensors format.

The paper points at "resource constrained applications such as connected and mobile
devices", where a structured topology is described by a handful of numbers instead of a
mask. A file written by :func:`save` holds, as tensors, only the *connected* weights of every
sparse layer (``NAME.values``: length ``nnz`` for a linear layer, block layers included,
``(nnz, kH, kW)`` for a convolution, in the topology's CSR order) and its bias, plus every other entry of the model's
``state_dict`` unchanged (dense layers, normalisation statistics). Each sparse layer's
connectivity is stored as its recipe in the file's metadata: construction, sizes, ``k``, seed,
construction version and, for a block topology, its block sizes, plus the sha256 fingerprint
of its edge set. :func:`load` rebuilds
each mask with :func:`sparsetopo.topology.build` and checks the fingerprint, so a file loads
only into exactly the masks it was trained with. A file written with a construction version
other than the installed one is refused: a newer one needs a newer sparsetopo, and an older
one's masks are no longer what ``build`` returns.

The model's structure is stored too when sparsetopo can rebuild it on its own (a
:class:`~sparsetopo.nn.SparseMLP`, a sparse layer, or ``nn.Sequential`` containers of sparse
layers and common parameter-free or standard torch layers: :data:`REBUILDABLE`); then
``load(path)`` needs nothing else. For any other model, pass a freshly constructed instance
of its (dense) architecture: ``load(path, model=MyNet())``.

The ONNX export is :mod:`sparsetopo.onnx`.

safetensors is optional: ``pip install 'sparsetopo[io]'``.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
from torch import nn

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError
from sparsetopo.file_format import FORMAT, FORMAT_VERSION, METADATA_KEY, batch_shape, read_metadata, require
from sparsetopo.nn import BlockSparseLinear, SparseConvNd, SparseLinear, SparseMLP
from sparsetopo.nn.conv import CONV_BACKENDS, SPARSE_CONVS
from sparsetopo.nn.plan import BACKENDS
from sparsetopo.nn.linear import connected_state
from sparsetopo.nn.masked_layers import MaskedParameters, file_entries, install_recipes, load_values, value_keys
from sparsetopo.nn.conv1d_layout import keep_conv1d_layout
from sparsetopo.nn.sparsify import (MADE_LAYERS, decline_fused_paths, is_linear, is_transposed_linear, keep_frozen,
                                    layer_places, layer_sizes, put_module, summarize)
from sparsetopo.topology import build

#: Torch layers whose constructor arguments :func:`save` records, so that :func:`load` can
#: rebuild an ``nn.Sequential`` made of them (and of sparse layers) without the model's class.
REBUILDABLE = {cls.__name__: cls for cls in (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU, nn.Softmax, nn.LogSoftmax,
    nn.Flatten, nn.Unflatten, nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Dropout2d,
    nn.Identity, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm)}


# -- save ------------------------------------------------------------------------------------
def save(model: nn.Module, path, *, input_shape=None) -> Path:
    """Write ``model`` to ``path`` (safetensors) with only its connected weights; atomic.

    ``input_shape``: the shape of one input batch (e.g. ``(1, 1, 28, 28)``), recorded for
    ``sparsetopo export`` (optional). Returns the path.

    Examples
    --------
    A sparsified model written and read back; :func:`load` rebuilds its structure from the file:

    >>> import torch
    >>> from torch import nn
    >>> import sparsetopo
    >>> model = sparsetopo.sparsify(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)),
    ...                             "random_regular", k=4)
    >>> path = sparsetopo.save(model, "model.safetensors", input_shape=(1, 64))
    >>> again = sparsetopo.load(path)
    >>> again[0]
    SparseLinear(random_regular, 64->32, k=4, density=0.1250, backend=...)
    >>> all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    True
    """
    st = require("safetensors.torch", "sparsetopo.save")
    layers, tensors = {}, {}
    for name, module in model.named_modules():  # each sparse layer once, by its canonical name
        if not isinstance(module, MADE_LAYERS):
            continue
        prefix = f"{name}." if name else ""
        layers[name] = _recipe(module)
        tensors[prefix + "values"] = module.connected_weights().detach().cpu().contiguous()
        if module.bias is not None:
            tensors[prefix + "bias"] = module.bias.detach().cpu().clone().contiguous()
    masked, masked_values = file_entries(model)   # recurrent layers and attention, masked in place
    tensors.update(masked_values)
    with connected_state(model):   # no dense (n_out, n_in) copy of a sparse-backend layer
        sparse_keys = _sparse_state_keys(model)
        for key, value in model.state_dict().items():
            if key not in sparse_keys:
                tensors[key] = value.detach().cpu().clone().contiguous()
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "sparsetopo_version": _version(),
            "layers": layers, "architecture": describe_architecture(model),
            "input_shape": None if input_shape is None else batch_shape(input_shape),
            **({"masked_layers": masked} if masked else {})}   # files without such layers are as before
    with atomic_path(path) as tmp:
        st.save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(info)})
    return Path(path)


def _sparse_state_keys(model: nn.Module) -> set[str]:
    """The ``state_dict`` keys of ``model``'s sparse layers, under every name each is reachable by."""
    keys = set()
    for name, module in model.named_modules(remove_duplicate=False):
        prefix = f"{name}." if name else ""
        if isinstance(module, MADE_LAYERS):
            keys |= {prefix + key for key in module.state_dict()}
        elif isinstance(module, MaskedParameters):  # its weight matrices are written as connected values
            keys |= {prefix + path for path in module.topologies}
    return keys


def _recipe(module) -> dict:
    t = module.topology
    kind = "block" if isinstance(module, BlockSparseLinear) else "linear" if isinstance(module, SparseLinear) \
        else module.kind
    recipe = {"kind": kind, "construction": t.construction,
              "n_in": t.n_in, "n_out": t.n_out, "k": t.k, "seed": t.seed, "version": t.version,
              "fingerprint": t.fingerprint, "backend": module.backend, "bias": module.bias is not None}
    if isinstance(module, SparseConvNd):
        recipe["conv"] = module.conv_kwargs()
    if t.is_blocked:
        recipe["block"] = [t.block_in, t.block_out]
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
        if isinstance(module, MADE_LAYERS):
            return {"sparse": path}
        if isinstance(module, SparseMLP):
            for i, layer in enumerate(module.layers):
                seen[id(layer)] = f"{path}.layers.{i}" if path else f"layers.{i}"
            return {"type": "SparseMLP", "activation": module.activation_name, "dropout": list(module.dropout),
                    "output": getattr(module, "output", "activation"), "layers": len(module.layers)}
        if type(module) is nn.Sequential:
            children = []
            for name, child in module._modules.items():  # named_children() would drop a repeated module
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


def _rebuild(description: dict, layers: dict, backend, path: str = "", dtypes: dict | None = None) -> nn.Module:
    """The model the file's architecture describes; ``dtypes``: each sparse layer's dtype in the file."""
    built: dict[str, nn.Module] = {}
    dtypes = dtypes or {}

    def bad(where, what):
        return SparsetopoError(f"{path}: the architecture in the file's metadata is damaged at "
                               f"{where or '<the model itself>'!r}: {what}; write the file again with sparsetopo.save")

    def recipe(name, where):
        if name not in layers:
            raise bad(where, f"sparse layer {name!r} has no recipe in 'layers'")
        return layers[name]

    def make(desc, where):
        if not isinstance(desc, dict):
            raise bad(where, f"{desc!r} is not a module description")
        if "alias" in desc:
            if desc["alias"] not in built:
                raise bad(where, f"it repeats module {desc['alias']!r}, which comes nowhere before it")
            return built[desc["alias"]]
        if "sparse" in desc:
            name = desc["sparse"]
            module = _sparse_layer(name, recipe(name, where), backend, path, dtypes.get(name))
        elif desc.get("type") == "SparseMLP":
            try:
                names = [f"{where}.layers.{i}" if where else f"layers.{i}" for i in range(desc["layers"])]
                recipes = [recipe(n, where) for n in names]
                topologies = [_topology(n, r, path) for n, r in zip(names, recipes)]
                kwargs = {} if desc.get("output", "activation") == "activation" else {"output": desc["output"]}
                # the backend of its neuron-level layers (its block layers have one path)
                first = next((i for i, r in enumerate(recipes) if r["kind"] == "linear"), 0)
                module = SparseMLP(topologies, activation=desc["activation"], dropout=desc["dropout"],
                                   backend=_backend(recipes[first], backend, dtypes.get(names[first])), **kwargs)
            except (KeyError, TypeError) as exc:
                raise bad(where, f"a SparseMLP description lacks or mistypes {exc}") from None
            module.to(dtypes.get(names[0]) or torch.float32)
            for n, layer in zip(names, module.layers):
                built[n] = layer
        elif desc.get("type") == "Sequential":
            module = nn.Sequential()
            children = desc.get("children")
            if not isinstance(children, list) or not all(isinstance(c, list) and len(c) == 2 for c in children):
                raise bad(where, "a Sequential description needs 'children' as [name, module] pairs")
            for name, child in children:
                module.add_module(str(name), make(child, f"{where}.{name}" if where else str(name)))
        else:
            cls = REBUILDABLE.get(desc.get("type"))
            if cls is None:
                raise SparsetopoError(f"{path}: unknown module type {desc.get('type')!r} in the file's architecture "
                                      f"at {where or '<the model itself>'!r} (known: Sequential, SparseMLP, "
                                      f"{', '.join(REBUILDABLE)})")
            if not isinstance(desc.get("kwargs"), dict):
                raise bad(where, f"{desc['type']} needs its constructor arguments as 'kwargs'")
            kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in desc["kwargs"].items()}
            try:
                module = cls(**kwargs)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise bad(where, f"{desc['type']}(**{desc['kwargs']!r}) fails: {exc}") from None
        built[where] = module
        return module

    return make(description, "")


# -- load ------------------------------------------------------------------------------------
def load(path, model: nn.Module | None = None, *, backend: str | None = None, device=None) -> nn.Module:
    """The model saved in ``path`` by :func:`save`, with identical weights and masks.

    model : None to rebuild the structure recorded in the file (module docstring), or an
        instance of the saved model's architecture, dense or already sparsified; its layers
        named in the file are replaced by sparse ones and every weight is loaded into it.
    backend : the linear layers' backend; None keeps the saved one (masked off CPU). Block
        layers (:class:`~sparsetopo.nn.BlockSparseLinear`) have one path and keep it.
    device : where to put the model (default: CPU).

    Raises SparsetopoError naming the file and the problem (not a sparsetopo file, another
    construction version, a model that does not match the file).

    Examples
    --------
    A file read into a fresh instance of the saved architecture, on the masked backend:

    >>> from torch import nn
    >>> import sparsetopo
    >>> def mlp():
    ...     return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> path = sparsetopo.save(sparsetopo.sparsify(mlp(), "regular_rotating", density=0.5), "model.safetensors")
    >>> sparsetopo.load(path, model=mlp(), backend="masked")[2]
    SparseLinear(regular_rotating, 32->10, k=5, density=0.5000, backend=masked)
    """
    st = require("safetensors.torch", "sparsetopo.load")
    info = read_metadata(path)
    layers = info["layers"]
    try:
        target = torch.device(device if device is not None else "cpu")
    except (RuntimeError, TypeError):
        raise SparsetopoError(f"device={device!r} is not a torch device: use 'cpu', 'cuda' or 'cuda:N'") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise SparsetopoError(f"device={device!r} but this torch sees no CUDA GPU: use device='cpu'")
    if target.type != "cpu" and backend in (None, "auto"):
        backend = "masked"
    if backend is not None and backend not in BACKENDS:
        raise SparsetopoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "sparse" and target.type != "cpu":
        raise SparsetopoError(f"backend='sparse' computes on CPU only, not on device={device!r}: use 'masked'")
    tensors = st.load_file(str(path), device="cpu")
    for name, recipe in layers.items():
        prefix = f"{name}." if name else ""
        if not recipe["bias"] and prefix + "bias" in tensors:
            raise SparsetopoError(f"{path}: layer {name or '<the model itself>'!r} has bias: false in its recipe but "
                                  f"the file holds {prefix}bias: the metadata was edited; write the file again "
                                  "with sparsetopo.save")
    dtypes = {name: _take(tensors, (f"{name}." if name else "") + "values", path).dtype for name in layers}
    if model is None:
        if info.get("architecture") is None:
            raise SparsetopoError(f"{path} holds a model of a custom class, which sparsetopo cannot rebuild alone: "
                                  "pass an instance of its architecture, load(path, model=MyNet())")
        model = _rebuild(info["architecture"], layers, backend, str(path), dtypes)
        _take_file_dtypes(model, tensors)
    else:
        model = _install_sparse_layers(model, layers, backend, str(path))
        install_recipes(model, info.get("masked_layers", {}), str(path))
        model = _materialise(model, target, path)
    decline_fused_paths(model)

    with connected_state(model):
        sparse_keys = _sparse_state_keys(model)
        wanted = {k for k in model.state_dict() if k not in sparse_keys}
    for name, module in model.named_modules():
        if isinstance(module, MADE_LAYERS):
            prefix = f"{name}." if name else ""
            if name not in layers:
                raise SparsetopoError(f"{path} has no sparse layer {name!r}, but the model has: "
                                      "was the file saved from this architecture?")
            with torch.no_grad():
                module.set_connected_weights(_take(tensors, prefix + "values", path))
                if module.bias is not None:
                    module.bias.copy_(_take(tensors, prefix + "bias", path))
    stored = {f"{name}.{key}" if name else key for name in layers for key in ("values", "bias")}
    stored |= value_keys(info.get("masked_layers", {}))
    rest = {k: v for k, v in tensors.items() if k not in sparse_keys and k not in stored}
    missing, unexpected = sorted(wanted - set(rest)), sorted(set(rest) - wanted)
    if missing or unexpected:
        raise SparsetopoError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}; "
                              "was it saved from this architecture?")
    model.load_state_dict(rest, strict=False)
    load_values(model, info.get("masked_layers", {}), lambda key: _take(tensors, key, path))
    model = model.to(target)
    model.sparsetopo_summary = summarize(model)
    return model


def _materialise(model: nn.Module, target: torch.device, path) -> nn.Module:
    """A model built on the ``meta`` device, given storage on ``target``: every tensor is then
    read from the file, and the sparse layers derive their masks (:mod:`sparsetopo.nn.masking`).
    A non-persistent buffer of another module is in no file, so such a model is refused."""
    tensors = [*model.parameters(), *model.buffers()]
    if not any(t.is_meta for t in tensors):
        return model
    for name, module in model.named_modules():
        if isinstance(module, (*MADE_LAYERS, MaskedParameters)):
            continue
        unsaved = sorted(b for b in module._non_persistent_buffers_set if module._buffers.get(b) is not None)
        if unsaved:
            buffer = f"{name}.{unsaved[0]}" if name else unsaved[0]
            raise SparsetopoError(f"{path}: the model is on the meta device, and its buffer {buffer!r} is not saved "
                                  "in any file (a non-persistent buffer), so loading cannot fill it: build the "
                                  "model on a real device (e.g. model.to_empty(device='cpu') and initialise that "
                                  "buffer), then load")
    return model.to_empty(device=target)


def _take_file_dtypes(model: nn.Module, tensors) -> None:
    """Give a rebuilt model's dense parameters and buffers the floating dtype they have in the
    file (float64 stays float64)."""
    for key, tensor in [*model.named_parameters(), *model.named_buffers()]:
        stored = tensors.get(key)
        if stored is not None and stored.is_floating_point() and tensor.is_floating_point() \
                and stored.dtype != tensor.dtype:
            tensor.data = tensor.data.to(stored.dtype)


def _take(tensors, key, path):
    if key not in tensors:
        raise SparsetopoError(f"{path} lacks the tensor {key!r}: the file is damaged or not from sparsetopo.save")
    return tensors[key]


def _backend(recipe, backend, dtype=None) -> str:
    """The backend of a layer built from ``recipe``: ``backend`` (None: the saved one); the
    sparse backend computes in float32 only, so other dtypes are masked."""
    chosen = backend if backend is not None else recipe["backend"]
    if recipe["kind"] != "linear":
        return chosen if chosen in CONV_BACKENDS else "auto"
    if dtype is not None and dtype != torch.float32 and chosen != "masked":
        if backend == "sparse":
            raise SparsetopoError(f"backend='sparse' computes in float32, but the file's weights are {dtype}: "
                                  "use backend='masked' or 'auto'")
        return "masked"
    return chosen


def _topology(name, recipe, path):
    t = build(recipe["construction"], recipe["n_in"], recipe["n_out"], recipe["k"], seed=recipe["seed"] or 0,
              block=tuple(recipe.get("block", (1, 1))))
    if t.fingerprint != recipe["fingerprint"]:
        raise SparsetopoError(f"{path}: the mask rebuilt for layer {name!r} differs from the saved one "
                              "(same construction version, other edges): the file was not written by sparsetopo.save")
    return t


def _sparse_layer(name, recipe, backend, path, dtype=None):
    topology = _topology(name, recipe, path)
    if recipe["kind"] == "linear":
        layer = SparseLinear(topology, backend=_backend(recipe, backend, dtype), bias=recipe["bias"])
        layer.dense_when_faster = backend != "sparse"   # only an explicit "sparse" pins the kernels (nn.plan)
    elif recipe["kind"] == "block":   # one path whatever the backend asked for
        layer = BlockSparseLinear(topology, bias=recipe["bias"])
    else:
        conv = recipe["conv"]
        padding = conv["padding"] if isinstance(conv["padding"], str) else tuple(conv["padding"])
        try:
            layer = SPARSE_CONVS[len(conv["kernel_size"])](
                topology, tuple(conv["kernel_size"]), tuple(conv["stride"]), padding, tuple(conv["dilation"]),
                conv.get("groups", 1), bias=conv["bias"], padding_mode=conv["padding_mode"],
                backend=_backend(recipe, backend, dtype))
        except SparsetopoError as exc:
            raise SparsetopoError(f"{path}: layer {name!r}: {exc}") from None
    return layer.to(dtype) if dtype is not None and dtype.is_floating_point else layer


def _install_sparse_layers(model, layers, backend, path):
    """Replace ``model``'s layers named in the file by sparse layers built from their recipes."""
    places = layer_places(model)
    for name, recipe in layers.items():
        try:
            current = model.get_submodule(name) if name else model
        except AttributeError:
            raise SparsetopoError(f"{path} has a sparse layer {name!r}, but the model has no module of that name: "
                                  "was the file saved from this architecture?") from None
        if isinstance(current, MADE_LAYERS):
            if current.topology.fingerprint != recipe["fingerprint"]:
                raise SparsetopoError(f"{path}: layer {name!r} of the model has other connections than the file's")
            continue
        if name not in places:
            raise SparsetopoError(f"{path}: layer {name!r} of the model is a {type(current).__name__}, "
                                  f"not the nn.Linear / convolution the file's {recipe['kind']} layer replaces")
        _check_same_layer(path, name, current, recipe)   # kind and groups first: sizes are per group
        sizes = layer_sizes(current)
        if sizes != (recipe["n_in"], recipe["n_out"]):
            raise SparsetopoError(f"{path}: layer {name!r} is {sizes[0]}->{sizes[1]} in the model but "
                                  f"{recipe['n_in']}->{recipe['n_out']} in the file")
        new = _sparse_layer(name, recipe, backend, path, current.weight.dtype)
        keep_frozen(new, current)
        keep_conv1d_layout(new, is_transposed_linear(current))
        model = put_module(model, places[name][1], new.to(current.weight.device))
    return model


def _check_same_layer(path, name, current: nn.Module, recipe) -> None:
    """The model's dense layer has the file's kind, bias and (convolution) arguments."""
    label = name or "<the model itself>"
    kind = "linear" if is_linear(current) else f"conv{len(current.kernel_size)}d"
    if kind != ("linear" if recipe["kind"] == "block" else recipe["kind"]):   # a block layer replaces a linear one
        raise SparsetopoError(f"{path}: layer {label!r} is an {type(current).__name__} in the model but a "
                              f"{recipe['kind']} layer in the file")
    if (current.bias is not None) != recipe["bias"]:
        raise SparsetopoError(f"{path}: layer {label!r} has {'a' if current.bias is not None else 'no'} bias in the "
                              f"model but {'a' if recipe['bias'] else 'no'} bias in the file")
    if kind != "linear":
        padding = current.padding if isinstance(current.padding, str) else list(current.padding)
        mine = {"kernel_size": list(current.kernel_size), "stride": list(current.stride), "padding": padding,
                "dilation": list(current.dilation), "padding_mode": current.padding_mode,
                "bias": current.bias is not None, "groups": current.groups}
        for key, value in mine.items():
            if recipe["conv"].get(key, 1 if key == "groups" else None) != value:   # files before groups: 1
                raise SparsetopoError(f"{path}: layer {label!r} has {key}={value!r} in the model but "
                                      f"{key}={recipe['conv'].get(key)!r} in the file: was the file saved from "
                                      "this architecture?")
