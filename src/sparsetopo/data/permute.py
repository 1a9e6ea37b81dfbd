"""One fixed permutation of the input features: a null for the data's alignment with a topology.

With pixels in raster order, a rotating construction joins neighbouring inputs to overlapping
sets of hidden neurons (input ``i`` to outputs ``i mod m .. i+k-1 mod m``): a 1-D receptive
field along the pixel rows. Shuffling the features once, identically for every example of the
train and test sets, keeps every example's information and every graph's spectrum, but takes
away any alignment between the graph and the image. Comparing constructions with and without
it separates what the graph does from what its alignment with the data does.

The permutation depends only on its own seed and the number of features, never on the run's
seed, so every network of a comparison sees the same permuted data.
"""

from __future__ import annotations

import numpy as np

from sparsetopo.errors import check_int
from sparsetopo.seeding import rng

__all__ = ["input_permutation", "permute_features"]


def input_permutation(seed: int, n_features: int) -> np.ndarray:
    """The permutation ``perm`` (int64, length ``n_features``) that seed ``seed`` gives: permuted
    data is ``x[:, perm]``, i.e. feature ``j`` of the permuted data is feature ``perm[j]`` of the
    original. SparsetopoError for a negative or non-integer seed."""
    seed = check_int("permute_inputs", seed, 0)
    n_features = check_int("n_features", n_features, 1)
    return rng(seed, "data", "permute_inputs").permutation(n_features).astype(np.int64)


def permute_features(x, seed: int | None):
    """``x`` (examples, features; a numpy array or torch tensor) with its columns in the order of
    :func:`input_permutation` for ``seed``; ``x`` itself when ``seed`` is None."""
    if seed is None:
        return x
    perm = input_permutation(seed, x.shape[1])
    if not isinstance(x, np.ndarray):  # a torch tensor: index with a tensor of the same device
        import torch

        return x[:, torch.from_numpy(perm).to(x.device)]
    return x[:, perm]
