"""What the command line says agrees with the software: help texts, tables, hints and errors."""

from __future__ import annotations

import dataclasses
import re
import socket
import sys

import pytest

from sparsetopo.cli import main
from sparsetopo.cli.app import error_text
from sparsetopo.data import DownloadFailed, fetch
from sparsetopo.errors import SparsetopoError
from sparsetopo.sweep import SweepStore, preset_names, run_sweep
from sparsetopo.sweep.executors import check_executor
from sparsetopo.train import TrainConfig


def output(capsys, *argv) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def option_help(text: str, option: str) -> str:
    """The help of one option: from its name to the next option, joined onto one line."""
    block = re.search(rf"^\s+{re.escape(option)}\b(.*?)(?=^\s+--|\Z)", text, re.S | re.M).group(1)
    return " ".join(block.split())


def test_reproduce_help_lists_the_presets_of_the_registry(capsys):
    text = option_help(output(capsys, "reproduce", "--help"), "--preset")
    assert len(preset_names()) >= 4
    for name in preset_names():
        assert name in text, (name, text)


def test_sweep_status_help_names_every_key_of_its_json(tmp_path, capsys):
    with SweepStore(tmp_path / "s.sqlite") as store:
        keys = store.status().keys()
    text = option_help(output(capsys, "sweep", "status", "--help"), "--json")
    assert "workers" in keys
    for key in keys:
        assert key in text, (key, text)


def test_sweep_presets_is_one_aligned_table(capsys):
    lines = output(capsys, "sweep", "presets").splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert len({line.index(" runs ") for line in lines}) == 1, lines   # the counts end in one column


def test_train_help_keeps_the_continued_example_on_two_lines(capsys):
    text = output(capsys, "train", "--help")
    assert re.search(r"--optimizer adam \\\n\s+--lr 0\.003", text), text
    assert not re.search(r"adam {2,}--lr", text)


def test_a_missing_extra_names_the_pypi_and_the_checkout_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray now raises ImportError
    with pytest.raises(SparsetopoError) as info:
        check_executor("ray")
    assert "pip install 'sparsetopo[ray]'" in str(info.value) and "pip install -e '.[ray]'" in str(info.value)


def test_the_inline_executor_reports_one_cpu(tmp_path, capsys):
    configs = [TrainConfig(dataset="digits", hidden=(8,), epochs=1, limit_train=48, seed=s) for s in range(3)]
    events = []
    run_sweep(configs, tmp_path / "inline.sqlite", executor="inline", measures=False, on_result=events.append)
    assert [e.cpus for e in events] == [1, 1, 1]
    with SweepStore(tmp_path / "inline.sqlite", readonly=True) as store:
        assert store.status()["workers"] == 1


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
