"""The :class:`Dataset` value and :func:`load_dataset`, the one entry point for data.

Every dataset arrives in the same form, whatever its origin: float32 pixels in [0, 1],
flattened to (examples, features), int64 labels, and a ``source`` line saying where it came
from (recorded with results so a run can be traced to its files).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from sparsetopo.data import mnist, offline
from sparsetopo.errors import SparsetopoError, check_int
from sparsetopo.seeding import rng

__all__ = ["Dataset", "DatasetSpec", "DATASETS", "load_dataset", "dataset_names", "dataset_shape", "prepare_dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split ready for training.

    Attributes
    ----------
    name : the registry name (``mnist``, ``digits``, ...).
    x_train, x_test : float32, shape (examples, n_features), values in [0, 1].
    y_train, y_test : int64 class indices in ``0..n_classes-1``.
    n_classes : number of classes (not inferred: a small subset may miss a class).
    source : where the data came from, one line.

    Arrays given in other dtypes are converted; inconsistent shapes raise SparsetopoError.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    source: str = ""

    def __post_init__(self):
        for part in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{part}"), dtype=np.float32)
            y = np.asarray(getattr(self, f"y_{part}"), dtype=np.int64)
            x = x.reshape(len(x), -1) if x.ndim != 2 else x
            if len(x) != len(y) or y.ndim != 1:
                raise SparsetopoError(f"dataset {self.name!r}: x_{part} has {len(x)} rows but "
                                      f"y_{part} has shape {y.shape}; give one label per row")
            if y.size and (y.min() < 0 or y.max() >= self.n_classes):
                raise SparsetopoError(f"dataset {self.name!r}: y_{part} holds labels outside "
                                      f"0..{self.n_classes - 1}; fix the labels or n_classes")
            object.__setattr__(self, f"x_{part}", x)
            object.__setattr__(self, f"y_{part}", y)
        if self.x_train.shape[1] != self.x_test.shape[1]:
            raise SparsetopoError(f"dataset {self.name!r}: x_train has {self.x_train.shape[1]} "
                                  f"features but x_test has {self.x_test.shape[1]}")

    @property
    def n_features(self) -> int:
        """Number of input features (784 for MNIST, 64 for digits)."""
        return int(self.x_train.shape[1])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
                f"n_features={self.n_features}, n_classes={self.n_classes}, "
                f"source={self.source!r})")

    def limited(self, limit_train: int | None = None, limit_test: int | None = None,
                subset: str = "first", seed: int = 0) -> "Dataset":
        """A copy keeping at most ``limit_train`` / ``limit_test`` examples (None: all).

        ``subset="first"`` keeps the first examples (the usual "MNIST subset");
        ``subset="random"`` keeps a seeded random choice, in the original order.
        """
        if subset not in ("first", "random"):
            raise SparsetopoError(f"subset={subset!r} is not valid: choose 'first' or 'random'")
        parts = {}
        notes = []
        for part, limit in (("train", limit_train), ("test", limit_test)):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if limit is not None:
                limit = check_int(f"limit_{part}", limit, 1, len(x))
                if subset == "first":
                    keep = np.arange(limit)
                else:
                    keep = np.sort(rng(seed, "data", "subset", self.name, part)
                                   .choice(len(x), limit, replace=False))
                x, y = x[keep], y[keep]
                notes.append(f"{part} {subset} {limit}")
            parts[f"x_{part}"], parts[f"y_{part}"] = x, y
        if not notes:
            return self
        note = ", ".join(notes) + (f" (seed {seed})" if subset == "random" else "")
        return Dataset(self.name, n_classes=self.n_classes,
                       source=f"{self.source}; limited to {note}", **parts)


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its loader ``loader(seed, **options) -> Dataset``, a summary, and
    its shape with the loader's default options, so that a sweep can be planned without loading it."""

    name: str
    loader: Callable[..., Dataset]
    offline: bool  # available without files or network
    summary: str
    shape: tuple[int, int, int]  # (n_features, n_classes, n_train) with default options


def _digits(seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    arrays = offline.digits_arrays(seed, test_fraction)
    return Dataset("digits", *arrays, n_classes=10,
                   source=f"sklearn.datasets.load_digits (bundled), stratified split "
                          f"test_fraction={test_fraction} seed={seed}")


def _synthetic(seed: int = 0, n_train: int = 8000, n_test: int = 2000, n_features: int = 784,
               n_classes: int = 10, noise: float = 0.7, ink: float = 0.2,
               mix: float = 0.8) -> Dataset:
    arrays = offline.synthetic_arrays(seed, n_train, n_test, n_features, n_classes,
                                      noise, ink, mix)
    return Dataset("synthetic", *arrays, n_classes=n_classes,
                   source=f"generated: prototypes + noise, seed={seed} noise={noise} "
                          f"ink={ink} mix={mix}")


def _idx_loader(name: str) -> Callable[..., Dataset]:
    def load(seed: int = 0, data_dir=None, cache_dir=None, download: bool = True,
             progress=None, timeout: float = mnist.DEFAULT_TIMEOUT, mirrors=None,
             md5=None) -> Dataset:
        paths, where = mnist.locate(name, data_dir, cache_dir=cache_dir, download=download,
                                    mirrors=mirrors, md5=md5, progress=progress,
                                    timeout=timeout)
        train_x, train_y = mnist.read_split(paths[0], paths[1])
        test_x, test_y = mnist.read_split(paths[2], paths[3])
        if train_x.shape[1:] != test_x.shape[1:]:
            raise SparsetopoError(
                f"{paths[0]} holds {train_x.shape[1]}x{train_x.shape[2]} images but {paths[2]} "
                f"holds {test_x.shape[1]}x{test_x.shape[2]}: the files come from different sets")
        scale = np.float32(1 / 255)
        return Dataset(name, train_x.reshape(len(train_x), -1) * scale, train_y,
                       test_x.reshape(len(test_x), -1) * scale, test_y, n_classes=10,
                       source=where)

    load.__name__ = f"load_{name.replace('-', '_')}"
    load.__doc__ = f"{name} from IDX files; see :mod:`sparsetopo.data.mnist` for the search order."
    return load


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec("mnist", _idx_loader("mnist"), False,
                    "MNIST handwritten digits, 60000/10000 28x28 (files or download)", (784, 10, 60000)),
        DatasetSpec("fashion-mnist", _idx_loader("fashion-mnist"), False,
                    "Zalando clothing images, 60000/10000 28x28 (files, Debian package or download)",
                    (784, 10, 60000)),
        DatasetSpec("digits", _digits, True,
                    "scikit-learn's bundled 8x8 digits, 1347/450 (offline default)", (64, 10, 1347)),
        DatasetSpec("synthetic", _synthetic, True,
                    "generated prototypes + noise, 8000/2000, 784 features by default", (784, 10, 8000)),
    ]
}


def dataset_names() -> list[str]:
    """The registered dataset names."""
    return list(DATASETS)


def prepare_dataset(name: str, data_dir=None) -> str:
    """Make sure dataset ``name`` can be loaded, without loading it; return where it comes from.

    For the IDX data sets this finds the files (downloading them into the cache when they are
    nowhere) exactly as :func:`load_dataset` would; the offline ones need nothing. Raises the
    same SparsetopoError as loading would (files missing and no download possible, a bad
    ``data_dir``), so a sweep can stop before it starts.
    """
    if name not in DATASETS:
        raise SparsetopoError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    if DATASETS[name].offline:
        return DATASETS[name].summary
    _, where = mnist.locate(name, data_dir)
    return where


def dataset_shape(name: str, data_dir=None) -> tuple[int, int, int]:
    """``(n_features, n_classes, n_train)`` of dataset ``name`` with its default options, without
    loading it (:attr:`DatasetSpec.shape`); SparsetopoError for an unknown name."""
    try:
        return DATASETS[name].shape
    except (KeyError, TypeError):
        raise SparsetopoError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}") from None


def load_dataset(name: str, data_dir=None, seed: int = 0, *, limit_train: int | None = None,
                 limit_test: int | None = None, subset: str = "first", **options) -> Dataset:
    """Load dataset ``name`` as a :class:`Dataset`.

    Parameters
    ----------
    name : one of :data:`DATASETS`: ``mnist``, ``fashion-mnist``, ``digits``, ``synthetic``.
    data_dir : a directory holding IDX files (``mnist``/``fashion-mnist`` only; ignored by
        the offline datasets so that a CLI can pass it unconditionally).
    seed : seeds the digits split, the synthetic data and a random subset.
    limit_train, limit_test : keep at most this many examples (see :meth:`Dataset.limited`).
    subset : ``"first"`` or ``"random"``, how the limits choose examples.
    **options : passed to the dataset's loader. ``digits``: ``test_fraction``.
        ``synthetic``: ``n_train, n_test, n_features, n_classes, noise, ink, mix``.
        ``mnist``/``fashion-mnist``: ``cache_dir, download, progress, timeout, mirrors, md5``.

    Raises
    ------
    SparsetopoError for an unknown name (listing the valid ones), an option the dataset does
    not take (listing those it does), bad values, or files that are missing or corrupt.
    """
    try:
        spec = DATASETS[name]
    except (KeyError, TypeError):
        raise SparsetopoError(
            f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}") from None
    seed = check_int("seed", seed, 0)
    accepted = [p for p in inspect.signature(spec.loader).parameters if p != "seed"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SparsetopoError(
            f"dataset {name!r} takes no option {', '.join(map(repr, unknown))}: valid options "
            f"are {', '.join(a for a in accepted if a != 'data_dir') or 'none'}")
    if data_dir is not None and "data_dir" in accepted:
        options["data_dir"] = data_dir
    dataset = spec.loader(seed=seed, **options)
    return dataset.limited(limit_train, limit_test, subset, seed)
