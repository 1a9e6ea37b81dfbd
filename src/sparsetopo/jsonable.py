"""One conversion to JSON-ready values, shared by the sweep store and the report writers."""

from __future__ import annotations

import math


def plain(value):
    """JSON-ready copy: numpy scalars and arrays to Python numbers and lists, tuples to lists,
    NaN and infinities to None (so ``json.dumps(..., allow_nan=False)`` never fails)."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if hasattr(value, "tolist"):
        return plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
