"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from sparsetopo.errors import SparsetopoError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a rename would replace a device, FIFO or folder
        raise SparsetopoError(f"{path} is not a regular file: choose a file path for the output")
    make_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; finished files get the usual mode
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        if exc.filename is None or exc.filename == tmp:  # a failed write names no file (or the temporary one)
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def make_parent(path) -> None:
    """Create the folder ``path`` goes into, or raise SparsetopoError naming the part of it that
    is a file (mkdir would only say "File exists" or "Not a directory")."""
    folder = Path(path).parent
    for part in [folder, *folder.parents]:
        if part.exists():
            if not part.is_dir():
                raise SparsetopoError(f"{path}: {part} is a file, not a folder: choose another path")
            break
    folder.mkdir(parents=True, exist_ok=True)


def check_writable(path) -> None:
    """Raise OSError (naming the folder) unless a file can be written at ``path``: lets a command
    check all its outputs before it writes the first one."""
    make_parent(path)
    with tempfile.TemporaryFile(dir=Path(path).parent):
        pass
