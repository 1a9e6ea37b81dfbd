"""The one exception type for bad user input.

Library code raises :class:`SparsetopoError` (a ``ValueError``) when a value supplied by the
user is wrong; its message names the value and says what would be valid. The CLI turns it into
a one-line message and exit code 2. Anything else that escapes is a bug and keeps its traceback.
"""


class SparsetopoError(ValueError):
    """A user-supplied value is invalid; the message names it and the fix."""


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the valid range."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise SparsetopoError(f"{name}={value!r} is not an integer")
    value = value.__index__()
    if value < low or (high is not None and value > high):
        bound = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise SparsetopoError(f"{name}={value} is out of range: choose {bound}")
    return value
