"""Fetch one file from a list of mirrors, verified by md5, written atomically.

Why this shape: public dataset mirrors come and go and sometimes serve error pages with a
200 status, so every download is checked against a known md5 and the next mirror is tried
on any failure. The bytes stream into a temporary file beside the destination and are
renamed onto it only after the md5 matched, so an interrupted or killed download never
leaves a file under the final name. Only the standard library (``urllib.request``) is used.
Nothing is printed: callers may pass a ``progress`` callback instead.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Sequence

from sparsetopo.atomic import atomic_path
from sparsetopo.errors import SparsetopoError

__all__ = ["Progress", "DownloadFailed", "fetch", "md5_of"]

#: ``progress(file_name, bytes_so_far, total_bytes_or_None)``, called after every chunk.
Progress = Callable[[str, int, "int | None"], None]

CHUNK = 1 << 16
DEFAULT_TIMEOUT = 30.0


class DownloadFailed(SparsetopoError):
    """Every mirror failed for one file. ``attempts`` lists ``(url, reason)`` pairs; ``network``
    is true when no mirror could be reached at all (no connection, a timeout), which points at
    this machine's network rather than at the mirrors; ``hints`` say how to supply the file by
    hand. The message is a short first line; the attempts and the hints are its details."""

    def __init__(self, name: str, attempts: list[tuple[str, str]], network: bool = False,
                 hints: Sequence[str] = ()):
        self.name, self.attempts, self.network, self.hints = name, attempts, network, tuple(hints)
        what = "network: no mirror could be reached" if network else f"every mirror failed ({len(attempts)})"
        details = [f"{url}: {why}" for url, why in attempts] or ["no mirrors given"]
        super().__init__(f"could not download {name} ({what})", [*details, *self.hints])


class _Failed(Exception):
    """One mirror failed; not an OSError, so that atomic_path does not name the destination
    file as if writing it had failed."""

    def __init__(self, reason: str, network: bool = False):
        super().__init__(reason)
        self.reason, self.network = reason, network


def md5_of(path, chunk: int = 1 << 20) -> str:
    """The hex md5 of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _stream(url: str, tmp: Path, md5: str | None, name: str, timeout: float,
            progress: Progress | None) -> None:
    digest = hashlib.md5()
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        done = 0
        while block := response.read(CHUNK):
            out.write(block)
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(name, done, total)
    if total is not None and done != total:
        raise _Failed(f"got {done} of {total} bytes")
    if md5 is not None and digest.hexdigest() != md5:
        raise _Failed(f"md5 {digest.hexdigest()} differs from the expected {md5}")


def _attempt(url: str, tmp: Path, md5: str | None, name: str, timeout: float, progress: Progress | None) -> None:
    """:func:`_stream`, every way a mirror can fail raised as :class:`_Failed`."""
    try:
        _stream(url, tmp, md5, name, timeout, progress)
    except urllib.error.HTTPError as exc:
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        raise _Failed(f"cannot connect ({reason})", network=True) from None
    except TimeoutError as exc:
        raise _Failed(f"timed out after {timeout:g} s ({exc})", network=True) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # resets, cut streams
        raise _Failed(f"{type(exc).__name__}: {exc}") from None


def fetch(name: str, dest_dir, mirrors: Sequence[str], md5: str | None, *,
          timeout: float = DEFAULT_TIMEOUT, progress: Progress | None = None) -> Path:
    """Download ``name`` into ``dest_dir`` from the first mirror that serves the right bytes.

    Parameters
    ----------
    name : the file name, appended to each mirror's base URL (which should end in ``/``).
    dest_dir : created if missing; the file lands at ``dest_dir / name``.
    mirrors : base URLs, tried in order.
    md5 : the expected hex md5, or None to accept any complete response (not recommended).
    timeout : seconds of socket inactivity before a mirror counts as failed.
    progress : optional callback, see :data:`Progress`.

    Returns the path of the verified file.

    Raises
    ------
    DownloadFailed (a SparsetopoError) listing each URL tried and why it failed. A file
    already at the destination is replaced only by verified bytes, never removed.
    """
    dest = Path(dest_dir) / name
    attempts: list[tuple[str, str]] = []
    network = True
    for base in mirrors:
        url = base.rstrip("/") + "/" + name
        try:
            with atomic_path(dest) as tmp:
                _attempt(url, tmp, md5, name, timeout, progress)
            return dest
        except _Failed as exc:
            attempts.append((url, exc.reason))
            network = network and exc.network
    raise DownloadFailed(name, attempts, network=network and bool(attempts))
