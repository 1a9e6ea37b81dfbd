"""The package's layering: kernels below torch, nn without training, topology without torch.

Each import runs in a fresh interpreter, since this process has long since imported torch.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sparsetopo"


def modules_after_import(module: str) -> set[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out))


@pytest.mark.parametrize("module", ["sparsetopo.topology", "sparsetopo.kernels.layer", "sparsetopo.kernels.batch_major",
                                    "sparsetopo.kernels.step",
                                    "sparsetopo.kernels.population", "sparsetopo.kernels.threads"])
def test_module_does_not_import_torch(module):
    loaded = modules_after_import(module)
    assert module in loaded
    assert "torch" not in loaded


def test_the_check_above_can_see_torch():
    assert "torch" in modules_after_import("sparsetopo.nn")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def test_no_kernel_source_mentions_torch():
    for path in (SRC / "kernels").glob("*.py"):
        assert not any(name.split(".")[0] == "torch" for name in _imports(path)), path


def test_nn_has_no_optimizer_and_no_epoch_loop():
    """Torch modules only: training (optimizers, epochs) is sparsetopo.train's."""
    for path in (SRC / "nn").glob("*.py"):
        imports = _imports(path)
        assert not any(name.startswith(("torch.optim", "sparsetopo.train")) for name in imports), path
        text = path.read_text()
        assert "optim." not in text and "def fused_epoch" not in text, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert "epoch" not in node.name.lower(), (path, node.name)


LAYERS = ["errors", "seeding", "jsonable", "atomic", "topology", "spectral", "data", "kernels", "nn", "file_format",
          "io", "onnx", "train", "sweep", "report", "cli"]


def test_no_import_runs_back_up_the_layers():
    """config -> topology -> model -> train -> sweep -> report -> cli: a package imports only
    from packages at or below its own level."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    for path in SRC.rglob("*.py"):
        own = path.relative_to(SRC).parts[0].removesuffix(".py")
        if own not in rank:
            continue
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "sparsetopo" and len(parts) > 1 and parts[1] in rank:
                assert rank[parts[1]] <= rank[own], f"{path.relative_to(SRC)} imports {name}"


def test_no_reference_points_outside_the_repository():
    for path in SRC.rglob("*.py"):
        assert "DESIGN.md" not in path.read_text(), path


def test_importing_the_package_does_not_import_torch_until_asked():
    """sparsify, save, load and export_onnx are attributes of the package, loaded on first use."""
    loaded = modules_after_import("sparsetopo")
    assert "torch" not in loaded
    assert "sparsetopo.io" not in loaded and "sparsetopo.onnx" not in loaded
    code = "import sparsetopo, sys; sparsetopo.save; sparsetopo.sparsify; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_each_lazy_name_of_the_package_comes_from_its_layer():
    """The root package's ``__getattr__`` hands out each public function from the module the
    layout gives it, and every name in ``__all__`` resolves."""
    import sparsetopo

    homes = {"save": "sparsetopo.io", "load": "sparsetopo.io", "export_onnx": "sparsetopo.onnx.export",
             "sparsify": "sparsetopo.nn.sparsify", "summary": "sparsetopo.nn.sparsify",
             "reproduce": "sparsetopo.report.reproduce"}
    for name in sparsetopo.__all__:
        value = getattr(sparsetopo, name)
        if name in homes:
            assert value.__module__ == homes[name], name
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        sparsetopo.nothing  # noqa: B018


@pytest.mark.parametrize("given, expected", [(None, "3000"), ("250000", "250000")])
def test_the_command_line_sets_openmp_spinning_before_torch_loads_it(given, expected):
    """libgomp reads GOMP_SPINCOUNT once, when torch loads it: the CLI sets it (keeping a value
    the user gave) before any import of torch, so that its threads sleep soon after a parallel
    region instead of taking a loaded machine's free core (docs/design.md)."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    if given is not None:
        env["GOMP_SPINCOUNT"] = given
    code = ("import os, sys, sparsetopo; before = 'torch' in sys.modules; import sparsetopo.cli; "
            "print(before, os.environ['GOMP_SPINCOUNT'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split() == ["False", expected]
