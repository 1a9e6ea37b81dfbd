"""Graph measures for the report's rows: filled from the topologies when the store has none.

The paper (Section 4.5) relates accuracy to "algebraic connectivity". We use the standard
(Fiedler) definition: the second smallest eigenvalue of the Laplacian ``L = D - A`` of the
bipartite graph (0 when it is disconnected), per layer (``alg_conn_in``: the input layer) and for
the whole network graph (``alg_conn_net``: all layers, n0 + n1 + ... + nL nodes).

Each run's topologies are rebuilt exactly as :func:`sparsetopo.train.build_model` builds them
(``build_stack(sizes, construction, degrees, seed=derive_seed(seed, "topology"))``), so the
measure belongs to the very network that was trained. :mod:`sparsetopo.spectral` computes the
measures when it is installed; otherwise a dense eigensolver here does (graphs above
``DENSE_MAX_NODES`` nodes are then left as NaN).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from sparsetopo.seeding import derive_seed
from sparsetopo.topology import build_stack, get_construction

# Input features of the registered datasets; others are read from the data set itself.
N_FEATURES = {"mnist": 784, "fashion-mnist": 784, "digits": 64, "synthetic": 784}
N_CLASSES = 10
DENSE_MAX_NODES = 4000
ZERO_EIGENVALUE = 1e-9  # below this the eigensolver's round-off stands for 0 (a disconnected graph)


def _n_features(dataset) -> int | None:
    if dataset in N_FEATURES:
        return N_FEATURES[dataset]
    try:
        from sparsetopo.data import load_dataset

        return int(load_dataset(dataset).n_features)
    except Exception:  # an unknown or unavailable data set: the measure stays NaN
        return None


def _laplacian(topologies) -> sp.csr_matrix:
    sizes = [topologies[0].n_in] + [t.n_out for t in topologies]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    rows, cols = [], []
    for l, t in enumerate(topologies):
        rows.append(t.rows.astype(np.int64) + offsets[l])
        cols.append(t.indices.astype(np.int64) + offsets[l + 1])
    r, c = np.concatenate(rows), np.concatenate(cols)
    n = int(offsets[-1])
    adj = sp.coo_matrix((np.ones(r.size), (r, c)), shape=(n, n)).tocsr()
    adj = adj + adj.T
    return sp.diags(np.asarray(adj.sum(axis=1)).ravel()) - adj


def fiedler_value(topologies) -> float:
    """Second smallest Laplacian eigenvalue of the graph made of ``topologies`` (stacked)."""
    laplacian = _laplacian(topologies)
    if laplacian.shape[0] > DENSE_MAX_NODES:
        return float("nan")
    if laplacian.shape[0] < 2:
        return 0.0
    # only the two smallest eigenvalues (MRRR driver): far cheaper than the full spectrum
    eig = scipy.linalg.eigh(laplacian.toarray(), eigvals_only=True, subset_by_index=[0, 1], driver="evr")
    return float(eig[1]) if eig[1] > ZERO_EIGENVALUE else 0.0


def _measure(topologies, whole: bool) -> float:
    """Fiedler value of the input layer (``whole=False``) or of the whole network graph.

    :mod:`sparsetopo.spectral` computes it when available; should it fail on a graph, the dense
    solver here is used instead so that one awkward graph never stops a report.
    """
    spectral = _spectral_module()
    value = None
    if spectral is not None:
        try:
            if whole and hasattr(spectral, "network_measures"):
                value = float(spectral.network_measures(list(topologies))["algebraic_connectivity"])
            elif not whole and hasattr(spectral, "layer_measures"):
                value = float(spectral.layer_measures(topologies[0])["algebraic_connectivity"])
        except (ValueError, ArithmeticError, RuntimeError):
            value = None
    if value is None or not np.isfinite(value):
        value = fiedler_value(topologies if whole else topologies[:1])
    return value if value > ZERO_EIGENVALUE else 0.0


@lru_cache(maxsize=1)
def _spectral_module():
    try:
        from sparsetopo import spectral
    except ImportError:
        return None
    return spectral


@lru_cache(maxsize=4096)
def _measures(construction: str, sizes: tuple, degrees: tuple, seed: int) -> tuple[float, float]:
    topologies = build_stack(list(sizes), construction, list(degrees), seed=seed)
    return _measure(topologies, whole=False), _measure(topologies, whole=True)


def _run_sizes(row) -> tuple[tuple, tuple] | None:
    from sparsetopo.report.results import _ints

    n_features = _n_features(row["dataset"])
    hidden = [h for h in _ints(row.get("hidden")) if h is not None]
    if n_features is None or not hidden:
        return None
    sizes = (n_features, *hidden, N_CLASSES)
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
    """Small eigenproblems run far faster on one BLAS thread (20x here on a loaded 2-core box)."""
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
