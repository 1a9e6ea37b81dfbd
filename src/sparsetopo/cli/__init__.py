"""Command-line interface: thin wrappers that parse, call the library and print."""

import os

# Before anything loads OpenMP (torch does, at import): libgomp's threads spin 300,000 times
# after each parallel region before they sleep. On a loaded machine the spinning threads take
# the free core from the one doing the work (the sparse layers ran at 0.4 of their speed);
# 3,000 spins keep the idle machine's speed and remove that loss (docs/design.md, "OpenMP's
# spinning"). A value the user set is kept; worker processes inherit it.
os.environ.setdefault("GOMP_SPINCOUNT", "3000")

from sparsetopo.cli.app import app, entry, main  # noqa: E402 - after the OpenMP setting above

__all__ = ["app", "entry", "main"]
