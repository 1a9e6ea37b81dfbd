"""Command-line interface: thin wrappers that parse, call the library and print."""

from sparsetopo.cli.app import app, main

__all__ = ["app", "main"]
