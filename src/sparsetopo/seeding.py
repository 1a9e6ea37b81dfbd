"""The single seed normaliser: every random choice in sparsetopo flows from here.

No global RNG is ever touched. A seed plus a path of labels (layer index, purpose) gives an
independent, reproducible stream via numpy's ``SeedSequence``.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _label_to_int(label) -> int:
    if isinstance(label, (int, np.integer)):
        return int(label)
    digest = hashlib.sha256(str(label).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def rng(seed: int, *path) -> np.random.Generator:
    """A numpy Generator for ``seed``, independent for each distinct ``path`` of labels."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), *map(_label_to_int, path)]))


def derive_seed(seed: int, *path) -> int:
    """A child seed (a non-negative 31-bit int) for ``seed`` and ``path``; stable across versions."""
    state = np.random.SeedSequence([int(seed), *map(_label_to_int, path)]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)
