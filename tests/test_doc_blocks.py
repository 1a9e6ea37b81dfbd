"""Every python and shell block of README.md and docs/*.md runs as a newcomer runs it: saved as a
file in an empty folder and started in a new process against this checkout (tests/doc_blocks.py
says how). A block runs as written unless a table below says otherwise:

- VARIANTS: a smaller or offline form (each replacement must still match the block) and the
  files it is given, with the reason;
- SKIPS: blocks that need what CI lacks, with the reason and the digest of the text that was
  judged, so an edited skipped block fails here until it is judged again;
- NEEDS: blocks that import an optional package, run wherever it is installed;
- CHAINED: files whose blocks build on each other; there each block runs after the file's earlier
  python blocks (a python block gets them in front of it in the same script; a shell block finds
  the files they wrote, as earlier.py ran first in its folder);
- CHECKS: numbers the docs quote next to a block, compared within the tolerance the doc states.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest

from doc_blocks import ROOT, Block, all_blocks, environment, has_commands, run_file, shell_script, \
    trailing_comments

# Stands in for the quick preset (200 networks, minutes) wherever a block trains it: the same
# commands, seven digits networks of 3 epochs.
TINY_SPEC = """\
[sweep]
name = "tiny"
description = "Seven digits networks standing in for the quick preset in tests/test_doc_blocks.py."

[protocol]
dataset = "digits"
epochs = 3
batch_size = 8
lr = 0.1

[grid.small]
constructions = ["fully_connected", "regular_rotating", "random_regular"]
hidden = [30]
degrees_in = [3, 6, 15]
seeds = 1
"""
TINY_RUNS = 7   # fully_connected once, 2 constructions x 3 degrees
QUICK_IS_TINY = "the quick preset trains 200 networks (minutes); a 7-network spec stands in for it"
NO_CLUSTER = "needs a Ray cluster at HEAD:6379 and MNIST"


@dataclass(frozen=True)
class Variant:
    reason: str
    replace: tuple[tuple[str, str], ...] = ()   # (text in the block, what runs instead)
    files: dict[str, str] = field(default_factory=dict)   # written into the folder first


def spec_format_toml() -> str:
    """The spec example of docs/sweeps.md, which its `sweep run my.toml ... --dry-run` line reads."""
    return next(b.text for b in all_blocks() if b.file == "docs/sweeps.md" and b.language == "toml")


VARIANTS = {
    "README.md#training:1": Variant(
        "MNIST is not offline: its two lines run on digits for 2 epochs, every other flag as written",
        replace=(("--dataset mnist --hidden 300 --construction regular_rotating -k 30,10",
                  "--dataset digits --hidden 300 --construction regular_rotating -k 30,10 --epochs 2"),
                 ("--dataset mnist --hidden 500,300", "--dataset digits --epochs 2 --hidden 500,300"))),
    "README.md#reproducing-the-paper:1": Variant(
        "reproduce takes only preset names and " + QUICK_IS_TINY + ", run by sweep run into the store "
        "that report and analyze read; the paper line " + NO_CLUSTER,
        replace=(("sparsetopo reproduce --preset quick --out quick-report",
                  "sparsetopo sweep run tiny.toml --db quick-report/sweep.sqlite"),
                 ("sparsetopo reproduce --preset paper", "# sparsetopo reproduce --preset paper")),
        files={"tiny.toml": TINY_SPEC}),
    "README.md#sweeps-and-population-training:1": Variant(
        QUICK_IS_TINY + "; the paper line " + NO_CLUSTER,
        replace=(("sweep run quick --db", "sweep run tiny.toml --db"),
                 ("sparsetopo sweep run paper", "# sparsetopo sweep run paper")),
        files={"tiny.toml": TINY_SPEC}),
    "README.md#sweeps-and-population-training:2": Variant(
        QUICK_IS_TINY, replace=(('run_sweep("quick"', 'run_sweep("tiny.toml"'),), files={"tiny.toml": TINY_SPEC}),
    "docs/sweeps.md#sweeps:1": Variant(
        QUICK_IS_TINY + "; the paper line " + NO_CLUSTER + "; my.toml is the spec format section's example",
        replace=(("sweep run quick --db", "sweep run tiny.toml --db"),
                 ("sparsetopo sweep run paper", "# sparsetopo sweep run paper")),
        files={"tiny.toml": TINY_SPEC, "my.toml": spec_format_toml()}),
    "docs/sweeps.md#sweeps:2": Variant(
        QUICK_IS_TINY, replace=(('run_sweep("quick"', 'run_sweep("tiny.toml"'),), files={"tiny.toml": TINY_SPEC}),
    "docs/tutorial.md#5-worked-example-a-small-cnn-on-fashion-mnist:1": Variant(
        "the whole grid takes minutes: its own --quick smoke run (1000 images, 1 epoch); examples/ is "
        "this checkout's",
        replace=(("examples/cnn_fashion.py --out docs/cnn_fashion",
                  f"{ROOT / 'examples' / 'cnn_fashion.py'} --quick --out docs/cnn_fashion"),)),
}

SKIPS = {   # id: (digest of the judged text, reason)
    "README.md#quickstart:1": (
        "efb854d0", "runs the whole test suite (about 18 min; CI's .ci/run is this line) and reproduces "
                    "the quick preset (200 networks, minutes), which no block runs in full"),
    "docs/sweeps.md#ray-clusters:1": ("1b981592", "starts Ray nodes and " + NO_CLUSTER),
}

# id: the optional package a block imports (the ``models`` extra, which CI does not install);
# the block runs wherever the package is installed and is skipped, saying why, where it is not
NEEDS = {
    "README.md#your-own-model:3": "transformers",
    "docs/tutorial.md#7-models-other-people-wrote-embeddings-tied-heads-gpt-2:2": "transformers",
}

CHAINED = {"docs/tutorial.md"}


def quoted_accuracy(text: str) -> tuple[float, float]:
    """The accuracy a block quotes as ``0.953 (±0.01)``, and its tolerance."""
    match = re.search(r"(\d\.\d+) \(±(\d\.\d+)\)", text)
    assert match, "the block no longer quotes an accuracy with its tolerance"
    return float(match.group(1)), float(match.group(2))


def check_train_json(block: Block, out: str, folder) -> None:
    """The digits command prints the accuracy its comment quotes."""
    line = next(l for l in block.text.splitlines() if "--dataset digits" in l and "--json" in l)
    expected, tolerance = quoted_accuracy(line)
    decoder, objects = json.JSONDecoder(), []
    for match in re.finditer(r"^\{", out, re.M):
        obj, _ = decoder.raw_decode(out[match.start():])
        objects.append(obj)
    [printed] = [o for o in objects if o["config"]["epochs"] == 100]
    assert abs(printed["test_accuracy"] - expected) <= tolerance, (printed["test_accuracy"], expected)
    assert [layer["k"] for layer in printed["layers"]] == [16, 10]   # the key the README names


def check_train_python(block: Block, out: str, folder) -> None:
    expected, tolerance = quoted_accuracy(block.text)
    accuracy = float(out.split()[0])
    assert abs(accuracy - expected) <= tolerance, (accuracy, expected)


def check_sweep_summary(block: Block, out: str, folder) -> None:
    """The sweep stored every run of the stand-in spec and none failed."""
    match = re.search(r"SweepSummary\(([^)]*)\)", out)
    assert match, out[-2000:]
    fields = dict(item.strip().split("=", 1) for item in match.group(1).split(","))
    assert int(fields["planned"]) == int(fields["stored"]) == TINY_RUNS and int(fields["failed"]) == 0, fields


def check_quoted_output(block: Block, out: str, folder) -> None:
    """The block prints exactly the lines its closing comments show."""
    assert out.splitlines() == trailing_comments(block.text)


def check_quoted_tail(block: Block, out: str, folder) -> None:
    """The block's own output (the last lines, after its chained predecessors') is what its
    closing comments show."""
    shown = trailing_comments(block.text)
    assert out.splitlines()[-len(shown):] == shown


def check_file_size(block: Block, out: str, folder) -> None:
    """The saved file is as many bytes as the tutorial's prose says."""
    prose = (ROOT / block.file).read_text(encoding="utf-8")
    quoted = re.search(r"the file is ([\d,]+) bytes", prose)
    assert quoted, "docs/tutorial.md no longer quotes the file's size"
    assert (folder / "cnn.safetensors").stat().st_size == int(quoted.group(1).replace(",", ""))


def check_export(block: Block, out: str, folder) -> None:
    """The per-layer lines and the file's bytes as shown; the difference within the bound the
    tutorial states ("onnxruntime matches PyTorch within ...")."""
    shown = trailing_comments(block.text)
    printed = [line.strip() for line in out.strip().splitlines()]
    assert printed[:-1] == shown[:-1]
    number = r"\((\d+) bytes\)"
    assert re.search(number, printed[-1]).group(1) == re.search(number, shown[-1]).group(1)
    prose = (ROOT / block.file).read_text(encoding="utf-8")
    bound = float(re.search(r"onnxruntime matches PyTorch within ([\d.e-]+)", prose).group(1))
    assert float(re.search(r"max \|difference\| ([\d.e+-]+)", printed[-1]).group(1)) <= bound


def check_preset_counts(block: Block, out: str, folder) -> None:
    """`sweep presets` prints the presets and run counts the block's comment names."""
    comment = next(l for l in block.text.splitlines() if "sweep presets" in l).split("#", 1)[1]
    quoted = {name: int(n) for name, n in re.findall(r"(\w+) \((\d+)", comment)}
    printed = {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+) runs", out, re.M)}
    assert printed == quoted


CHECKS = {
    "README.md#training:1": check_train_json,
    "README.md#training:2": check_train_python,
    "README.md#sweeps-and-population-training:2": check_sweep_summary,
    "docs/sweeps.md#sweeps:1": check_preset_counts,
    "docs/sweeps.md#sweeps:2": check_sweep_summary,
    "docs/tutorial.md#1-sparsify-a-model:1": check_quoted_output,
    "docs/tutorial.md#3-save-and-load:1": check_file_size,
    "docs/tutorial.md#4-export-to-onnx:1": check_export,
    "docs/tutorial.md#6-recurrent-layers-and-attention:1": check_quoted_tail,
    "docs/tutorial.md#7-models-other-people-wrote-embeddings-tied-heads-gpt-2:1": check_quoted_tail,
}

BLOCKS = [block for block in all_blocks() if block.kind]


def prepared(block: Block) -> tuple[str, list[str]]:
    """The block's text after its variant's replacements, and the pip lines left out."""
    text = block.text
    for old, new in VARIANTS.get(block.id, Variant("")).replace:
        assert old in text, f"{block.id}: the variant's {old!r} no longer matches the block"
        text = text.replace(old, new)
    if block.kind == "shell":
        return shell_script(text, console=block.language == "console")
    return text, []


def earlier_python(block: Block) -> str:
    if block.file not in CHAINED:
        return ""
    return "".join(b.text for b in BLOCKS if b.file == block.file and b.kind == "python" and b.line < block.line)


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_block_runs_as_a_script(block, tmp_path):
    if block.id in SKIPS:
        pytest.skip(SKIPS[block.id][1])
    if block.id in NEEDS:
        pytest.importorskip(NEEDS[block.id], reason=f"needs {NEEDS[block.id]} (pip install -e '.[models]')")
    source, pip_lines = prepared(block)
    if block.kind == "shell" and not has_commands(source):
        pytest.skip(f"only installs packages ({'; '.join(pip_lines)}): the test runs this checkout")
    folder = tmp_path / "work"
    folder.mkdir()
    env = environment(tmp_path / "bin")
    for name, text in VARIANTS.get(block.id, Variant("")).files.items():
        (folder / name).write_text(text, encoding="utf-8")
    before = earlier_python(block)
    if before and block.kind == "shell":
        done = run_file("python", before, folder, env, name="earlier")
        assert done.returncode == 0, f"{block.id}: the earlier blocks failed\n{done.stderr[-3000:]}"
    elif before:
        source = before + source
    done = run_file(block.kind, source, folder, env)
    assert done.returncode == 0, \
        f"{block.id} (line {block.line}) exited {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    if block.id in CHECKS:
        CHECKS[block.id](block, done.stdout, folder)


def test_every_listed_block_exists_and_every_fence_is_classified():
    ids = {block.id: block for block in BLOCKS}
    for listed in (*VARIANTS, *SKIPS, *NEEDS, *CHECKS):
        assert listed in ids, f"{listed} is listed in tests/test_doc_blocks.py but no longer in the docs"
    assert not set(VARIANTS) & set(SKIPS), "a block is either run as a variant or skipped"
    for block_id, (digest, _) in SKIPS.items():
        assert ids[block_id].digest == digest, \
            f"{block_id} changed since it was judged unrunnable: run it or update its digest ({ids[block_id].digest})"
    from doc_blocks import NOT_RUN
    unknown = [f"{b.file}:{b.line} ```{b.language}" for b in all_blocks() if not b.kind and b.language not in NOT_RUN]
    assert unknown == [], "fences that are neither run nor known as data: label them python, bash or toml"


def test_docs_name_every_preset():
    """Where the docs list the presets, they list exactly the shipped ones."""
    from sparsetopo.sweep import preset_names
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sweeps = (ROOT / "docs" / "sweeps.md").read_text(encoding="utf-8")
    listed = {
        "README.md reproduce": re.search(r"one of the \w+ presets: ([^)]*)\)", readme, re.S).group(1),
        "docs/sweeps.md presets section": sweeps.split("## Presets", 1)[1].split("\n## ", 1)[0],
    }
    for where, text in listed.items():
        names = set(re.findall(r"`(\w+)`", text)) if "section" not in where else \
            set(re.findall(r"^- `(\w+)`:", text, re.M))
        assert names == set(preset_names()), where


def test_extraction_names_blocks_by_section_and_place(tmp_path):
    """Ids follow headings, count only runnable blocks, and pip lines are left out of scripts."""
    from doc_blocks import extract
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Top\n```bash\npip install x && echo hi\npip install y\n```\n## Two, parts\n"
                    "```toml\na = 1\n```\n```python\nprint(1)\n# 1\n```\n```console\n$ echo a\na\n```\n")
    blocks = extract(page, tmp_path)
    assert [(b.id, b.language) for b in blocks] == [
        ("docs/page.md#top:1", "bash"), ("docs/page.md#two-parts:0", "toml"),
        ("docs/page.md#two-parts:1", "python"), ("docs/page.md#two-parts:2", "console")]
    script, skipped = shell_script(blocks[0].text)
    assert script.splitlines()[1:] == ["echo hi", ""] and skipped == ["pip install x", "pip install y"]
    assert shell_script(blocks[3].text, console=True)[0].splitlines()[1:] == ["echo a"]
    assert trailing_comments(blocks[2].text) == ["1"]
    assert not has_commands(shell_script("pip install z\n")[0])
