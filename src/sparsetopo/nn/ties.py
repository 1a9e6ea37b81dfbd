"""Tied weights under sparsify: which ends can share one mask, and why the others stay dense.

A parameter reachable from two modules (an embedding tied to a language model's output layer)
must keep one meaning. The rule: an ``nn.Embedding`` and an ``nn.Linear`` sharing the table
share one mask too (the table's graph, :mod:`sparsetopo.nn.embedding`, is the output layer's,
so the tie is kept and pruned entries are 0 for both uses), provided both are selected;
every other tie (other kinds, a tied bias, a partner left dense) leaves both ends dense,
since separate masks would break it.
"""

from __future__ import annotations

from torch import nn

#: The pairs of torch types that can share one mask on a tied weight.
SHAREABLE = {frozenset((nn.Embedding, nn.Linear))}


def parameter_owners(model: nn.Module) -> dict[int, list[str]]:
    """Every dotted path under which each parameter of ``model`` is reachable, by ``id``."""
    owners: dict[int, list[str]] = {}
    for path, owner in model.named_modules(remove_duplicate=False):
        for q, param in owner.named_parameters(recurse=False, remove_duplicate=False):
            where = owners.setdefault(id(param), [])
            full = f"{path}.{q}" if path else q
            if full not in where:
                where.append(full)
    return owners


def _layer_of(places, paths: list[str], pname: str) -> str | None:
    """The one layer of ``places`` whose ``pname`` every path in ``paths`` is, or None (the
    parameter is also another kind of module's, or several layers')."""
    def owner(path):
        return next((name for name, (_, where) in places.items()
                     if any(path == (f"{p}.{pname}" if p else pname) for p in where)), None)
    names = {owner(path) for path in paths}
    return names.pop() if len(names) == 1 else None


def tie(owners: dict[int, list[str]], places, name: str, selected) -> tuple[str | None, tuple[str, str] | None]:
    """``(embedding, None)`` when layer ``name``'s weight is tied and shares the mask of
    ``embedding`` (its own name, or its partner's); ``(None, (reason, message))`` when it is
    tied and both ends stay dense; ``(None, None)`` when nothing is tied. ``owners`` is
    :func:`parameter_owners` of the model, built once per call."""
    module, paths = places[name]
    shared = None
    for pname in ("weight", "bias"):
        param = getattr(module, pname, None)
        if param is None:
            continue
        mine = {f"{p}.{pname}" if p else pname for p in paths}
        others = [o for o in owners.get(id(param), []) if o not in mine]
        if not others:
            continue
        partner = _layer_of(places, others, pname)
        if pname == "weight" and partner in selected \
                and frozenset((type(module), type(places[partner][0]))) in SHAREABLE:
            shared = name if isinstance(module, nn.Embedding) else partner
            continue
        label = name or "<the model itself>"
        other = others[0].rpartition(".")[0] or "<the model itself>"
        why = ("its partner stays dense" if partner is not None and partner not in selected else
               "only an nn.Embedding and an nn.Linear share one mask")
        return None, (f"{pname} tied to {others[0]!r}: both ends stay dense ({why})",
                      f"layers {label!r} and {other!r} share one {pname} (tied weights, {others[0]!r}) and {why}: "
                      "separate masks would break the tie, so both stay dense; select both ends (an nn.Embedding "
                      "and an nn.Linear), or untie them first to sparsify them")
    return shared, None
