"""Fill graph measures into runs stored before :mod:`sparsetopo.spectral` was available.

The paper (Section 4.5) relates accuracy to the spectral gap and algebraic connectivity of the
networks' graphs. Workers compute those measures with each result when
:mod:`sparsetopo.spectral` can be imported; :func:`backfill_measures` computes them afterwards
for rows whose ``metrics`` is NULL, rebuilding each topology from its stored provenance and
reusing the store's ``graph_measures`` cache (keyed by ``Topology.fingerprint``).
"""

from __future__ import annotations

import json

from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep import worker
from sparsetopo.sweep.store import SweepStore
from sparsetopo.topology import build

__all__ = ["backfill_measures"]


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
            topologies = []
            for p in json.loads(layers):
                topology = build(p["construction"], p["n_in"], p["n_out"], p["k"], p["seed"] or 0)
                cached = store.cached_measures(topology.fingerprint)
                if cached is not None:  # graph_measures then skips a graph the store has measured
                    worker._MEASURES.setdefault(topology.fingerprint, cached)
                topologies.append(topology)
            metrics, cache = worker.graph_measures(topologies)
            store.set_metrics(rid, metrics, cache)
            filled += 1
            if on_row is not None:
                on_row(rid)
    return filled
