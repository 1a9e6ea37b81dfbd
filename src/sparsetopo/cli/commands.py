"""Imports every subcommand module so that each registers itself on the shared app."""

from sparsetopo.cli import analyze, calibrate, explain, export, report, sweep, topology, train  # noqa: F401
