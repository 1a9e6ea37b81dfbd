"""The regrouping of packed engine layers by field and back: the Python functions and the
versions numba compiles into the population engine give the same tuples of the same arrays."""

from __future__ import annotations

import numpy as np
from numba import njit

from sparsetopo.engines.layout import EngineLayer
from sparsetopo.engines.population import by_field, by_layer


def _layers(n: int) -> tuple:
    fields = EngineLayer._fields
    return tuple(EngineLayer(*(np.full(2, 10 * l + f, np.float32) if f < len(fields) - 2 else np.float32(10 * l + f)
                               for f in range(len(fields)))) for l in range(n))


@njit
def _compiled_round_trip(layers):
    fields = by_field(layers)
    return fields, by_layer(fields)


def test_by_field_and_by_layer_agree_in_python_and_in_compiled_code():
    layers = _layers(3)
    fields = by_field(layers)
    assert len(fields) == len(EngineLayer._fields) and all(len(f) == 3 for f in fields)
    assert fields[0][2] is layers[2][0]   # the same arrays, not copies
    again = by_layer(fields)
    assert all(type(layer) is EngineLayer for layer in again)
    assert all(a is b for x, y in zip(again, layers) for a, b in zip(x, y))
    compiled_fields, compiled_again = _compiled_round_trip(layers)
    for mine, theirs in zip(fields, compiled_fields):
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)
    for mine, theirs in zip(again, compiled_again):
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)
