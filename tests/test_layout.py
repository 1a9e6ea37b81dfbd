"""The package's layering: kernels and engines below torch, nn without training, topology without torch.

Each import runs in a fresh interpreter, since this process has long since imported torch.
"""

import ast
import json
import re
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
                                    "sparsetopo.kernels.threads", "sparsetopo.engines.step",
                                    "sparsetopo.engines.population", "sparsetopo.engines.predict"])
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


def test_no_kernel_or_engine_source_mentions_torch():
    paths = [*(SRC / "kernels").glob("*.py"), *(SRC / "engines").glob("*.py")]
    assert len(paths) > 4
    for path in paths:
        assert not any(name.split(".")[0] == "torch" for name in _imports(path)), path


def _functions(package: str) -> set[str]:
    return {node.name for path in (SRC / package).glob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.FunctionDef)}


def test_kernels_keep_the_layer_maths_and_engines_the_training_loops():
    """The batch loop, its loss and dropout, evaluation of a whole network and the population
    are engines/'s; kernels/ holds what one layer computes."""
    engine_only = {"train_batches", "mse_sigmoid_delta", "dropout_inputs", "population_batches",
                   "population_correct", "count_correct", "layer_outputs"}
    assert engine_only <= _functions("engines")
    assert not engine_only & _functions("kernels")


def test_nn_has_no_optimizer_and_no_epoch_loop():
    """Torch modules only: training (optimizers, epochs, the compiled engines) is sparsetopo.train's."""
    for path in (SRC / "nn").glob("*.py"):
        imports = _imports(path)
        assert not any(name.startswith(("torch.optim", "sparsetopo.train", "sparsetopo.engines")) for name in imports), path
        text = path.read_text()
        assert "optim." not in text and "def fused_epoch" not in text, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert "epoch" not in node.name.lower(), (path, node.name)


LAYERS = ["errors", "seeding", "jsonable", "atomic", "topology", "spectral", "data", "kernels", "engines", "nn",
          "file_format", "io", "onnx", "train", "sweep", "report", "cli"]


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


# what importing the bare package must not load: torch, the jit and the data-frame stack, and
# every sparsetopo layer above topology
HEAVY = ("torch", "numba", "pandas", "matplotlib", "sparsetopo.kernels", "sparsetopo.engines", "sparsetopo.nn",
         "sparsetopo.io", "sparsetopo.train", "sparsetopo.sweep", "sparsetopo.report", "sparsetopo.cli")


def test_importing_the_package_does_not_import_torch_until_asked():
    """sparsify, save, load and export_onnx are attributes of the package, loaded on first use."""
    loaded = modules_after_import("sparsetopo")
    assert not sorted(name for name in loaded if name.split(".")[0] in HEAVY or name.startswith(HEAVY))
    assert "sparsetopo.io" not in loaded and "sparsetopo.onnx" not in loaded
    code = "import sparsetopo, sys; sparsetopo.save; sparsetopo.sparsify; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "True"


def test_the_package_imports_eagerly_only_from_the_torch_free_layers():
    """The root package's own imports (outside ``__getattr__``) stay at or below topology."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    tree = ast.parse((SRC / "__init__.py").read_text())
    eager = [node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module]
    eager += [a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names]
    assert eager
    for name in eager:
        parts = name.split(".")
        assert parts[0] == "sparsetopo" and rank[parts[1]] <= rank["topology"], name


def test_every_lazy_name_resolves_to_the_module_that_defines_it():
    """Each name of ``sparsetopo.LAZY`` is in ``__all__``, comes from an existing module of a
    known layer, and is that module's own attribute."""
    import importlib

    import sparsetopo

    assert set(sparsetopo.LAZY) <= set(sparsetopo.__all__)
    for name, module in sparsetopo.LAZY.items():
        parts = module.split(".")
        assert parts[0] == "sparsetopo" and parts[1] in LAYERS, (name, module)
        path = SRC.joinpath(*parts[1:])
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), (name, module)
        assert getattr(sparsetopo, name) is getattr(importlib.import_module(module), name), name
    for name in sparsetopo.__all__:
        assert getattr(sparsetopo, name) is not None, name
    with pytest.raises(AttributeError, match="'no_such_name'"):
        sparsetopo.no_such_name


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


DESIGN = SRC.parents[1] / "docs" / "design.md"


def modules_named_in_design(text: str) -> tuple[set[str], set[str]]:
    """The modules and packages that docs/design.md's "Code layout" section names.

    A paragraph that opens with a package in bold (``**`nn/`**``) names that package, and each
    bare ``name.py`` in it is a module of the package; a path with a slash (``kernels/tiled.py``)
    is read from ``src/sparsetopo``; any other paragraph's ``name.py`` is a top-level module.
    """
    section = text.split("\n## Code layout\n", 1)[1].split("\n## ", 1)[0]
    modules, packages = set(), set()
    for paragraph in section.split("\n\n"):
        header = re.match(r"\*\*`([\w/]+)/`\*\*", paragraph.strip())
        package = header.group(1) if header else ""
        if package:
            packages.add(package)
        for name in re.findall(r"`([\w/]+\.py)`", paragraph):
            modules.add(name if "/" in name or not package else f"{package}/{name}")
    return modules, packages


def modules_in_tree(root: Path) -> tuple[set[str], set[str]]:
    """Every module file under ``root`` (package ``__init__`` files stand for their package)."""
    files = {path.relative_to(root).as_posix() for path in root.rglob("*.py") if "__pycache__" not in path.parts}
    modules = {f for f in files if not f.endswith("__init__.py")}
    packages = {f.rsplit("/", 1)[0] for f in files if f.endswith("/__init__.py")}
    return modules, packages


def layout_mismatches(text: str, root: Path) -> list[str]:
    named, named_packages = modules_named_in_design(text)
    present, present_packages = modules_in_tree(root)
    problems = [f"not named in docs/design.md 'Code layout': {m}" for m in sorted(present - named)]
    problems += [f"named in docs/design.md 'Code layout' but absent from src/sparsetopo: {m}"
                 for m in sorted(named - present)]
    problems += [f"package without a **`{p}/`** paragraph in docs/design.md 'Code layout'"
                 for p in sorted(present_packages - named_packages)]
    problems += [f"**`{p}/`** paragraph for a package absent from src/sparsetopo" for p in sorted(named_packages - present_packages)]
    return problems


def test_design_code_layout_names_every_module():
    problems = layout_mismatches(DESIGN.read_text(), SRC)
    assert not problems, "\n".join(problems)


def test_the_layout_check_names_what_is_missing_and_what_is_stale(tmp_path):
    """The check above can fail, and says which module is at fault either way."""
    for rel in ("__init__.py", "errors.py", "nn/__init__.py", "nn/linear.py", "nn/plan.py", "onnx/__init__.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    text = ("# Notes\n\n## Code layout\n\nTop: `errors.py` and `gone.py`.\n\n"
            "**`nn/`**: `linear.py`, and `kernels/old.py`.\n\n**`train/`**: nothing.\n\n## Next\n\n`nn/plan.py`\n")
    assert layout_mismatches(text, tmp_path) == [
        "not named in docs/design.md 'Code layout': nn/plan.py",
        "named in docs/design.md 'Code layout' but absent from src/sparsetopo: gone.py",
        "named in docs/design.md 'Code layout' but absent from src/sparsetopo: kernels/old.py",
        "package without a **`onnx/`** paragraph in docs/design.md 'Code layout'",
        "**`train/`** paragraph for a package absent from src/sparsetopo",
    ]
