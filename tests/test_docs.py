"""The documentation stays consistent: links resolve, the README stays short, and
docs/benchmarks.md is exactly what benchmarks/write_docs.py generates from the recorded results."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 260

# [text](target) and ![alt](target); the target ends at whitespace or ")" (an optional "title" may follow).
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def relative_targets(text: str) -> list[str]:
    """Link and image targets that name files in the repository (fragments stripped)."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^(https?:|mailto:)", target, re.I) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def broken_links(path: Path) -> list[str]:
    return [t for t in relative_targets(path.read_text(encoding="utf-8")) if not (path.parent / t).exists()]


def load_write_docs():
    spec = importlib.util.spec_from_file_location("write_docs", ROOT / "benchmarks" / "write_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert path.is_file()
    assert broken_links(path) == [], f"{path.relative_to(ROOT)} links to files that do not exist"


def test_docs_exist_and_are_linked_from_readme():
    readme = relative_targets((ROOT / "README.md").read_text(encoding="utf-8"))
    for name in ("results.md", "sweeps.md", "design.md", "benchmarks.md"):
        assert (ROOT / "docs" / name).is_file()
        assert f"docs/{name}" in readme


def test_link_checker_catches_broken_links(tmp_path):
    (tmp_path / "there.md").write_text("x")
    (tmp_path / "fig.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok with anchor](there.md#part) ![img](fig.png) [web](https://example.org/x.md) "
        "[mail](mailto:a@b.c) [anchor](#top)\n"
        "[gone](missing.md) ![gone image](figures/nothing.png) [gone with anchor](nope.md#x)\n"
        "`[not a link](in-code.md)`\n```\n[not a link](in-fence.md)\n```\n"
    )
    assert broken_links(page) == ["missing.md", "figures/nothing.png", "nope.md"]


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail into docs/"


def test_readme_keeps_no_benchmark_json():
    assert "```json" not in (ROOT / "README.md").read_text(encoding="utf-8")


def test_benchmarks_page_is_generated(tmp_path):
    write_docs = load_write_docs()
    out = tmp_path / "benchmarks.md"
    assert write_docs.main(["--out", str(out)]) == 0
    committed = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8") == committed, \
        "docs/benchmarks.md is stale: run python benchmarks/write_docs.py"


def test_benchmarks_page_follows_the_results(tmp_path):
    """A changed result changes the page, so the comparison above can fail."""
    import json
    import shutil

    write_docs = load_write_docs()
    results = tmp_path / "results"
    shutil.copytree(ROOT / "benchmarks" / "results", results)
    before = write_docs.render(results)
    for path in results.glob("*.json"):
        data = json.loads(path.read_text())
        data["date"] = "1999-01-01"
        path.write_text(json.dumps(data))
    after = write_docs.render(results)
    assert before != after and "1999-01-01" in after


def test_every_result_names_command_machine_and_date():
    import json

    files = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
    assert files
    for path in files:
        data = json.loads(path.read_text())
        assert data.get("command") and data.get("machine") and re.fullmatch(r"\d{4}-\d{2}-\d{2}", data.get("date", "")), path.name
        # NAME.json comes from benchmarks/NAME.py; NAME_VARIANT.json from one mode of it (bench_layers_block.json:
        # bench_layers.py --block)
        script = path.stem if path.stem in data["command"] else path.stem.rsplit("_", 1)[0] + ".py"
        assert script in data["command"], f"{path.name}: its command should run benchmarks/{path.stem}.py"
