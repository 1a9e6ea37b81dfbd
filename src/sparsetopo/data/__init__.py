"""Datasets: MNIST and Fashion-MNIST from IDX files (found, or downloaded with md5 checks),
scikit-learn's bundled 8x8 digits (the offline default), and a seeded synthetic set.

``load_dataset(name, data_dir=None, seed=0, ...)`` returns a :class:`Dataset` with float32
pixels in [0, 1] flattened to (examples, features) and int64 labels, whatever the source.

Modules, one job each: :mod:`.idx` (the file format), :mod:`.download` (mirrors, md5,
atomic writes), :mod:`.mnist` (where the IDX files are looked for), :mod:`.offline` (digits
and synthetic arrays), :mod:`.datasets` (the Dataset value and the registry), :mod:`.permute`
(one fixed permutation of the input features, the protocol's ``permute_inputs``).
"""

from sparsetopo.data.datasets import (DATASETS, Dataset, DatasetSpec, dataset_names, dataset_shape, load_dataset,
                                      prepare_dataset)
from sparsetopo.data.download import DownloadFailed, fetch, md5_of
from sparsetopo.data.idx import read_idx, read_images, read_labels, write_idx
from sparsetopo.data.mnist import ENV_VAR, FILES, SOURCES, IdxSource, default_cache_dir, locate
from sparsetopo.data.permute import input_permutation, permute_features

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetSpec",
    "DownloadFailed",
    "ENV_VAR",
    "FILES",
    "IdxSource",
    "SOURCES",
    "dataset_names",
    "dataset_shape",
    "default_cache_dir",
    "fetch",
    "input_permutation",
    "load_dataset",
    "locate",
    "md5_of",
    "permute_features",
    "prepare_dataset",
    "read_idx",
    "read_images",
    "read_labels",
    "write_idx",
]
