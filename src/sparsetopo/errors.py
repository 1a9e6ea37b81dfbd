"""The one exception type for bad user input, and the base of the library's warnings.

Library code raises :class:`SparsetopoError` (a ``ValueError``) when a value supplied by the
user is wrong; its message names the value and says what would be valid. The CLI turns it into
a one-line message and exit code 2. Anything else that escapes is a bug and keeps its traceback.
Library warnings derive from :class:`SparsetopoWarning` (filter them with ``warnings``); the CLI
prints each as one line.
"""

from collections.abc import Sequence


class SparsetopoError(ValueError):
    """A user-supplied value is invalid; the message names it and the fix.

    ``details``: the parts of a message too long for one line (each mirror tried and why it
    failed, ...). ``str(exc)`` joins them to ``message`` on one line; the CLI prints
    ``message`` and then each part on an indented line of its own.
    """

    def __init__(self, message: str = "", details: Sequence[str] = ()):
        self.headline = message
        self.details = tuple(details)
        super().__init__(f"{message}: {'; '.join(self.details)}" if self.details else message)


class SparsetopoWarning(UserWarning):
    """Input that works but is probably not what the user meant; the message says what to change."""


def pip_install(extra: str) -> str:
    """How to install the optional dependencies ``extra``: the PyPI form, and the form for a
    source checkout (where ``sparsetopo[...]`` would fetch the released package instead)."""
    return f"pip install 'sparsetopo[{extra}]' (or pip install -e '.[{extra}]' from a checkout)"


def check_int(name: str, value, low: int, high: int | None = None) -> int:
    """Return ``value`` as an int, or raise naming ``name`` and the valid range."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise SparsetopoError(f"{name}={value!r} is not an integer")
    value = value.__index__()
    if value < low or (high is not None and value > high):
        bound = f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}"
        raise SparsetopoError(f"{name}={value} is out of range: choose {bound}")
    return value


def interrupt_in(exc: BaseException | None) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt in ``exc``'s chain of causes and contexts, if any: Ctrl-C that
    lands inside a C extension can surface as another error raised from it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
