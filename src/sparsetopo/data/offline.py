"""Datasets that need no files: scikit-learn's bundled 8x8 digits and a generated one.

Both return plain arrays ``(x_train, y_train, x_test, y_test)`` (float32 in [0, 1], flattened;
int64 labels); :mod:`.datasets` wraps them into a :class:`~sparsetopo.data.Dataset`.
All randomness comes from :func:`sparsetopo.seeding.rng`, so a seed fixes the result.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sparsetopo.errors import SparsetopoError, check_int
from sparsetopo.seeding import rng

__all__ = ["digits_arrays", "synthetic_arrays", "stratified_split"]


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and test indices with ``round(test_fraction * count)`` of each class in
    the test part, chosen by ``seed``. Stratified, so the class balance of a small test set
    does not depend on the seed."""
    if not 0.0 < float(test_fraction) < 1.0:
        raise SparsetopoError(f"test_fraction={test_fraction!r} must lie strictly between 0 and 1")
    generator = rng(seed, "data", "stratified_split")
    test = []
    for cls in np.unique(labels):
        members = generator.permutation(np.flatnonzero(labels == cls))
        test.append(members[: int(round(test_fraction * len(members)))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def digits_arrays(seed: int = 0, test_fraction: float = 0.25):
    """scikit-learn's 1797 bundled 8x8 digits (offline), pixels / 16, stratified split.

    With the default 25% test part: 1347 train and 450 test examples, 64 features, 10
    classes; about 42 steps of batch 32 an epoch, which makes it the quick default for demos
    and tests.
    """
    x, y = _digits_table()
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    train, test = stratified_split(y, test_fraction, seed)
    return x[train], y[train], x[test], y[test]


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """What ``sklearn.datasets.load_digits(return_X_y=True)`` returns: pixels (0..16, float64)
    and labels, read from the CSV file scikit-learn ships them in without importing scikit-learn
    (which takes about a second, as long as the rest of a small run's start); through
    ``load_digits`` when the file is not where scikit-learn keeps it."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    table = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if table is None or not table.is_file():
        from sklearn.datasets import load_digits

        return load_digits(return_X_y=True)
    data = np.loadtxt(table, delimiter=",")
    return data[:, :-1], data[:, -1].astype(np.int64)


def synthetic_arrays(seed: int = 0, n_train: int = 8000, n_test: int = 2000,
                     n_features: int = 784, n_classes: int = 10, noise: float = 0.7,
                     ink: float = 0.2, mix: float = 0.8):
    """A learnable generated dataset, MNIST-shaped by default.

    Each class has a random prototype: a fraction ``ink`` of the features "on" with an
    intensity in [0.5, 1], the rest 0. An example of class ``c`` is

        clip(s * prototype[c] + a * prototype[d] + noise * N(0, 1), 0, 1)

    with a brightness ``s`` ~ U(0.6, 1), a distracting other class ``d`` mixed in with weight
    ``a`` ~ U(0, ``mix``), and Gaussian pixel noise. Clipping leaves many exact zeros, like
    real images. ``noise`` and ``mix`` set the difficulty; with the defaults a logistic
    regression reaches about 0.9 test accuracy (not 1.0), so topologies have room to differ.

    The prototypes, the training set and the test set use separate streams of ``seed``, so
    changing ``n_train`` does not change the test set.
    """
    n_train = check_int("n_train", n_train, 1)
    n_test = check_int("n_test", n_test, 1)
    n_features = check_int("n_features", n_features, 1)
    n_classes = check_int("n_classes", n_classes, 2)
    for name, value in (("noise", noise), ("ink", ink), ("mix", mix)):
        if not 0.0 <= float(value) <= (1.0 if name != "noise" else np.inf):
            raise SparsetopoError(f"{name}={value!r} is out of range: choose 0 <= {name}"
                                  + (" <= 1" if name != "noise" else ""))

    g = rng(seed, "data", "synthetic", "prototypes")
    on = g.random((n_classes, n_features)) < ink
    prototypes = (on * g.uniform(0.5, 1.0, (n_classes, n_features))).astype(np.float32)

    def sample(count: int, part: str):
        g = rng(seed, "data", "synthetic", part)
        y = g.integers(0, n_classes, count)
        other = (y + g.integers(1, n_classes, count)) % n_classes  # never the own class
        s = g.uniform(0.6, 1.0, (count, 1)).astype(np.float32)
        a = g.uniform(0.0, mix, (count, 1)).astype(np.float32)
        x = s * prototypes[y] + a * prototypes[other]
        x += noise * g.standard_normal(x.shape, dtype=np.float32)
        np.clip(x, 0.0, 1.0, out=x)
        return x, y.astype(np.int64)

    x_train, y_train = sample(n_train, "train")
    x_test, y_test = sample(n_test, "test")
    return x_train, y_train, x_test, y_test
