"""Constructions: invariants, hand-computed small masks, determinism, persistence, bad input."""

import math

import numpy as np
import pytest

from sparsetopo import SparsetopoError, Topology, build, build_stack
from sparsetopo.topology import (
    CONSTRUCTIONS,
    fibonacci_positions,
    long_short_positions,
    regular_positions,
)

ROTATING = ["random_rotating", "regular_rotating", "long_short_rotating", "fibonacci_rotating"]
EXACT_DEGREE = ROTATING + ["random_regular"]
DETERMINISTIC = ["fully_connected", "regular_rotating", "long_short_rotating", "fibonacci_rotating"]
RANDOM = ["random_edge", "random_rotating", "random_regular"]
SHAPES = [(784, 300, 30), (300, 784, 5), (20, 20, 7), (10, 40, 40), (7, 3, 1)]


def mask_from_positions(n, m, positions):
    """Reference: Adj[i][j] = v[(j - i) mod m], written as the paper's formula, entry by entry."""
    v = np.zeros(m, dtype=bool)
    v[list(positions)] = True
    return np.array([[v[(j - i) % m] for j in range(m)] for i in range(n)])


@pytest.mark.parametrize("name", EXACT_DEGREE)
@pytest.mark.parametrize("n,m,k", SHAPES)
def test_every_input_has_exactly_k_distinct_outputs(name, n, m, k):
    t = build(name, n, m, k, seed=3)
    assert np.all(t.out_degrees == k)
    mask = t.mask()
    assert mask.sum() == n * k  # no duplicate edges collapsed
    assert t.nnz == n * k and math.isclose(t.density, k / m)


@pytest.mark.parametrize("name", ROTATING)
@pytest.mark.parametrize("n,m,k", SHAPES)
def test_rotating_rows_are_shifts_of_one_base_vector(name, n, m, k):
    mask = build(name, n, m, k, seed=5).mask()
    v = mask[0]
    assert v.sum() == k
    for i in range(n):
        assert np.array_equal(mask[i], np.roll(v, i))
    in_deg = mask.sum(axis=0)
    assert in_deg.min() >= k * (n // m) and in_deg.max() <= k * -(-n // m)


@pytest.mark.parametrize("n,m,k", SHAPES + [(500, 37, 30), (100, 1000, 999)])
def test_random_regular_in_degrees_are_balanced(n, m, k):
    t = build("random_regular", n, m, k, seed=11)
    assert t.in_degrees.max() - t.in_degrees.min() <= 1
    assert t.in_degrees.sum() == n * k


def test_acceptance_degrees_for_784_300_30():
    assert set(build("random_regular", 784, 300, 30).in_degrees) <= {78, 79}
    for name in ROTATING:
        deg = build(name, 784, 300, 30).in_degrees
        assert 60 <= deg.min() and deg.max() <= 90


def test_random_edge_density_within_four_standard_deviations():
    n, m, k = 784, 300, 30
    p = k / m
    for seed in range(5):
        t = build("random_edge", n, m, k, seed=seed)
        sd = math.sqrt(n * m * p * (1 - p))
        assert abs(t.nnz - n * m * p) <= 4 * sd
        assert t.mask().sum() == t.nnz


def test_random_edge_entries_look_independent():
    # each row's count is Binomial(m, p): its variance must be close to m p (1-p)
    t = build("random_edge", 4000, 100, 20, seed=1)
    var = t.out_degrees.var()
    assert 0.85 * 16 < var < 1.15 * 16


# -- hand-computed base vectors ---------------------------------------------------------------
@pytest.mark.parametrize(
    "m,k,expected",
    [
        (20, 5, [0, 1, 2, 3, 5]),  # the example: all Fibonacci numbers fit
        (20, 7, [0, 1, 2, 3, 5, 8, 13]),
        (20, 1, [0]),
        # 0,1,2,3,5,8,13,21 scaled by 9/21 -> 0,0,0,1,2,3,5,9 -> collisions move up: 0,1,2,3,4,5,6,9
        (10, 8, [0, 1, 2, 3, 4, 5, 6, 9]),
        # 0,1,2,3,5 scaled by 3/5 -> 0,0,1,1,3 -> 0,1,2,3,4 minus wrap: 0->0,0->1,1->2,1->3,3->4
        (5, 5, [0, 1, 2, 3, 4]),
    ],
)
def test_fibonacci_base_vectors(m, k, expected):
    assert fibonacci_positions(m, k).tolist() == expected


def test_long_short_base_vector_example():
    # s = ceil(5/2) = 3 ones at 0,1,2; L = 2 at 3 + floor(t * 17 / 2) for t = 0, 1 -> 3, 11
    assert long_short_positions(20, 5).tolist() == [0, 1, 2, 3, 11]


@pytest.mark.parametrize("m,k", [(300, 30), (10, 10), (10, 1), (7, 4), (784, 100)])
def test_base_vectors_have_exactly_k_distinct_positions(m, k):
    for fn in (regular_positions, long_short_positions, fibonacci_positions):
        pos = fn(m, k)
        assert len(set(pos.tolist())) == k and pos.min() >= 0 and pos.max() < m


def test_at_k3_regular_long_short_fibonacci_coincide():
    masks = [build(name, 50, 40, 3).mask() for name in ["regular_rotating", "long_short_rotating", "fibonacci_rotating"]]
    assert np.array_equal(masks[0], masks[1]) and np.array_equal(masks[0], masks[2])


@pytest.mark.parametrize(
    "name,positions",
    [("regular_rotating", [0, 1, 2]), ("long_short_rotating", [0, 1, 2]), ("fibonacci_rotating", [0, 1, 2])],
)
def test_small_hand_computed_masks(name, positions):
    # n=7 > m=6, k=3 (rows wrap); long-short: s=ceil(3/2)=2 at 0,1 and L=1 at s + 0 = 2
    assert np.array_equal(build(name, 7, 6, 3).mask(), mask_from_positions(7, 6, positions))


def test_long_short_hand_computed_mask_with_spread():
    # m=12, k=6: s=3 at 0,1,2; L=3 at 3 + floor(t*9/3) = 3, 6, 9
    assert np.array_equal(build("long_short_rotating", 5, 12, 6).mask(), mask_from_positions(5, 12, [0, 1, 2, 3, 6, 9]))


def test_regular_rotating_literal_rows():
    mask = build("regular_rotating", 4, 5, 2).mask().astype(int)
    assert mask.tolist() == [
        [1, 1, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1],
    ]


def test_fully_connected_is_all_ones():
    t = build("fully_connected", 6, 4)
    assert t.mask().all() and t.k == 4
    with pytest.raises(SparsetopoError, match="k=3"):
        build("fully_connected", 6, 4, 3)


# -- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_constructions_ignore_the_seed(name):
    k = None if name == "fully_connected" else 9
    assert build(name, 60, 30, k, seed=1).mask_sha256() == build(name, 60, 30, k, seed=2).mask_sha256()


@pytest.mark.parametrize("name", RANDOM)
def test_random_constructions_follow_the_seed(name):
    a, b, c = (build(name, 60, 30, 9, seed=s).mask_sha256() for s in (1, 1, 2))
    assert a == b and a != c


def test_build_stack_uses_distinct_seeds_per_layer_and_checks_lengths():
    layers = build_stack([30, 30, 30], "random_rotating", [5, 5], seed=0)
    assert [(t.n_in, t.n_out) for t in layers] == [(30, 30), (30, 30)]
    assert layers[0].mask_sha256() != layers[1].mask_sha256()
    again = build_stack([30, 30, 30], "random_rotating", [5, 5], seed=0)
    assert [t.fingerprint for t in layers] == [t.fingerprint for t in again]
    with pytest.raises(SparsetopoError, match="degrees"):
        build_stack([784, 300, 10], "regular_rotating", [30])
    with pytest.raises(SparsetopoError, match="k=20"):
        build_stack([784, 300, 10], ["regular_rotating", "regular_rotating"], [30, 20])


# -- the value ----------------------------------------------------------------------------------
def test_topology_is_immutable_and_round_trips(tmp_path):
    t = build("random_regular", 40, 25, 6, seed=4)
    with pytest.raises(ValueError):
        t.indices[0] = 1
    with pytest.raises(AttributeError):
        t.k = 3
    path = t.save(tmp_path / "t.npz")
    u = Topology.load(path)
    assert u.provenance() == t.provenance() and u.fingerprint == t.fingerprint
    assert np.array_equal(u.to_scipy().toarray(), t.mask())
    assert "random_regular" in repr(t) and "40x25" in repr(t)


def test_load_rejects_a_foreign_file(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.arange(3))
    with pytest.raises(SparsetopoError, match="not a sparsetopo topology"):
        Topology.load(bad)


def test_mask_sha256_matches_its_definition():
    import hashlib

    t = build("long_short_rotating", 13, 9, 4)
    assert t.mask_sha256() == hashlib.sha256(np.packbits(t.mask()).tobytes()).hexdigest()


# -- bad input ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,fragment",
    [
        (("regular_rotating", 784, 300, 0), "k=0"),
        (("regular_rotating", 784, 300, 301), "1 <= k <= 300"),
        (("regular_rotating", 0, 300, 3), "n_in=0"),
        (("regular_rotating", 10, 0, 3), "n_out=0"),
        (("nope", 10, 10, 3), "fibonacci_rotating"),
        (("regular_rotating", 10, 10, 2.5), "k=2.5"),
        (("regular_rotating", 10, 10, None), "needs a degree"),
    ],
)
def test_bad_input_names_the_value(args, fragment):
    with pytest.raises(SparsetopoError, match=fragment.replace("(", r"\(")):
        build(*args)


def test_registry_lists_the_papers_seven_constructions_and_the_butterfly():
    assert len(CONSTRUCTIONS) == 8 and all(spec.version >= 1 for spec in CONSTRUCTIONS.values())
    assert "butterfly" in CONSTRUCTIONS and not CONSTRUCTIONS["butterfly"].random


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    path = build("regular_rotating", 5, 4, 2).save(tmp_path / "t.npz")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


# -- the mask hash, streamed ---------------------------------------------------------------------
def dense_mask_sha256(t):
    """The hash's definition, on the dense mask: sha256 of numpy.packbits of the row-major mask."""
    import hashlib

    return hashlib.sha256(np.packbits(t.mask()).tobytes()).hexdigest()


# n_out = 1, 3, 5, 9, 13 do not fill whole bytes, so bytes straddle rows; n_in * n_out is not a
# multiple of 8 in (1, 1), (3, 5), (7, 9), (13, 13), (21, 3), so the last byte is padded
HASH_SHAPES = [(1, 1), (1, 3), (3, 1), (3, 5), (8, 3), (7, 9), (13, 13), (16, 8), (21, 3), (9, 40), (50, 24)]


@pytest.mark.parametrize("name", list(CONSTRUCTIONS))
@pytest.mark.parametrize("n,m", HASH_SHAPES)
def test_streamed_mask_sha256_equals_the_dense_formula(name, n, m):
    degrees = [None] if name == "fully_connected" else sorted({1, min(3, m), (m + 1) // 2, m})
    for k in degrees:  # k = n_out included: every row full
        t = build(name, n, m, k, seed=5)
        assert t.mask_sha256() == dense_mask_sha256(t), (name, n, m, k)


@pytest.mark.parametrize("block_bytes,block_edges", [(1, 1), (3, 5), (2, 1000), (1000, 7)])
def test_streamed_mask_sha256_across_many_blocks(monkeypatch, block_bytes, block_edges):
    import sparsetopo.topology.value as value

    monkeypatch.setattr(value, "_HASH_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(value, "_HASH_BLOCK_EDGES", block_edges)
    for name in CONSTRUCTIONS:
        for n, m in [(61, 7), (40, 13), (64, 3), (9, 100), (100, 1)]:
            k = None if name == "fully_connected" else min(m, 4)
            t = build(name, n, m, k, seed=2)
            assert t.mask_sha256() == dense_mask_sha256(t), (name, n, m)


def test_streamed_mask_sha256_of_a_hand_made_topology_with_empty_rows():
    rows = [[], [0, 4], [], [1, 2, 3, 4], [4], [], [], [], [0]]  # 9 x 5: bytes straddle rows
    t = Topology.from_rows(9, 5, rows, construction="hand", k=2, seed=None)
    assert t.mask_sha256() == dense_mask_sha256(t)
    empty = Topology.from_rows(3, 3, [[], [], []], construction="hand", k=1, seed=None)
    assert empty.mask_sha256() == dense_mask_sha256(empty)


def test_streamed_mask_sha256_never_builds_the_dense_mask(monkeypatch):
    import tracemalloc

    t = build("random_regular", 40_000, 40_000, 4, seed=1)  # dense mask: 1.6 GB, packed: 200 MB
    monkeypatch.setattr(Topology, "mask", lambda self: pytest.fail("mask_sha256 densified the mask"))
    tracemalloc.start()
    try:
        t.mask_sha256()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32e6, f"mask_sha256 peaked at {peak / 1e6:.0f} MB"


def test_random_regular_complement_in_blocks_equals_the_whole_mask(monkeypatch):
    """k > m/2 samples the holes and takes the complement block by block; the result must be
    the complement taken on the whole n x m mask at once, with the same random stream."""
    from sparsetopo.seeding import rng as make_rng
    from sparsetopo.topology import constructions

    n, m, k = 41, 12, 9
    holes = constructions._balanced_configuration(n, m, m - k, make_rng(6, "random_regular"))
    keep = np.ones((n, m), dtype=bool)
    keep[np.repeat(np.arange(n), m - k), holes.ravel()] = False
    for cells in (1, 25, 1 << 24):  # a row per block, two rows per block, one block
        monkeypatch.setattr(constructions, "_COMPLEMENT_BLOCK_CELLS", cells)
        assert np.array_equal(build("random_regular", n, m, k, seed=6).mask(), keep)
