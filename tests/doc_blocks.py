"""The code blocks of README.md and docs/*.md, and how to run one as a newcomer would: saved as a
file in an empty folder and started in a new process (``python block.py``, ``bash block.sh``).

A block is named ``FILE#SECTION:N``: the file relative to the checkout, the slug of the heading
above it, and its 1-based place among the runnable blocks under that heading. The name moves
only when a block moves to another section or the section's blocks are reordered, and then
tests/test_doc_blocks.py fails until its tables follow.

Shell blocks run under ``bash`` with ``set -eo pipefail`` (a failing command fails the block),
with ``sparsetopo`` and ``python`` on PATH resolving to this checkout through the running
interpreter. ``pip install ...`` is not run (the test runs this checkout as it is); in
``pip install ... && rest`` only ``rest`` runs. ``console`` blocks run their ``$ `` lines.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell",
            "console": "shell"}
# Fenced languages that are read, not run (spec files, output, data).
NOT_RUN = {"toml", "json", "text", "txt", "output", "csv", "ini", "yaml", "html", "markdown", "md"}
FENCE = re.compile(r"^(```|~~~)\s*([\w+-]*)")
HEADING = re.compile(r"^#{1,6}\s+(.*\S)\s*$")
PIP_INSTALL = re.compile(r"^\s*pip3?\s+install\b[^&]*(?:&&\s*)?")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is and what it holds."""

    file: str        # relative to the checkout, e.g. "docs/sweeps.md"
    section: str     # slug of the nearest heading above it
    index: int       # 1-based among the runnable blocks of the section (0 for blocks not run)
    language: str    # the fence's info string, lower case
    line: int        # 1-based line of the opening fence
    text: str

    @property
    def id(self) -> str:
        return f"{self.file}#{self.section}:{self.index}"

    @property
    def kind(self) -> str | None:
        """"python", "shell", or None for a block that is not run."""
        return RUNNABLE.get(self.language)

    @property
    def digest(self) -> str:
        """Eight hex digits of the block's text: a listed skip names it, so an edit shows."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:8]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def markdown_files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def extract(path: Path, root: Path = ROOT) -> list[Block]:
    """Every fenced block of ``path`` in order, runnable or not."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rel = path.relative_to(root).as_posix()
    blocks, section, counts = [], "top", {}
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            heading = HEADING.match(lines[i])
            if heading:
                section = slug(heading.group(1))
            i += 1
            continue
        fence, language = opening.group(1), opening.group(2).lower()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith(fence)), None)
        if end is None:
            raise ValueError(f"{rel}:{i + 1}: a code fence that never closes")
        index = 0
        if language in RUNNABLE:
            counts[section] = index = counts.get(section, 0) + 1
        blocks.append(Block(rel, section, index, language, i + 1, "\n".join(lines[i + 1:end]) + "\n"))
        i = end + 1
    return blocks


def all_blocks(root: Path = ROOT) -> list[Block]:
    return [block for path in markdown_files(root) for block in extract(path, root)]


def shell_script(text: str, console: bool = False) -> tuple[str, list[str]]:
    """The script a shell block becomes, and the ``pip install`` commands left out of it."""
    kept, skipped = [], []
    for line in text.splitlines():
        if console:
            if not line.startswith("$ "):
                continue   # output shown after a prompt line
            line = line[2:]
        match = PIP_INSTALL.match(line)
        if match:
            skipped.append(match.group(0).split("#", 1)[0].rstrip(" &"))
            line = line[match.end():] if match.group(0).rstrip().endswith("&&") else ""
        kept.append(line)
    return "set -eo pipefail\n" + "\n".join(kept) + "\n", skipped


def has_commands(script: str) -> bool:
    """Whether a prepared shell script does anything besides ``set`` and comments."""
    body = [line.split("#", 1)[0].strip() for line in script.splitlines()[1:]]
    return any(body)


def trailing_comments(text: str) -> list[str]:
    """The ``# ...`` lines that close a block: where the docs show what it prints."""
    lines = text.rstrip("\n").splitlines()
    out = []
    while lines and lines[-1].lstrip().startswith("#"):
        out.insert(0, lines.pop().lstrip()[1:].strip())
    return out


def environment(bin_dir: Path) -> dict[str, str]:
    """The test's environment with this checkout first on PYTHONPATH and ``sparsetopo`` and
    ``python`` (in ``bin_dir``) running the test's own interpreter."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in (("sparsetopo", f'exec "{sys.executable}" -m sparsetopo "$@"'),
                       ("python", f'exec "{sys.executable}" "$@"')):
        script = bin_dir / name
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(bin_dir), env.get("PATH", "")))
    env.pop("RAY_ADDRESS", None)   # a run here never reaches a cluster the caller may know
    return env


def run_file(kind: str, source: str, folder: Path, env: dict[str, str], name: str = "block",
             timeout: float = 300) -> subprocess.CompletedProcess:
    """Save ``source`` as ``folder/NAME.py`` or ``.sh`` and run it there in a new process."""
    suffix, program = (".py", [sys.executable]) if kind == "python" else (".sh", ["bash"])
    path = folder / f"{name}{suffix}"
    path.write_text(source, encoding="utf-8")
    return subprocess.run([*program, path.name], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)
