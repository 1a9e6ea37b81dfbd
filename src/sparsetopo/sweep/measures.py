"""A run's graph measures: the one function that computes them, and the back-fill of old rows.

The paper (Section 4.5) relates accuracy to the spectral gap and algebraic connectivity of the
networks' graphs. :func:`run_measures` measures a trained network's layers and its whole graph
(:mod:`sparsetopo.spectral`); the sweep worker calls it with each result,
:func:`backfill_measures` for stored rows whose ``metrics`` is NULL (rebuilding each topology
from its stored provenance, :func:`run_topologies`), and the report for rows that still lack
them. Each graph is measured once per process (keyed by ``Topology.fingerprint``) and once per
store (the ``graph_measures`` table).
"""

from __future__ import annotations

import hashlib
import json

from sparsetopo.errors import SparsetopoError
from sparsetopo.jsonable import plain
from sparsetopo.sweep.store import SweepStore
from sparsetopo.topology import Topology, build

__all__ = ["backfill_measures", "run_measures", "run_topologies"]

_MEASURED: dict = {}   # fingerprint -> measures dict, per process


def run_measures(topologies) -> tuple[dict | None, dict]:
    """``(metrics, {fingerprint: measures})`` of a network's layers and of the whole network.

    ``metrics`` is ``{"layers": [per-layer measures], "network": measures, "fingerprints": [...],
    "network_fingerprint": key}``, JSON-ready (NaN as None); the store flattens it into
    :data:`~sparsetopo.sweep.store.MEASURE_COLUMNS`. Returns ``(None, {})`` when
    :mod:`sparsetopo.spectral` cannot be imported, leaving those columns NULL.
    """
    try:
        from sparsetopo.spectral import layer_measures, network_measures
    except ImportError:
        return None, {}
    cache = {}
    layers = []
    for topology in topologies:
        key = topology.fingerprint
        if key not in _MEASURED:
            _MEASURED[key] = plain(layer_measures(topology))
        layers.append(_MEASURED[key])
        cache[key] = _MEASURED[key]
    net_key = "net:" + hashlib.sha256("|".join(t.fingerprint for t in topologies).encode()).hexdigest()
    if net_key not in _MEASURED:
        _MEASURED[net_key] = plain(network_measures(list(topologies)))
    cache[net_key] = _MEASURED[net_key]
    return {"layers": layers, "network": _MEASURED[net_key],
            "fingerprints": [t.fingerprint for t in topologies], "network_fingerprint": net_key}, cache


def run_topologies(layers: list[dict]) -> list[Topology]:
    """The topologies of a stored run, rebuilt from its per-layer provenance (the ``layers`` JSON)."""
    return [build(p["construction"], p["n_in"], p["n_out"], p["k"], p["seed"] or 0) for p in layers]


def backfill_measures(db, on_row=None) -> int:
    """Compute graph measures for stored runs that lack them; return how many were filled."""
    try:
        import sparsetopo.spectral  # noqa: F401
    except ImportError:
        raise SparsetopoError("graph measures need sparsetopo.spectral, which this installation lacks; "
                              "update sparsetopo") from None
    filled = 0
    with SweepStore(db, create=False) as store:
        rows = store.db.execute("SELECT run_id, layers FROM runs WHERE metrics IS NULL").fetchall()
        for rid, layers in rows:
            topologies = run_topologies(json.loads(layers))
            for topology in topologies:
                cached = store.cached_measures(topology.fingerprint)
                if cached is not None:  # run_measures then skips a graph the store has measured
                    _MEASURED.setdefault(topology.fingerprint, cached)
            metrics, cache = run_measures(topologies)
            store.set_metrics(rid, metrics, cache)
            filled += 1
            if on_row is not None:
                on_row(rid)
    return filled
