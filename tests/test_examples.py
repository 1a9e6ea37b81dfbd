"""The ``>>>`` examples in the docstrings of the functions users call first run, and print what
they show. Each listed function must carry at least one example."""

from __future__ import annotations

import doctest
import importlib

import pytest

# dotted path of each public function whose docstring teaches by example
EXAMPLED = ["sparsetopo.topology.registry.build", "sparsetopo.nn.sparsify.sparsify", "sparsetopo.train.loop.train",
            "sparsetopo.io.save", "sparsetopo.io.load", "sparsetopo.onnx.export.export_onnx"]
# the optional packages an example needs (the ``io`` extra); without them it is skipped
NEEDS = {"sparsetopo.io.save": ["safetensors"], "sparsetopo.io.load": ["safetensors"],
         "sparsetopo.onnx.export.export_onnx": ["onnx", "onnxruntime"]}


def resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("path", EXAMPLED)
def test_docstring_examples_run(path, tmp_path, monkeypatch):
    for package in NEEDS.get(path, []):
        pytest.importorskip(package)
    monkeypatch.chdir(tmp_path)   # examples that write files write them here
    tests = doctest.DocTestFinder(recurse=False).find(resolve(path), path.rpartition(".")[2])
    examples = sum(len(t.examples) for t in tests)
    assert examples > 0, f"{path} has no >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test, out=lambda text: None)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {examples} examples of {path} fail: python -m doctest -v"


def test_a_wrong_example_fails(tmp_path):
    """The check above can fail: an example whose printed value is wrong is counted as failed."""
    def wrong():
        """
        >>> 1 + 1
        3
        """
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(wrong, "wrong"):
        runner.run(test, out=lambda text: None)
    assert runner.summarize(verbose=False).failed == 1
