"""A run's identity: :func:`run_id`, the short hash that names a training run in a store.

A run id is a short sha256 of the canonical config JSON plus the versions of the constructions
it uses, so results made with older masks are never mixed with new ones. Fields added to
:class:`~sparsetopo.train.TrainConfig` after ids were first published (:data:`LATER_FIELDS`)
are left out while they hold their default, so a run stored before a field existed keeps its id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields

from sparsetopo.topology.registry import CONSTRUCTIONS
from sparsetopo.train import TrainConfig

__all__ = ["LATER_FIELDS", "run_id"]

DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
#: TrainConfig fields added after run ids were first published. A run id leaves such a field
#: out while it holds its default, so runs stored before it existed keep their ids.
LATER_FIELDS = ("loss", "optimizer", "lr_schedule", "validation_fraction", "early_stop", "device", "permute_inputs",
                "block", "architecture", "density")


def run_id(config: TrainConfig) -> str:
    """16 hex digits of sha256 over the canonical config JSON and the construction versions.

    Fields of :data:`LATER_FIELDS` are left out while they hold their default, so a config that
    keeps the paper's recipe has the id it had before those fields existed."""
    data = config.to_dict()
    for name in LATER_FIELDS:
        if name in data and data[name] == DEFAULTS[name]:
            del data[name]
    payload = {"config": data,
               "construction_versions": {config.construction: CONSTRUCTIONS[config.construction].version}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
