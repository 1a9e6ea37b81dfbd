"""How the report writes numbers, intervals and code names: one place for each.

Numbers: accuracies and their differences in signed points with two decimals (``+0.30``), every
other quantity (ratios, correlations) with three decimals (``0.143``, ``-1.000``). An interval is
``[low, high]``, both ends written like its value. Every interval the report or the CLI shows
goes through :func:`interval`, so no two of them differ in precision.

Code names: the claims' explanations are their checks' docstrings, written in reST. They reach
the documents as plain text in which code is marked the Markdown way, between single backticks
(:func:`plain_markup`); the HTML shows it as ``<code>`` (:func:`code_html`), and ``report.md``
as plain words (:func:`code_plain`), so that no backtick of either markup reaches it.
"""

from __future__ import annotations

import html
import math
import re

POINTS = "accuracy"   # a unit naming this is shown in points; any unit containing it is

_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`([^`]+)`")   # :mod:`a.b`, :py:func:`~a.b`
_LITERAL = re.compile(r"``([^`]+)``")                   # ``code``, also across a line break
_CODE = re.compile(r"`([^`]+)`")


def in_points(unit: str) -> bool:
    """Whether values of ``unit`` are accuracies (fractions), shown in percentage points."""
    return POINTS in unit


def number(x, unit: str = "") -> str:
    """``x`` as the report writes it: points for accuracy units, three decimals otherwise."""
    if x is None or not math.isfinite(float(x)):
        return "n/a"
    return f"{100 * float(x):+.2f}" if in_points(unit) else f"{float(x):.3f}"


def interval(low, high, unit: str = "") -> str:
    """``[low, high]`` with both ends written by :func:`number`; "n/a" when either end is missing."""
    if number(low) == "n/a" or number(high) == "n/a":
        return "n/a"
    return f"[{number(low, unit)}, {number(high, unit)}]"


def _role_target(text: str) -> str:
    """What a role shows: ``title <target>`` shows the title, ``~a.b.c`` the last name ``c``."""
    title = re.match(r"(.*?)\s*<[^>]+>$", text)
    if title:
        return title.group(1)
    return text[1:].rsplit(".", 1)[-1] if text.startswith("~") else text


def plain_markup(text: str) -> str:
    """reST inline markup as plain text: ``x`` and :role:`x` become `x` (Markdown's code)."""
    text = _ROLE.sub(lambda m: f"`{_role_target(m.group(1))}`", text)
    return _LITERAL.sub(r"`\1`", text)


def code_plain(text: str) -> str:
    """``text`` with its `code` spans written as their plain words (``report.md``'s form)."""
    return _CODE.sub(r"\1", str(text))


def code_html(text: str) -> str:
    """``text`` escaped for HTML, its `code` spans as ``<code>`` elements."""
    return _CODE.sub(r"<code>\1</code>", html.escape(str(text)))
