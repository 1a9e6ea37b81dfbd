"""Block topologies: a construction on the graph of blocks, lifted to dense tiles of neurons."""

import numpy as np
import pytest

from sparsetopo import SparsetopoError
from sparsetopo.seeding import derive_seed
from sparsetopo.spectral import layer_measures
from sparsetopo.spectral.blocks import BlockQuotient
from sparsetopo.topology import CONSTRUCTIONS, Topology, build, build_stack

# fingerprint, mask_sha256 of build(name, 37, 23, k=5 (or None), seed=4), computed by the code
# before block topologies existed: block=1 must keep every old identity
OLD_IDENTITIES = {
    "fully_connected": ("bce0f9af80280036ed2a142fbda34101973846bc5cf1609ab8b2faf02fdda679",
                        "23faef4292c87aefdf76c174ee12528a4b6f5dd4df36fd88cdd04d45b1465013"),
    "random_edge": ("6832b49a33c495af09e7e7e06e2c44783cdb6890ce0f48061254a54ccecad943",
                    "56abab5f660eee9a3ea01119e6e3eda122158e4be0b60c43d81a4ec5e42d4ab8"),
    "random_rotating": ("7a2d52ae9a183762b94b0c6e39b25de03b9a4e2b4046a441e177c478840946e9",
                        "63c2ce85508989c061135dec70bfe36176c2c2a528cfc9cf38e005d70b2cd6c7"),
    "random_regular": ("0992dea70475e515625b7b7c4f48a6365268adc5a3f0d392b42e8d3de5098676",
                       "504734dec5c0bfc32972f713b1f88fb14b9068603e3b40db2f120d0d875fc591"),
    "regular_rotating": ("d2af08a6bb8657ecfa85972f5ac7f2c49cbf855e255180fe18db07aa974b14fd",
                         "a79f0922874eee9fc5b2c034dd7ff1212b0d196beac0081f5ced346997853934"),
    "long_short_rotating": ("d3543ad0b9f2424528cb39c3936f1a4bf856cfcde9fcbd2bb374dffef8921af6",
                            "32ad90392e8e5a67b8a31703cb52582db388f213011c4652d15972fb633b76cc"),
    "fibonacci_rotating": ("c0283bcf1d756bbed9eea0d47686d4ceabbbc0595d6655edf70883f87887656d",
                           "372bf5dfe8a3c75965c8e145a6fad07fbf98e5d1bed0b91f9cd1de918e572d1c"),
}


def degree(name):
    return None if name == "fully_connected" else 5


@pytest.mark.parametrize("name", OLD_IDENTITIES)  # the constructions that existed before blocks
@pytest.mark.parametrize("block", [1, (1, 1), [1, 1]])
def test_block_1_is_the_ordinary_layer_bit_for_bit(name, block):
    t = build(name, 37, 23, degree(name), seed=4, block=block)
    assert (t.fingerprint, t.mask_sha256()) == OLD_IDENTITIES[name]
    assert t.provenance() == {"construction": name, "n_in": 37, "n_out": 23, "k": 23 if name == "fully_connected" else 5,
                              "seed": 4, "version": CONSTRUCTIONS[name].version}
    assert not t.is_blocked and t.block_graph is t and "block" not in repr(t)


def lifted_reference(topology):
    """The lift written as its definition: kron(block mask, ones), cut to the layer's size."""
    b_in, b_out = topology.block
    return np.kron(topology.block_graph.mask(), np.ones((b_in, b_out), dtype=bool))[:topology.n_in, :topology.n_out]


@pytest.mark.parametrize("name", CONSTRUCTIONS)
@pytest.mark.parametrize("n_in, n_out, block", [(64, 48, 8), (64, 48, (16, 4)), (50, 37, 8), (45, 70, (4, 9)),
                                                (7, 9, (7, 9))])
def test_the_lift_is_the_kronecker_product_truncated(name, n_in, n_out, block):
    b_in, b_out = block if isinstance(block, tuple) else (block, block)
    rows, cols = -(-n_in // b_in), -(-n_out // b_out)
    k = None if name == "fully_connected" else min(2, cols)
    t = build(name, n_in, n_out, k, seed=3, block=block)
    # the block graph is the construction itself, run on the blocks
    on_blocks = build(name, rows, cols, k, seed=3)
    assert t.block_graph.shape == (rows, cols)
    assert np.array_equal(t.block_graph.mask(), on_blocks.mask())
    mask = lifted_reference(t)
    assert np.array_equal(t.mask(), mask)
    # everything that reads the layer sees neurons; density counts truncated tiles exactly
    assert t.nnz == mask.sum() and t.density == mask.sum() / (n_in * n_out)
    assert np.array_equal(t.out_degrees, mask.sum(1)) and np.array_equal(t.in_degrees, mask.sum(0))
    assert np.array_equal(t.to_scipy().toarray().astype(bool), mask)
    assert t.provenance()["block"] == [b_in, b_out] and t.k == (cols if k is None else k)


def test_regular_rotating_on_blocks_connects_block_i_to_blocks_i_to_i_plus_k_minus_1():
    t = build("regular_rotating", 40, 40, 3, block=8)   # 5 blocks a side
    expected = np.zeros((5, 5), dtype=bool)
    for i in range(5):
        expected[i, [(i + s) % 5 for s in range(3)]] = True
    assert np.array_equal(t.block_graph.mask(), expected)
    assert t.density == 3 / 5 and t.out_degrees.tolist() == [24] * 40


def test_ragged_density_counts_the_narrow_last_block():
    # 10 inputs in blocks of 4: widths 4, 4, 2; 6 outputs in blocks of 4: widths 4, 2
    t = build("fully_connected", 10, 6, block=4)
    assert t.nnz == 60 and t.density == 1.0
    r = build("regular_rotating", 10, 6, 1, block=4)   # block i -> block i mod 2
    assert r.block_graph.mask().tolist() == [[True, False], [False, True], [True, False]]
    assert r.nnz == 4 * 4 + 4 * 2 + 2 * 4 and r.density == 32 / 60


def test_block_stack_and_random_seeds():
    layers = build_stack([64, 32, 16], "random_regular", [2, 2], seed=5, block=8)
    assert [t.block for t in layers] == [(8, 8), (8, 8)]
    for l, t in enumerate(layers):
        same = build("random_regular", t.n_in // 8, t.n_out // 8, 2, seed=derive_seed(5, "layer", l))
        assert np.array_equal(t.block_graph.mask(), same.mask())
    assert build("random_regular", 64, 32, 2, seed=1, block=8).fingerprint != \
        build("random_regular", 64, 32, 2, seed=2, block=8).fingerprint


@pytest.mark.parametrize("block, message", [(0, r"block \(inputs\)=0 is out of range"),
                                            ((4, 33), r"block \(outputs\)=33 is out of range: choose 1 <= block \(outputs\) <= 32"),
                                            ((1, 2, 3), "must be one integer or a pair"),
                                            ("8", "is not an integer")])
def test_bad_block_sizes_are_named(block, message):
    with pytest.raises(SparsetopoError, match=message):
        build("regular_rotating", 64, 32, 1, block=block)


def test_k_counts_output_blocks():
    with pytest.raises(SparsetopoError, match=r"k \(with output blocks of 8 \(ceil\(30/8\) = 4\)\)=5 is out of range"):
        build("regular_rotating", 64, 30, 5, block=8)
    with pytest.raises(SparsetopoError, match=r"k \(with output blocks of 8 \(ceil\(30/8\) = 4\)\)=30 is out of range"):
        build("fully_connected", 64, 30, 30, block=8)
    with pytest.raises(SparsetopoError, match="use k=4 or omit k"):
        build("fully_connected", 64, 30, 3, block=8)
    assert build("regular_rotating", 64, 30, 4, block=8).density == 1.0


def test_block_topology_saves_and_loads(tmp_path):
    t = build("random_rotating", 50, 37, 2, seed=9, block=(4, 6))
    u = Topology.load(t.save(tmp_path / "t.npz"))
    assert u.block == (4, 6) and u.fingerprint == t.fingerprint and u.provenance() == t.provenance()
    plain = build("random_rotating", 50, 37, 2, seed=9)
    assert Topology.load(plain.save(tmp_path / "p.npz")).block == (1, 1)


def test_a_topology_whose_edges_are_not_whole_tiles_is_refused():
    t = build("random_regular", 16, 16, 3, seed=1)
    with pytest.raises(SparsetopoError, match="are not whole blocks of 4x4"):
        Topology(16, 16, "random_regular", 3, 1, indptr=t.indptr, indices=t.indices, block_in=4, block_out=4)


# -- graph measures come from the block graph -------------------------------------------------
def dense_spectra(mask):
    """Singular values of the biadjacency and Laplacian eigenvalues, from the dense matrices."""
    m = mask.astype(float)
    n, k = m.shape
    laplacian = np.zeros((n + k, n + k))
    laplacian[:n, n:], laplacian[n:, :n] = -m, -m.T
    laplacian += np.diag(-laplacian.sum(1))
    return np.linalg.svd(m, compute_uv=False), np.linalg.eigvalsh(laplacian)


@pytest.mark.parametrize("name, n_in, n_out, k, block", [("random_regular", 64, 48, 3, 8),
                                                         ("regular_rotating", 96, 96, 2, (16, 4)),
                                                         ("random_edge", 50, 37, 2, (4, 6)),
                                                         ("long_short_rotating", 45, 70, 3, (4, 9))])
def test_block_spectra_equal_the_dense_spectra_of_the_lifted_graph(name, n_in, n_out, k, block):
    t = build(name, n_in, n_out, k, seed=2, block=block)
    quotient = BlockQuotient.of(t)
    singular, laplacian = dense_spectra(t.mask())
    ours = quotient.singular_values()
    np.testing.assert_allclose(ours, singular[:ours.size], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(singular[ours.size:], 0, atol=1e-9)   # the lift adds only zeros
    np.testing.assert_allclose(quotient.laplacian_spectrum, laplacian, rtol=1e-9, atol=1e-9)
    measured = layer_measures(t, method="sparse")
    assert measured["method"] == "dense"   # solved exactly on the blocks
    assert measured["spectral_gap"] == pytest.approx(singular[0] - singular[1], rel=1e-9)
    nonzero = laplacian[laplacian > 1e-8]
    assert measured["paper_laplacian_largest"] == pytest.approx(nonzero[-1], rel=1e-9)
    assert measured["paper_laplacian_second_largest"] == pytest.approx(nonzero[-2], rel=1e-9)
    expected_fiedler = laplacian[1] if measured["components"] == 1 else 0.0
    assert measured["algebraic_connectivity"] == pytest.approx(expected_fiedler, rel=1e-9, abs=1e-9)


def test_even_widths_scale_the_singular_values_by_the_root_of_the_tile_size():
    t = build("random_regular", 96, 64, 3, seed=4, block=(12, 8))
    block_singular = np.linalg.svd(t.block_graph.mask().astype(float), compute_uv=False)
    singular, _ = dense_spectra(t.mask())
    np.testing.assert_allclose(singular[:block_singular.size], np.sqrt(12 * 8) * block_singular, rtol=1e-9, atol=1e-9)
    assert layer_measures(t)["spectral_gap"] == pytest.approx(np.sqrt(96) * (block_singular[0] - block_singular[1]))
