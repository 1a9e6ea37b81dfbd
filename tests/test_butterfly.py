"""The flat butterfly construction: hand-computed adjacencies, exact degrees, and the masks'
order checked against a brute-force reading of its docstring."""

from __future__ import annotations

import numpy as np
import pytest

from sparsetopo import build
from sparsetopo.topology.constructions import butterfly_masks

# 8 x 8 by hand: input i feeds i, i^1, i^2 (k = 3), and also i^4 (k = 4)
HAND_K3 = ["11100000", "11010000", "10110000", "01110000", "00001110", "00001101", "00001011", "00000111"]
HAND_K4 = ["11101000", "11010100", "10110010", "01110001", "10001110", "01001101", "00101011", "00010111"]


@pytest.mark.parametrize("k, rows", [(3, HAND_K3), (4, HAND_K4)])
def test_eight_by_eight_equals_the_hand_computed_adjacency(k, rows):
    expected = np.array([[int(c) for c in row] for row in rows], dtype=bool)
    assert np.array_equal(build("butterfly", 8, 8, k).mask(), expected)


def test_full_flat_butterfly_is_identity_plus_every_stride():
    """k = 1 + log2(m): the support of I + B_1 + B_2 + ... + B_{m/2}."""
    m = 32
    dense = np.eye(m, dtype=bool)
    for s in (1, 2, 4, 8, 16):
        dense[np.arange(m), np.arange(m) ^ s] = True
    assert np.array_equal(build("butterfly", m, m, 6).mask(), dense)


def test_masks_come_by_set_bits_then_value():
    brute = sorted(range(16), key=lambda d: (bin(d).count("1"), d))
    assert butterfly_masks(16).tolist() == brute
    assert butterfly_masks(9).tolist() == brute  # below the next power of two, 16
    assert butterfly_masks(1).tolist() == [0]


def reference(n, m, k):
    """The docstring's reading, one input at a time: base i mod m, the first k masks that stay below m."""
    masks = sorted(range(1 << max(m - 1, 0).bit_length()), key=lambda d: (bin(d).count("1"), d))
    mask = np.zeros((n, m), dtype=bool)
    for i in range(n):
        outs = [(i % m) ^ d for d in masks if (i % m) ^ d < m][:k]
        mask[i, outs] = True
    return mask


@pytest.mark.parametrize("n, m, k", [(8, 8, 1), (16, 16, 16), (30, 20, 7), (784, 300, 9), (5, 12, 12),
                                     (100, 37, 11), (1, 1, 1), (64, 3, 2)])
def test_every_input_has_exactly_k_outputs_as_the_reading_says(n, m, k):
    t = build("butterfly", n, m, k)
    assert np.array_equal(t.out_degrees, np.full(n, k))
    assert np.array_equal(t.mask(), reference(n, m, k))


@pytest.mark.parametrize("m, k", [(16, 3), (64, 7), (128, 20)])
def test_square_power_of_two_layers_are_biregular(m, k):
    assert np.array_equal(build("butterfly", m, m, k).in_degrees, np.full(m, k))


def test_deterministic_and_seed_free():
    a, b = build("butterfly", 50, 40, 6, seed=1), build("butterfly", 50, 40, 6, seed=9)
    assert a.mask_sha256() == b.mask_sha256()
