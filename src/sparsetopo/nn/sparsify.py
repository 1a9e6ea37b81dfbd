"""``sparsify``: the paper's topologies in any PyTorch network.

The paper trains its constructions inside one MLP. :func:`sparsify` puts them into a model
someone else wrote: every selected ``nn.Linear`` becomes a :class:`~sparsetopo.nn.SparseLinear`
and every selected ``nn.Conv1d``/``2d``/``3d`` a :class:`~sparsetopo.nn.SparseConv1d`/``2d``/``3d``
(:mod:`sparsetopo.nn.conv`; within each group for a grouped one), each with the same
call signature and output shape, its connectivity built by one construction. A layer is read
as the paper's bipartite graph from its inputs to its outputs (channels, for a convolution),
so ``k`` is the out-degree of every input and ``density = k / n_out``. With ``block=b`` each
layer is built on blocks of ``b`` neurons (channels): ``k`` counts output blocks per input
block, and a linear layer becomes a :class:`~sparsetopo.nn.BlockSparseLinear`, which computes
only its ``b x b`` tiles, and a convolution one grouped convolution over its channel blocks.

Where each number comes from (docs/design.md, "Seed recipe"): layer ``name`` is built with
``build(construction, n_in, n_out, k, seed=derive_seed(seed, "topology", name))`` and, without
``keep_weights``, initialised from ``rng(seed, "init", name)``; renaming a layer changes its
mask, adding another layer elsewhere does not.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Iterable, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from sparsetopo.errors import SparsetopoError, check_int
from sparsetopo.nn.plan import BACKENDS, layer_backends
from sparsetopo.nn.block import BlockSparseLinear
from sparsetopo.nn.conv1d_layout import keep_conv1d_layout
from sparsetopo.nn.conv import SparseConvNd, depthwise_reason, sparse_conv_like
from sparsetopo.nn.coverage import WARN_DENSE_SHARE, Coverage, CoverageWarning, coverage
from sparsetopo.nn.init import INITIALISERS
from sparsetopo.nn.linear import SparseLinear
from sparsetopo.nn.embedding import embedding_refusal, embedding_topologies
from sparsetopo.nn.masked_layers import (GATE_RULES, MASKED_TYPES, MaskedParameters, is_masked_kind, mask_layer,
                                         plan_layer, summary_row)
from sparsetopo.nn.ties import parameter_owners, tie
from sparsetopo.seeding import derive_seed, rng
from sparsetopo.topology import Topology, build, get_construction
from sparsetopo.topology.blocks import n_blocks

#: The module types sparsify replaces (exactly these types: a subclass such as the output
#: projection inside nn.MultiheadAttention is read by its owner's functional code, not called).
REPLACEABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_transposed_linear(module: nn.Module) -> bool:
    """Hugging Face ``transformers``' ``Conv1D`` (GPT-2 and its family): a linear layer that
    stores its weight ``(in, out)`` and computes ``x @ weight + bias``. Recognised by its class
    name and shape (``nf`` outputs), so ``transformers`` is not a dependency."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int)
            and isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == module.nf)


def is_linear(module: nn.Module) -> bool:
    """A layer sparsify replaces by a (block) sparse linear layer: ``nn.Linear`` or ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_transposed_linear(module)
SPARSE_LAYERS = (SparseLinear, SparseConvNd)
#: Every layer sparsify makes, block layers included: what its summaries count as sparse, what
#: sparsetopo.save writes and what the ONNX export writes in its sparse forms.
MADE_LAYERS = (*SPARSE_LAYERS, BlockSparseLinear)
LINEAR_LAYERS = (SparseLinear, BlockSparseLinear)
#: Every sparse layer, torch's layers masked in place (recurrent, attention) included.
SUMMARY_LAYERS = (*MADE_LAYERS, MaskedParameters)


def sparsify(model: nn.Module, construction: str, *, density: float | None = None, k: int | None = None,
             seed: int = 0, backend: str = "auto", include: Iterable | None = None,
             exclude: Iterable | None = None, keep_weights: bool = True, init: str = "glorot",
             strict: bool = False, block: int | tuple[int, int] = 1, gates: str = "shared") -> nn.Module:
    """Replace the selected ``nn.Linear`` and ``nn.Conv1d``/``2d``/``3d`` layers of ``model`` by sparse
    ones, and mask the weight matrices of its ``nn.LSTM``, ``nn.GRU``, ``nn.RNN``, ``nn.MultiheadAttention``
    and ``nn.Embedding``.

    Hugging Face ``transformers``' ``Conv1D`` (GPT-2's attention and MLP projections), a linear
    layer that stores its weight ``(in, out)``, is replaced as an ``nn.Linear`` is: the same
    bipartite graph from its ``nx`` inputs to its ``nf`` outputs, its weights carried over.

    Recurrent layers and attention keep their class's forward and fused kernels: every weight
    matrix (each gate, layer and direction; each projection, the packed ``in_proj_weight`` as
    three) is masked by its own topology, read as :mod:`sparsetopo.nn.recurrent`,
    :mod:`sparsetopo.nn.attention` and :mod:`sparsetopo.nn.embedding` describe, its parameters keeping torch's names and shapes.

    Parameters
    ----------
    model : any ``nn.Module``; changed in place (a model that *is* one layer is replaced, so
        always use the returned module).
    construction : a name in :data:`sparsetopo.CONSTRUCTIONS`, used for every selected layer.
    density, k : exactly one: the fraction of each layer's connections to keep
        (``k = round(density * n_out)``, halves rounded up), or the out-degree ``k`` of every input.
        With ``block`` > 1 both count blocks: ``k`` output blocks per input block, and
        ``k = round(density * ceil(n_out / b_out))``; the summary gives each layer's exact density.
    seed : every layer's topology and (without ``keep_weights``) initial weights derive from
        it and the layer's name.
    backend : "auto", "masked" or "sparse" for the linear layers, decided once for all of
        them (:func:`~sparsetopo.nn.plan.layer_backends`, on the device and dtype the layers
        are on; "auto" is masked off CPU or off float32). Convolutions compute masked, or, in
        "auto" on channel blocks, grouped (:func:`~sparsetopo.nn.conv.conv_backend`).
    include : module names or types to replace; None selects every ``nn.Linear`` and
        convolution. A name selects that layer and every layer under it (``"features"``
        selects ``features.0`` and ``features.3``).
    exclude : names or types (as ``include``) to leave dense.
    keep_weights : connected entries keep the layer's current weights (a trained dense model
        can be sparsified), biases are kept; otherwise weights are drawn as ``init`` says and
        biases start at 0.
    init : "glorot" or "glorot_sparse" (:mod:`sparsetopo.nn.init`), used without ``keep_weights``.
    strict : a selected layer that cannot be made sparse stays dense and is reported (see
        below); with ``strict=True`` it raises instead, naming the layer and the fix.
    block : neurons (channels) per block, one int or ``(b_in, b_out)``; 1 (the default) is the
        ordinary layer. Above 1 every layer's construction runs on blocks (a side narrower than
        its block is one block) and each linear layer becomes a
        :class:`~sparsetopo.nn.BlockSparseLinear` (``backend`` must stay "auto"); a
        convolution's blocks are groups of channels, computed as one grouped convolution.
    gates : "shared" (one topology for all the gates of a recurrent matrix: a gate is part of
        its unit) or "per_gate" (one per gate); see :mod:`sparsetopo.nn.recurrent`.

    Returns
    -------
    The model. Its attribute ``sparsetopo_summary`` holds one dict per replaced layer
    (:func:`summarize`); :func:`summary` (also ``sparsetopo.summary``) lists every weight layer,
    sparse or dense, each dense one with its reason, and the share of all weights made sparse.

    Nothing stays dense silently. A selected layer stays dense, with its reason in the summary,
    when its weight is tied to another module's and the two cannot share one mask (only an
    ``nn.Embedding`` and an ``nn.Linear`` sharing its table, both selected, share one:
    :mod:`sparsetopo.nn.ties`; otherwise both ends stay dense), when it is too small for the density
    (``k`` rounds to 0) or for ``k``, or when its weight is parametrized (weight_norm and the
    like). A depthwise convolution (one input channel per group) has no channel graph: it
    stays dense with the reason "depthwise", even under ``strict=True``. Layers of types
    sparsify does not replace are listed too. When layers left dense for such reasons - not by ``include``/``exclude`` -
    hold at least a quarter of the model's weights, a
    :class:`~sparsetopo.nn.coverage.CoverageWarning` is issued once.

    Raises
    ------
    SparsetopoError naming the value: both or neither of density and k, an include or exclude
    entry that matches no layer, a sparse backend for a layer off CPU or not float32, no
    selected layer that can be made sparse (each reason listed), and under ``strict=True``
    the first selected layer that would stay dense.

    A frozen layer (``requires_grad=False``) stays frozen. Inside ``nn.TransformerEncoderLayer``
    and ``nn.TransformerEncoder`` torch's fused inference kernels, which read ``linear1.weight``
    as a dense matrix, are made to decline (:func:`decline_fused_paths`), so eval mode computes
    the sparse layers; ``nn.MultiheadAttention``'s ``out_proj`` is masked with its owner.

    Examples
    --------
    Every linear layer of a small MLP at 25% density (``k = 32`` of 128 outputs, and 3 of 10):

    >>> from torch import nn
    >>> import sparsetopo
    >>> model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    >>> model = sparsetopo.sparsify(model, "regular_rotating", density=0.25, backend="masked")
    >>> model
    Sequential(
      (0): SparseLinear(regular_rotating, 64->128, k=32, density=0.2500, backend=masked)
      (1): ReLU()
      (2): SparseLinear(regular_rotating, 128->10, k=3, density=0.3000, backend=masked)
    )
    >>> [(layer["name"], layer["connections"], layer["dense_connections"]) for layer in model.sparsetopo_summary]
    [('0', 2048, 8192), ('2', 384, 1280)]
    """
    get_construction(construction)
    if (density is None) == (k is None):
        raise SparsetopoError("sparsify needs exactly one of density (fraction of connections kept, in (0, 1]) "
                              f"and k (out-degree of every input); got density={density!r}, k={k!r}")
    if density is not None:  # any real number (numpy's float32 included), but not a bool
        if isinstance(density, bool) or not isinstance(density, numbers.Real) or not 0 < density <= 1:
            raise SparsetopoError(f"density={density!r} must be a fraction in (0, 1]")
        density = float(density)
    if k is not None:
        check_int("k", k, 1)
    seed = check_int("seed", seed, 0)
    if backend not in BACKENDS:
        raise SparsetopoError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if init not in INITIALISERS:
        raise SparsetopoError(f"unknown init {init!r}: choose one of {', '.join(INITIALISERS)}")
    block = _check_block(block, backend)
    if gates not in GATE_RULES:
        raise SparsetopoError(f"unknown gates={gates!r}: choose one of {', '.join(GATE_RULES)}")

    def make_topology(layer: str, n_in: int, n_out: int):
        return _topology(layer, construction, n_in, n_out, density, k, seed, (min(block[0], n_in),
                                                                               min(block[1], n_out)))

    places = layer_places(model)
    dense: dict[str, tuple[str, bool]] = {}  # layer -> (why it stays dense, whether the user chose it)
    refusals: list[str] = []
    selected = _select(places, include, exclude, dense)
    plans = []
    owners = parameter_owners(model)
    for name in selected:
        module = places[name][0]
        shared, tied = tie(owners, places, name, selected)
        refusal = _Refusal(*tied) if tied else _unsupported(name, module)
        if refusal is None and shared is not None:   # one table, one topology: the embedding's, at both ends
            refusal = _unsupported(shared, places[shared][0])
        topology = None
        if refusal is None and shared is not None:
            topology, refusal = embedding_topologies(shared, places[shared][0], make_topology)
        elif refusal is None and is_masked_kind(module):   # topologies, one tuple per weight matrix
            topology, refusal = plan_layer(name, module, gates, make_topology)
        elif refusal is None:
            topology, refusal = make_topology(name, *layer_sizes(module))
        if refusal is not None:
            if strict and refusal.raises:
                raise SparsetopoError(refusal.message)
            dense[name] = (refusal.reason, False)
            refusals.append(refusal.message)
            continue
        plans.append((name, module, topology, shared is not None or is_masked_kind(module)))
    if not plans:
        raise SparsetopoError("nothing to sparsify: every selected layer stays dense: " + "; ".join(refusals))

    linear = [(name, module, t) for name, module, t, in_place in plans
              if not in_place and is_linear(module) and not t.is_blocked]
    linear_backends = _linear_backends(linear, backend)
    replacements = {}
    for name, module, topology, in_place in plans:
        gen = rng(seed, "init", name)
        if in_place:   # torch's class keeps its kernels (masked_layers), a tied table its tie
            mask_layer(module, topology, gates, keep_weights, init, gen)
            continue
        if is_linear(module) and topology.is_blocked:
            new = BlockSparseLinear(topology, init=init, gen=gen, bias=module.bias is not None)
        elif is_linear(module):
            new = SparseLinear(topology, init=init, gen=gen, backend=linear_backends[name],
                               bias=module.bias is not None)
            new.dense_when_faster = backend == "auto"   # inference may run dense where faster (nn.plan)
        else:
            new = sparse_conv_like(module, topology, init=init, gen=gen, backend=backend)
        new = new.to(device=module.weight.device, dtype=module.weight.dtype)
        if keep_weights:
            copy_dense_weights(new, module)
        keep_frozen(new, module)
        keep_conv1d_layout(new, is_transposed_linear(module))
        new.train(module.training)
        replacements[name] = new

    for name, new in replacements.items():
        model = put_module(model, places[name][1], new)
    decline_fused_paths(model)
    model.sparsetopo_summary = summarize(model)
    model.sparsetopo_dense_reasons = dense
    report = summary(model)
    if report.unchosen_dense_share >= WARN_DENSE_SHARE:
        names = ", ".join(repr(layer.name) for layer in report.unchosen_dense[:5])
        more = "" if len(report.unchosen_dense) <= 5 else f" and {len(report.unchosen_dense) - 5} more"
        warnings.warn(f"sparsify left {report.unchosen_dense_share:.0%} of the model's weights dense for reasons "
                      f"you did not choose ({names}{more}); see sparsetopo.summary(model) for each reason",
                      CoverageWarning, stacklevel=2)
    return model


def summary(model: nn.Module) -> Coverage:
    """Every weight layer of ``model``, sparse or dense, with the reason each dense one stayed
    dense and the share of all weights that ended sparse (:mod:`sparsetopo.nn.coverage`).

    ``str()`` of the result is a table; a REPL shows it as one.
    """
    reasons = dict(getattr(model, "sparsetopo_dense_reasons", {}))
    for name, module in model.named_modules():  # a dense attention's out_proj is dense for its owner's reason
        if type(module) is nn.MultiheadAttention and name in reasons:
            reasons[f"{name}.out_proj" if name else "out_proj"] = reasons[name]
    return coverage(model, SUMMARY_LAYERS, reasons, _default_reason)


def _default_reason(module: nn.Module) -> tuple[str, bool]:
    """Why a weight layer sparsify recorded nothing for is dense, and whether the user chose it."""
    if type(module) in REPLACEABLE or is_transposed_linear(module) or is_masked_kind(module):
        return "not sparsified", True
    if isinstance(module, REPLACEABLE):
        return (f"{type(module).__name__} subclasses {type(module).__mro__[1].__name__}; its owner reads its "
                "weight directly (as nn.MultiheadAttention reads out_proj), so it is not replaced", False)
    return (f"{type(module).__name__} is not a type sparsify replaces "
            f"({', '.join(t.__name__ for t in (*REPLACEABLE, *MASKED_TYPES))})", False)


def keep_frozen(new: nn.Module, old: nn.Module) -> None:
    """A frozen weight or bias (``requires_grad=False``) stays frozen in its sparse replacement."""
    weight = {"sparse": "values", "block": "tiles"}.get(getattr(new, "backend", "masked"), "weight")
    weight = getattr(new, weight)
    weight.requires_grad_(old.weight.requires_grad)
    if new.bias is not None and old.bias is not None:
        new.bias.requires_grad_(old.bias.requires_grad)


class _Refusal(NamedTuple):
    """Why one selected layer stays dense: a short ``reason`` for the summary, and the full
    ``message`` (value and fix) raised under ``strict=True``."""

    reason: str
    message: str
    raises: bool = True    # under strict=True (a depthwise convolution has nothing to thin: it never raises)


def _decline_fused_kernel(module, args):
    """A no-op forward pre-hook: its presence makes torch's fused TransformerEncoderLayer
    kernel decline (it reads ``linear1.weight`` as a dense ``(out, in)`` matrix)."""
    return None


def decline_fused_paths(model: nn.Module) -> None:
    """Make torch's fused inference paths, which read ``nn.Linear`` weights directly, take the
    module-by-module path wherever a sparse layer sits inside them, so eval computes what train
    (without dropout) computes. ``nn.TransformerEncoderLayer`` declines when a submodule has a
    forward hook; ``nn.TransformerEncoder`` converts to nested tensors unless told not to."""
    for module in model.modules():
        if isinstance(module, (nn.TransformerEncoderLayer, nn.TransformerEncoder)):
            inner = [m for m in module.modules() if isinstance(m, SUMMARY_LAYERS)]
            if not inner:
                continue
            if isinstance(module, nn.TransformerEncoder):
                module.use_nested_tensor = False
            for layer in inner:
                if _decline_fused_kernel not in layer._forward_pre_hooks.values():
                    layer.register_forward_pre_hook(_decline_fused_kernel)


def put_module(model: nn.Module, paths: Iterable[str], new: nn.Module) -> nn.Module:
    """``model`` with ``new`` at every dotted path in ``paths`` (a module attached under several
    names stays one module); the path "" replaces the model itself, which is returned."""
    for path in paths:
        if path == "":
            model = new
        else:
            parent, _, attr = path.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model


def layer_places(model: nn.Module) -> dict[str, tuple[nn.Module, list[str]]]:
    """Every ``nn.Linear`` / convolution of ``model`` (exact types) by its canonical name (the
    first under which ``named_modules`` lists it), with every path where it is attached: a
    layer shared by two parents is one layer, replaced at both places by one sparse layer."""
    places: dict[int, tuple[str, nn.Module, list[str]]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        if type(module) in REPLACEABLE or _parametrized_layer(module) or is_transposed_linear(module) \
                or is_masked_kind(module):
            entry = places.setdefault(id(module), (path, module, []))
            entry[2].append(path)
    return {name: (module, paths) for name, module, paths in places.values()}


def _parametrized_layer(module: nn.Module) -> bool:
    """An ``nn.Linear`` / convolution under ``torch.nn.utils.parametrize`` (weight_norm,
    spectral_norm, ...): its class is a generated subclass, so it is matched here."""
    return parametrize.is_parametrized(module) and type(module).__bases__[0] in REPLACEABLE


def _matches(entry, name: str, paths: Sequence[str], module: nn.Module) -> bool:
    if isinstance(entry, type):
        return isinstance(module, entry)
    if entry == "":
        return "" in paths
    return any(p == entry or p.startswith(entry + ".") for p in paths)


def _select(places, include, exclude, dense: dict[str, tuple[str, bool]]) -> list[str]:
    def entries(value, what):
        if value is None:
            return []
        if isinstance(value, (str, type)):
            value = [value]
        value = list(value)
        for e in value:
            if not isinstance(e, (str, type)):
                raise SparsetopoError(f"{what} entry {e!r} must be a module name or a module type")
        return value

    known = ", ".join(places) if places else "none"
    if len(known) > 300:
        known = known[:300] + ", ..."
    selected = list(places) if include is None else []
    for what, value in (("include", include), ("exclude", exclude)):
        for entry in entries(value, what):
            hits = [name for name, (module, paths) in places.items() if _matches(entry, name, paths, module)]
            label = entry.__name__ if isinstance(entry, type) else repr(entry)
            if not hits:
                raise SparsetopoError(f"{what} entry {label} matches no nn.Linear or convolution of the model "
                                      f"(its replaceable layers: {known})")
            if what == "include":
                selected += [h for h in hits if h not in selected]
            else:
                selected = [s for s in selected if s not in hits]
                dense.update((h, (f"excluded ({label})", True)) for h in hits)
    dense.update((name, ("not in include", True)) for name in places if include is not None and name not in dense
                 and name not in selected)
    if not selected:
        raise SparsetopoError(f"nothing to sparsify: no nn.Linear or convolution is selected "
                              f"(the model's replaceable layers: {known})")
    return selected


def _unsupported(name: str, module: nn.Module) -> _Refusal | None:
    """A selected layer sparsify cannot mask: a parametrized weight, a depthwise convolution."""
    label = name or "<the model itself>"
    if parametrize.is_parametrized(module):
        kinds = ", ".join(sorted(module.parametrizations.keys()))
        base = type(module).__bases__[0].__name__
        return _Refusal(f"parametrized {base} ({kinds} is computed, e.g. by weight_norm)",
                        f"layer {label!r} is a parametrized {base} (its {kinds} is computed, e.g. by weight_norm): a "
                        "mask cannot keep that parametrization. Remove it first "
                        "(torch.nn.utils.parametrize.remove_parametrizations), or leave the layer dense with "
                        f"exclude=[{name!r}]")
    if isinstance(module, nn.Embedding) and embedding_refusal(module) is not None:
        why = embedding_refusal(module)
        return _Refusal(why, f"embedding {label!r}: {why}; leave it dense with exclude=[{name!r}]")
    depthwise = depthwise_reason(module)
    return None if depthwise is None else _Refusal(depthwise, f"layer {label!r}: {depthwise}", raises=False)


def layer_sizes(module: nn.Module) -> tuple[int, int]:
    """``(n_in, n_out)`` of a layer sparsify replaces: features, or channels for a convolution."""
    if isinstance(module, nn.modules.conv._ConvNd):   # the graph within one group
        return module.in_channels // module.groups, module.out_channels // module.groups
    if is_transposed_linear(module):
        return tuple(module.weight.shape)
    return module.in_features, module.out_features


def _check_block(block, backend: str) -> tuple[int, int]:
    """``block`` as ``(b_in, b_out)``, each an integer >= 1 (a layer narrower than its block
    makes that side one block: :func:`sparsify`)."""
    pair = tuple(block) if isinstance(block, (tuple, list)) else (block, block)
    if len(pair) != 2:
        raise SparsetopoError(f"block={block!r} must be one integer or a pair (b_in, b_out)")
    pair = (check_int("block", pair[0], 1), check_int("block", pair[1], 1))
    if pair != (1, 1) and backend != "auto":
        raise SparsetopoError(f"backend={backend!r} chooses how ordinary sparse layers compute, but with "
                              f"block={block!r} the linear layers are block layers: leave backend='auto'")
    return pair


def _topology(name, construction, n_in, n_out, density, k, seed,
              block: tuple[int, int] = (1, 1)) -> tuple[Topology | None, _Refusal | None]:
    """The layer's topology, or why it stays dense: too small for the density (k = 0) or for k.
    With blocks, ``k`` and the density count output blocks."""
    label = name or "<the model itself>"
    outputs = n_blocks(n_out, block[1])
    what = f"{n_out} outputs" if block == (1, 1) else f"{outputs} output block{'s' * (outputs != 1)} of {block[1]}"
    if k is None:
        k = math.floor(density * outputs + 0.5)  # halves round up (Python's round() would round 2.5 to 2)
        if k == 0:
            return None, _Refusal(f"too small: density={density} gives k = 0 for {what}",
                                  f"density={density} gives k = round({density} * {outputs}) = 0 for layer {label!r} "
                                  f"({what}): choose density >= {1.0 / outputs:.4g}, or give k")
    elif k > outputs:
        return None, _Refusal(f"too small: k={k} > its {what}",
                              f"k={k} is too large for layer {label!r}, which has {what}: "
                              f"choose 1 <= k <= {outputs}, or exclude the layer")
    if construction == "fully_connected" and k != outputs:
        raise SparsetopoError(f"fully_connected keeps all {what} of layer {label!r}, not k={k}: "
                              "use density=1 or another construction")
    try:
        return build(construction, n_in, n_out, k, seed=derive_seed(seed, "topology", name), block=block), None
    except SparsetopoError as exc:
        raise SparsetopoError(f"layer {label!r}: {exc}") from None


def _linear_backends(linear, backend: str) -> dict[str, str]:
    """One backend for all the linear layers (the rule of layer_backends), on their device and dtype."""
    if not linear:
        return {}
    devices = {m.weight.device for _, m, _ in linear}
    dtypes = {m.weight.dtype for _, m, _ in linear}
    off_cpu = any(d.type != "cpu" for d in devices)
    if backend == "sparse":
        for name, m, _ in linear:
            if m.weight.device.type != "cpu" or m.weight.dtype != torch.float32:
                raise SparsetopoError(f"backend='sparse' computes on CPU in float32, but layer {name!r} is "
                                      f"{m.weight.dtype} on {m.weight.device}: use backend='masked' or 'auto'")
    if backend == "auto" and (off_cpu or dtypes != {torch.float32}):
        backend = "masked"
    device = next((d for d in devices if d.type != "cpu"), torch.device("cpu"))
    chosen = layer_backends([t for _, _, t in linear], backend, device)
    return {name: b for (name, _, _), b in zip(linear, chosen)}


@torch.no_grad()
def copy_dense_weights(sparse: nn.Module, dense: nn.Module) -> None:
    """Give ``sparse`` the weights of ``dense`` (an ``nn.Linear`` / convolution / ``Conv1D`` of
    the same shape) at its connections, and its bias; every other weight is exactly 0 (or absent)."""
    # edge_index() indexes torch's (out, in, ...) layout; Conv1D holds (in, out)
    weight = dense.weight.detach().t() if is_transposed_linear(dense) else dense.weight.detach()
    sparse.set_connected_weights(weight[tuple(i.to(weight.device) for i in sparse.edge_index())])
    if dense.bias is not None:
        sparse.bias.copy_(dense.bias.detach())


def summarize(model: nn.Module) -> list[dict]:
    """One dict per sparse layer of ``model`` (each once, by its canonical name): name, kind,
    construction, n_in, n_out, k, density (exact), connections, dense_connections (the dense
    layer's weights), seed and backend ("block" for a block layer); a layer built on blocks
    also has ``block``, its ``[b_in, b_out]`` (its ``k`` counts output blocks). A recurrent layer
    or attention masked in place has one row for all its matrices (kind "lstm", "gru", "rnn" or
    "multiheadattention"; ``k`` and ``seed`` as lists, ``matrices`` each matrix's ``[n_in, rows]``,
    ``gates`` its gate rule): :func:`sparsetopo.nn.masked_layers.summary_row`."""
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, MaskedParameters):
            rows.append(summary_row(name, module))
        elif isinstance(module, MADE_LAYERS):
            t = module.topology
            linear = isinstance(module, LINEAR_LAYERS)
            per_edge = 1 if linear else math.prod(module.kernel_size) * module.groups
            rows.append({"name": name, "kind": "linear" if linear else module.kind,
                         "construction": t.construction, "n_in": t.n_in, "n_out": t.n_out, "k": t.k,
                         "density": t.density, "connections": t.nnz * per_edge,
                         "dense_connections": t.n_in * t.n_out * per_edge, "seed": t.seed, "backend": module.backend})
            if t.is_blocked:
                rows[-1]["block"] = [t.block_in, t.block_out]
    return rows
