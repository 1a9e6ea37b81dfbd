"""MNIST and Fashion-MNIST: find the four IDX files, download them if needed, read them.

Both datasets use the same four file names, so one set of rules serves both.

Search order (the first directory holding the files wins):

1. the ``data_dir`` argument (the CLI's ``--data-dir``), then ``$SPARSETOPO_DATA``: in each,
   ``<dir>/<dataset>/`` and then ``<dir>`` itself. These are the user's files: a corrupt
   one is an error, never overwritten. A directory that holds some but not all four files
   is an error too (mixing a train set from one place and a test set from another is never
   what anyone meant).
2. the cache, ``<cache>/<dataset>/`` with ``<cache>`` = ``$XDG_CACHE_HOME/sparsetopo`` or
   ``~/.cache/sparsetopo``. Cached gzipped files are checked against their md5 on every
   load; a file that fails is fetched again.
3. system directories (Debian's ``dataset-fashion-mnist`` package for Fashion-MNIST).
4. a download into the cache from each mirror in turn (see :mod:`.download`).

Each file may be gzipped (``.gz``) or plain; the gzipped name is preferred when both exist.
The mirror lists and md5 tables live in :data:`SOURCES` and can be overridden per call.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from sparsetopo.data.download import DEFAULT_TIMEOUT, DownloadFailed, Progress, fetch, md5_of
from sparsetopo.data.idx import read_idx, read_images, read_labels
from sparsetopo.errors import SparsetopoError

__all__ = ["IdxSource", "SOURCES", "FILES", "ENV_VAR", "default_cache_dir", "locate", "read_split"]

ENV_VAR = "SPARSETOPO_DATA"

#: The four files, without ``.gz``, in the order (train images, train labels, test images,
#: test labels).
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class IdxSource:
    """Where an IDX dataset can come from: download mirrors (base URLs ending in ``/``),
    the md5 of each gzipped file, and read-only system directories to look in."""

    name: str
    mirrors: tuple[str, ...]
    md5: Mapping[str, str]
    system_dirs: tuple[str, ...] = field(default=())


SOURCES: dict[str, IdxSource] = {
    "mnist": IdxSource(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": IdxSource(
        name="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Debian's dataset-fashion-mnist: the same data, recompressed (other md5s).
        system_dirs=("/usr/share/datasets/fashion-mnist",),
    ),
}


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sparsetopo``, or ``~/.cache/sparsetopo`` when that is unset."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsetopo"


def _present(directory: Path) -> dict[str, Path]:
    """The dataset files found in ``directory``, keyed by their plain name."""
    found = {}
    for stem in FILES:
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[stem] = candidate
                break
    return found


def _manual_hint(name: str, mirrors: Sequence[str], cache: Path, listed: bool = False) -> str:
    """How to supply the files by hand; ``listed``: the mirrors were named already (the
    attempts of a failed download), so the hint refers to them."""
    names = ", ".join(f"{stem}.gz" for stem in FILES)
    where = "one of the mirrors above" if listed and mirrors else (' or '.join(mirrors) or 'any mirror of ' + name)
    return (f"to supply the files by hand, download {names} (gzipped or not) from {where} and put them in "
            f"{cache / name}/, or in a directory DIR (or DIR/{name}/) passed "
            f"as --data-dir DIR or set as ${ENV_VAR}=DIR")


def _user_dirs(data_dir) -> list[tuple[Path, str]]:
    dirs = []
    if data_dir is not None:
        dirs.append((Path(data_dir), "data_dir"))
    if os.environ.get(ENV_VAR):
        dirs.append((Path(os.environ[ENV_VAR]), f"${ENV_VAR}"))
    for directory, label in dirs:
        if not directory.is_dir():
            raise SparsetopoError(f"{label}={str(directory)!r} is not a directory: create it, "
                                  f"or point {label} at the folder holding the IDX files")
    return dirs


def _cached_ok(path: Path, md5: str | None) -> bool:
    """Does a cached file look complete? By md5 when known, else by parsing it."""
    if md5 is not None and path.name.endswith(".gz"):
        return md5_of(path) == md5
    try:
        read_idx(path)
    except SparsetopoError:
        return False
    return True


def locate(name: str, data_dir=None, *, cache_dir=None, download: bool = True,
           mirrors: Sequence[str] | None = None, md5: Mapping[str, str] | None = None,
           progress: Progress | None = None, timeout: float = DEFAULT_TIMEOUT
           ) -> tuple[list[Path], str]:
    """The four files of dataset ``name`` (in :data:`FILES` order) and where they came from.

    Follows the module's search order, downloading into the cache when no directory has
    them and ``download`` is true. ``mirrors`` and ``md5`` replace the tables of
    :data:`SOURCES` (tests point them at a local server).

    Raises
    ------
    SparsetopoError for an unknown name, a ``data_dir``/``$SPARSETOPO_DATA`` that is not a
    directory or holds an incomplete set, or when the files are absent and cannot be
    downloaded; the message says how to supply them by hand.
    """
    if name not in SOURCES:
        raise SparsetopoError(f"no IDX source for {name!r}: choose one of {', '.join(SOURCES)}")
    source = SOURCES[name]
    mirrors = tuple(source.mirrors if mirrors is None else mirrors)
    md5 = dict(source.md5 if md5 is None else md5)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    for base, label in _user_dirs(data_dir):
        for directory in (base / name, base):
            found = _present(directory)
            if len(found) == len(FILES):
                return [found[s] for s in FILES], f"{directory} ({label})"
            if found:
                missing = ", ".join(s for s in FILES if s not in found)
                raise SparsetopoError(
                    f"{directory} ({label}) holds only part of {name}: {missing} missing "
                    f"(as .gz or plain); add them there, or move the partial set away")

    cached_dir = cache / name
    present = _present(cached_dir)
    cached = {stem: path for stem, path in present.items() if _cached_ok(path, md5.get(path.name))}
    rejected = sorted(path.name for stem, path in present.items() if stem not in cached)
    if len(cached) == len(FILES):
        return [cached[s] for s in FILES], f"{cached_dir} (cache)"

    for system in source.system_dirs:
        found = _present(Path(system))
        if len(found) == len(FILES):
            return [found[s] for s in FILES], f"{system} (system package)"

    def hints(listed: bool = False) -> list[str]:
        parts = [_manual_hint(name, mirrors, cache, listed)]
        if rejected:  # files of the right name that are not the expected ones: say so, or the hint runs in a circle
            parts.insert(0, f"{', '.join(rejected)} in {cached_dir} fail their md5 check (not the published "
                            f"files, or truncated) and were ignored: replace them, or put your own files in a --data-dir")
        return parts

    if not download:
        missing = ", ".join(s for s in FILES if s not in cached)
        raise SparsetopoError(f"{name} not found ({missing} missing, or failing their md5 in "
                              f"the cache) and download=False; {'; '.join(hints())}")
    for stem in FILES:
        if stem in cached:
            continue
        gz = f"{stem}.gz"
        try:
            cached[stem] = fetch(gz, cached_dir, mirrors, md5.get(gz),
                                 timeout=timeout, progress=progress)
        except DownloadFailed as exc:   # its details list each mirror tried: the hint refers to them
            raise DownloadFailed(exc.name, exc.attempts, exc.network, hints(listed=True)) from None
    return [cached[s] for s in FILES], f"{cached_dir} (cache, downloaded)"


def read_split(images_path, labels_path, n_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Read one images file and its labels file; their counts must agree.

    Returns ``(images, labels)`` as uint8 arrays of shape (count, rows, cols) and (count,).
    """
    images = read_images(images_path)
    labels = read_labels(labels_path, n_classes)
    if len(images) != len(labels):
        raise SparsetopoError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} "
            f"labels: the two files must come from the same set (replace the wrong one)")
    return images, labels
