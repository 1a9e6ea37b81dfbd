"""Graph measures against independent references: networkx, dense numpy, closed forms.

References are computed here from the mask alone (networkx graphs, numpy spectra of matrices
written out by hand), never from sparsetopo.spectral itself.
"""

import networkx as nx
import numpy as np
import pytest

from sparsetopo import SparsetopoError, Topology, build, build_stack
from sparsetopo import spectral as S

METHODS = ["dense", "sparse"]
LAPLACIAN_KEYS = ["algebraic_connectivity", "paper_laplacian_largest", "paper_laplacian_second_largest"]
VALUE_KEYS = LAPLACIAN_KEYS + ["spectral_gap", "normalized_spectral_gap", "ramanujan_margin"]


def close(a, b, scale=1.0, rtol=1e-6):
    """Equal within ``rtol`` relative, or within rounding (1e-9 of ``scale``) near zero."""
    return abs(a - b) <= rtol * abs(b) + 1e-9 * scale


def random_mask(n, m, p, seed):
    return np.random.default_rng(seed).random((n, m)) < p


def layer_nx(mask):
    """The bipartite layer graph as networkx builds it: inputs 0..n-1, outputs n..n+m-1."""
    n, m = mask.shape
    g = nx.Graph()
    g.add_nodes_from(range(n + m))
    g.add_edges_from((i, n + j) for i, j in zip(*np.nonzero(mask)))
    return g


def network_nx(masks):
    g, offset = nx.Graph(), 0
    g.add_nodes_from(range(sum([masks[0].shape[0]] + [mk.shape[1] for mk in masks])))
    for mk in masks:
        n = mk.shape[0]
        g.add_edges_from((offset + i, offset + n + j) for i, j in zip(*np.nonzero(mk)))
        offset += n
    return g


def nx_reference(g):
    """Laplacian and adjacency spectra from networkx (dense LAPACK on networkx's matrices)."""
    lap = np.sort(nx.laplacian_spectrum(g))
    adj = np.sort(np.real(nx.adjacency_spectrum(g)))[::-1]
    return {
        "algebraic_connectivity": lap[1],
        "paper_laplacian_largest": lap[-1],
        "paper_laplacian_second_largest": lap[-2],
        "spectral_gap": adj[0] - adj[1],
        "components": nx.number_connected_components(g),
    }


# -- against networkx ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, m, p, seed", [(30, 20, 0.3, 1), (15, 40, 0.2, 2), (25, 25, 0.08, 3), (60, 8, 0.5, 4)])
def test_layer_matches_networkx(n, m, p, seed, method):
    mask = random_mask(n, m, p, seed)
    ours = S.layer_measures(Topology.from_mask(mask, construction="test", k=0, seed=None), method)
    ref = nx_reference(layer_nx(mask))
    scale = max(n, m)
    for key in ["algebraic_connectivity", "paper_laplacian_largest", "paper_laplacian_second_largest", "spectral_gap"]:
        assert close(ours[key], ref[key], scale), (key, ours[key], ref[key])
    assert ours["components"] == ref["components"]
    assert ours["method"] == method


def test_fiedler_matches_networkx_tracemin():
    mask = random_mask(40, 30, 0.25, 5)
    g = layer_nx(mask)
    assert nx.is_connected(g)
    ref = nx.algebraic_connectivity(g, method="tracemin_lu", tol=1e-12)
    t = Topology.from_mask(mask, construction="test", k=0, seed=None)
    for method in METHODS:
        assert close(S.algebraic_connectivity(t, method), ref), method


@pytest.mark.parametrize("method", METHODS)
def test_network_matches_networkx(method):
    stack = build_stack([40, 30, 20, 6], ["random_regular", "random_edge", "fibonacci_rotating"], [4, 5, 3], seed=3)
    ref = nx_reference(network_nx([t.mask() for t in stack]))
    ours = S.network_measures(stack, method)
    for key in ["algebraic_connectivity", "paper_laplacian_largest", "paper_laplacian_second_largest", "spectral_gap"]:
        assert close(ours[key], ref[key], 40), (key, ours[key], ref[key])
    assert ours["components"] == ref["components"]
    # the standalone functions read the same numbers from a list of layers
    assert close(S.algebraic_connectivity(stack, method), ref["algebraic_connectivity"], 40)


def test_network_of_one_layer_is_the_layer():
    t = build("random_regular", 50, 30, 4, seed=2)
    layer, network = S.layer_measures(t), S.network_measures([t])
    for key in VALUE_KEYS:
        assert close(network[key], layer[key], 50), key


def test_network_isolated_inputs_and_outputs():
    first = np.ones((4, 3), dtype=bool)
    first[1] = False  # input 1 has no edge
    second = np.ones((3, 5), dtype=bool)
    second[:, 4] = False  # output 4 has no edge
    stack = [Topology.from_mask(mk, construction="test", k=0, seed=None) for mk in (first, second)]
    ours = S.network_measures(stack)
    assert (ours["isolated_inputs"], ours["isolated_outputs"], ours["isolated_nodes"]) == (1, 1, 2)
    assert ours["components"] == nx.number_connected_components(network_nx([first, second])) == 3
    assert ours["algebraic_connectivity"] == 0.0


# -- closed forms ----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, m", [(5, 3), (4, 9), (7, 7), (1, 6), (40, 30)])
def test_complete_bipartite(n, m, method):
    """K(n, m): Laplacian spectrum 0, m (n-1 times), n (m-1 times), n + m; singular values sqrt(nm), 0."""
    t = build("fully_connected", n, m)
    ours = S.layer_measures(t, method)
    assert close(ours["algebraic_connectivity"], min(n, m))
    assert close(ours["spectral_gap"], np.sqrt(n * m), n * m)
    assert close(ours["normalized_spectral_gap"], 1.0)
    assert close(ours["paper_laplacian_largest"], n + m)
    second = max(m if n > 1 else 0, n if m > 1 else 0)
    assert close(ours["paper_laplacian_second_largest"], second)
    assert close(ours["ramanujan_margin"], np.sqrt(m - 1) + np.sqrt(n - 1), n * m)


@pytest.mark.parametrize("method", METHODS)
def test_disconnected_is_exactly_zero(method):
    block = np.zeros((40, 30), dtype=bool)
    block[:20, :15] = random_mask(20, 15, 0.5, 7)
    block[20:, 15:] = random_mask(20, 15, 0.5, 8)
    t = Topology.from_mask(block, construction="test", k=0, seed=None)
    assert S.algebraic_connectivity(t, method) == 0.0
    assert S.components(t) == nx.number_connected_components(layer_nx(block))
    assert S.components(t) >= 2


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name, m, k", [("regular_rotating", 60, 5), ("long_short_rotating", 300, 6),
                                        ("fibonacci_rotating", 64, 7), ("random_rotating", 90, 4)])
def test_rotating_square_layer_is_circulant(name, m, k, method):
    """n = m: B is circulant, so its singular values are |DFT(v)| of the base vector v."""
    t = build(name, m, m, k, seed=4)
    v = t.mask()[0].astype(float)  # row 0 is the base vector itself
    s = np.sort(np.abs(np.fft.fft(v)))[::-1]
    assert close(S.spectral_gap(t, method), s[0] - s[1], k)
    assert close(S.normalized_spectral_gap(t, method), (s[0] - s[1]) / s[0], 1)
    # k-regular on both sides: L = k I - A, so the Fiedler value is k - s2 when connected
    if S.components(t) == 1:
        assert close(S.algebraic_connectivity(t, method), k - s[1], k)
        assert close(S.paper_laplacian_second_largest(t, method), k + s[1], k)
    assert close(S.ramanujan_margin(t, method), 2 * np.sqrt(k - 1) - s[1], k)


def test_isolated_counts():
    mask = random_mask(12, 9, 0.5, 9)
    mask[[2, 5]] = False
    mask[:, 7] = False
    t = Topology.from_mask(mask, construction="test", k=0, seed=None)
    inputs, outputs = int((~mask.any(axis=1)).sum()), int((~mask.any(axis=0)).sum())
    assert inputs >= 2 and outputs >= 1
    assert S.isolated_inputs(t) == inputs and S.isolated_outputs(t) == outputs
    assert S.layer_measures(t)["isolated_nodes"] == inputs + outputs
    assert S.components(t) == nx.number_connected_components(layer_nx(mask))


# -- dense and sparse agree ------------------------------------------------------------------------
@pytest.mark.parametrize("name, n, m, k", [
    ("random_regular", 784, 300, 30), ("random_regular", 400, 400, 6), ("random_edge", 300, 500, 4),
    ("regular_rotating", 500, 120, 3), ("long_short_rotating", 256, 256, 4),
    ("fibonacci_rotating", 100, 700, 12), ("random_rotating", 333, 222, 9), ("random_regular", 640, 320, 2),
])
def test_dense_and_sparse_agree(name, n, m, k):
    t = build(name, n, m, k, seed=11)
    dense, sparse = S.layer_measures(t, "dense"), S.layer_measures(t, "sparse")
    assert (dense["method"], sparse["method"]) == ("dense", "sparse")
    for key in VALUE_KEYS:
        if dense[key] is None:
            assert sparse[key] is None, key
        else:
            assert close(sparse[key], dense[key], max(n, m)), (key, sparse[key], dense[key])
    for key in ["components", "isolated_inputs", "isolated_outputs", "isolated_nodes"]:
        assert sparse[key] == dense[key]


def test_fallback_solvers_agree(monkeypatch):
    """With plain Lanczos capped at 5 steps, the ARPACK and shift-invert fallbacks answer."""
    monkeypatch.setattr("sparsetopo.spectral.eigen._LANCZOS_MAXITER", 5)  # read by eigen._lanczos_top
    for t in [build("regular_rotating", 150, 100, 3), build("random_edge", 120, 90, 6, seed=1)]:
        dense, sparse = S.layer_measures(t, "dense"), S.layer_measures(t, "sparse")
        for key in VALUE_KEYS:
            if dense[key] is not None:
                assert close(sparse[key], dense[key], 150), (t, key, sparse[key], dense[key])


def test_auto_switches_by_size():
    assert S.layer_measures(build("random_regular", 40, 30, 3))["method"] == "dense"
    assert S.layer_measures(build("random_regular", 600, 300, 3))["method"] == "sparse"


# -- undefined measures and bad input ----------------------------------------------------------------
def test_no_edges():
    t = Topology.from_mask(np.zeros((5, 4), dtype=bool), construction="test", k=0, seed=None)
    measures = S.layer_measures(t)
    assert measures["algebraic_connectivity"] == 0.0 and measures["spectral_gap"] == 0.0
    assert measures["components"] == 9 and measures["isolated_nodes"] == 9
    for key in ["normalized_spectral_gap", "ramanujan_margin", "paper_laplacian_largest",
                "paper_laplacian_second_largest"]:
        assert measures[key] is None
        with pytest.raises(SparsetopoError, match=key):
            getattr(S, key)(t)


def test_bad_input():
    empty = Topology(0, 3, "test", 0, None, indptr=[0], indices=[])
    with pytest.raises(SparsetopoError, match="0x3"):
        S.layer_measures(empty)
    with pytest.raises(SparsetopoError, match="do not chain"):
        S.network_measures([build("random_regular", 10, 8, 2), build("random_regular", 9, 4, 2)])
    with pytest.raises(SparsetopoError, match="no layers"):
        S.network_measures([])
    with pytest.raises(SparsetopoError, match="method='eig'"):
        S.algebraic_connectivity(build("random_regular", 10, 8, 2), method="eig")
    with pytest.raises(SparsetopoError, match="not a Topology"):
        S.network_measures([build("random_regular", 10, 8, 2), np.ones((8, 3))])
    with pytest.raises(SparsetopoError, match="network_measures"):
        S.layer_measures([build("random_regular", 10, 8, 2)])
    with pytest.raises(SparsetopoError, match="k >= 1"):
        S.ramanujan_margin(Topology.from_mask(np.eye(4, 20, dtype=bool), construction="test", k=1, seed=None))


# -- the CLI -----------------------------------------------------------------------------------------
def test_cli_json_has_metrics(capsys):
    import json

    from sparsetopo.cli import main

    assert main(["topology", "random_edge", "--n-in", "6", "--n-out", "40", "-k", "1", "--seed", "3", "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out, parse_constant=lambda token: pytest.fail(f"invalid JSON token {token}"))
    metrics = info["metrics"]
    for key in S.MEASURES:
        assert key in metrics
    mask = build("random_edge", 6, 40, 1, seed=3).mask()
    assert metrics["ramanujan_margin"] is None  # mean output degree < 1
    assert metrics["components"] == nx.number_connected_components(layer_nx(mask))
    assert metrics["isolated_outputs"] == int((~mask.any(axis=0)).sum())


def test_cli_summary_shows_main_measures(capsys):
    from sparsetopo.cli import main

    assert main(["topology", "fully_connected", "--n-in", "5", "--n-out", "3"]) == 0
    out = capsys.readouterr().out
    assert "algebraic connectivity  3.0000" in out  # K(5, 3): min(5, 3)
    assert "spectral gap" in out and "components   1" in out
    assert main(["topology", "fully_connected", "--n-in", "5", "--n-out", "3", "--no-metrics", "--json"]) == 0
    assert "metrics" not in capsys.readouterr().out
