"""Graph measures for the report's rows: filled from the topologies when the store has none.

The paper (Section 4.5) relates accuracy to "algebraic connectivity". We use the standard
(Fiedler) definition: the second smallest eigenvalue of the Laplacian ``L = D - A`` of the
bipartite graph (0 when it is disconnected), per layer (``alg_conn_in``: the input layer) and for
the whole network graph (``alg_conn_net``: all layers, n0 + n1 + ... + nL nodes).

Each run's topologies are rebuilt exactly as :func:`sparsetopo.train.build_model` builds them
(``build_stack(sizes, construction, degrees, seed=derive_seed(seed, "topology"))``), so the
measure belongs to the very network that was trained; :func:`sparsetopo.sweep.measures.run_measures`
(the one definition the sweep worker also uses) computes it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from sparsetopo.seeding import derive_seed
from sparsetopo.sweep.measures import run_measures
from sparsetopo.sweep.store import MEASURE_COLUMNS
from sparsetopo.topology import build_stack, get_construction


def _shape(dataset) -> tuple[int, int] | None:
    """(n_features, n_classes) of ``dataset``, as the sweep planned it; None when it cannot be known."""
    from sparsetopo.data import dataset_shape

    try:
        n_features, n_classes, _ = dataset_shape(dataset)
    except Exception:  # an unknown or unavailable data set: the measure stays NaN
        return None
    return int(n_features), int(n_classes)


@lru_cache(maxsize=4096)
def _measures(construction: str, sizes: tuple, degrees: tuple, seed: int) -> tuple[float, float]:
    """(``alg_conn_in``, ``alg_conn_net``) of one network, as the store's columns define them."""
    metrics, _ = run_measures(build_stack(list(sizes), construction, list(degrees), seed=seed))
    if metrics is None:
        return float("nan"), float("nan")
    values = (MEASURE_COLUMNS["alg_conn_in"](metrics), MEASURE_COLUMNS["alg_conn_net"](metrics))
    return tuple(float("nan") if v is None else float(v) for v in values)


def _run_sizes(row) -> tuple[tuple, tuple] | None:
    from sparsetopo.report.results import _ints

    shape = _shape(row["dataset"])
    hidden = [h for h in _ints(row.get("hidden")) if h is not None]
    if shape is None or not hidden:
        return None
    sizes = (shape[0], *hidden, shape[1])
    given = _ints(row.get("degrees"))
    if row["construction"] == "fully_connected" or not given:
        given = [None] * (len(sizes) - 1)
    if len(given) != len(sizes) - 1:
        return None
    degrees = tuple(sizes[l + 1] if k is None else int(k) for l, k in enumerate(given))
    return sizes, degrees


def fill_connectivity(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Fill NaN ``alg_conn_in`` / ``alg_conn_net`` from the rebuilt topologies.

    Returns the completed copy and how many rows were computed here. Rows whose topology
    cannot be rebuilt (unknown data set, construction or sizes) stay NaN.
    """
    with _one_blas_thread():
        return _fill(runs)


def _one_blas_thread():
    """Small eigenproblems run far faster on one BLAS thread, most of all on a loaded machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # threadpoolctl comes with scikit-learn; without it, run as configured
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _fill(runs: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    df = runs.copy()
    missing = df["alg_conn_in"].isna() | df["alg_conn_net"].isna()
    computed = 0
    for i in np.flatnonzero(missing.to_numpy()):
        row = df.iloc[i]
        shape = _run_sizes(row)
        if shape is None:
            continue
        try:
            random = get_construction(row["construction"]).random
        except ValueError:
            continue
        seed = derive_seed(int(row["seed"]), "topology") if random else 0
        try:
            conn_in, conn_net = _measures(row["construction"], shape[0], shape[1], seed)
        except ValueError:  # degrees that do not fit the sizes
            continue
        idx = df.index[i]
        if pd.isna(df.at[idx, "alg_conn_in"]):
            df.at[idx, "alg_conn_in"] = conn_in
        if pd.isna(df.at[idx, "alg_conn_net"]):
            df.at[idx, "alg_conn_net"] = conn_net
        computed += 1
    return df, computed
