"""What the command line says agrees with the software: help texts, tables, hints and errors."""

from __future__ import annotations

import dataclasses
import socket

import pytest

from sparsetopo.cli import main
from sparsetopo.cli.app import error_text
from sparsetopo.data import DownloadFailed, fetch
from sparsetopo.errors import SparsetopoError


# -- long errors: a short first line, then one indented line per part ------------------------------

def closed_port_url() -> str:
    """A local URL nothing listens on: connecting is refused at once, as with no network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def test_error_parts_are_one_line_in_the_library_and_a_list_in_the_cli():
    exc = SparsetopoError("could not do it", ["first: why", "second: why not"])
    assert str(exc) == "could not do it: first: why; second: why not"
    assert error_text(exc) == "could not do it:\n  first: why\n  second: why not"
    assert error_text(SparsetopoError("short")) == "short"


def test_unreachable_mirrors_say_network_and_name_no_local_file(tmp_path):
    mirrors = [closed_port_url(), closed_port_url()]
    with pytest.raises(DownloadFailed) as info:
        fetch("train-images-idx3-ubyte.gz", tmp_path / "cache", mirrors, None, timeout=5)
    exc = info.value
    assert exc.network and len(exc.attempts) == 2
    assert "network" in exc.headline and len(exc.headline) < 100
    for (url, reason), mirror in zip(exc.attempts, mirrors):
        assert url.startswith(mirror) and reason.startswith("cannot connect")
        assert str(tmp_path) not in reason   # a connection error, not a problem writing a file


def test_the_mnist_download_error_prints_a_short_line_and_a_list(tmp_path, capsys, monkeypatch):
    import sparsetopo.data.mnist as mnist

    mirrors = (closed_port_url(), closed_port_url())
    monkeypatch.setitem(mnist.SOURCES, "mnist", dataclasses.replace(mnist.SOURCES["mnist"], mirrors=mirrors))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SPARSETOPO_DATA", raising=False)
    assert main(["train", "--dataset", "mnist", "--epochs", "1"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("sparsetopo: error: could not download") and "network" in lines[0]
    assert len(lines[0]) < 120 and lines[0].endswith(":")
    assert [line.split(": ")[0].strip() for line in lines[1:3]] == [m + "train-images-idx3-ubyte.gz" for m in mirrors]
    assert all(line.startswith("  ") for line in lines[1:])
    assert "to supply the files by hand" in lines[-1] and "--data-dir" in lines[-1]
