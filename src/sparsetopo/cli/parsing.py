"""Click parameter types shared by the subcommands: comma-separated lists with clear errors."""

from __future__ import annotations

import click

FULL_WORDS = ("full", "all")  # a degree meaning "every output", i.e. a fully connected layer


class CommaList(click.ParamType):
    """``"500,300"`` -> ``(500, 300)``; ``item`` converts one entry (int, float, degree)."""

    def __init__(self, item: str):
        self.item = item
        self.name = f"{item}[,{item}...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        out = []
        for token in str(value).split(","):
            token = token.strip()
            try:
                if self.item == "degree" and token.lower() in FULL_WORDS:
                    out.append(None)
                elif self.item == "float":
                    out.append(float(token))
                else:
                    out.append(int(token))
            except ValueError:
                hint = " (or 'full')" if self.item == "degree" else ""
                self.fail(f"{token!r} in {value!r} is not a valid {self.item.replace('degree', 'integer degree')}{hint}",
                          param, ctx)
        return tuple(out)


INTS = CommaList("int")
FLOATS = CommaList("float")
DEGREES = CommaList("degree")
