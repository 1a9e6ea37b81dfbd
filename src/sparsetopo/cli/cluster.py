"""The CLI's Ray options, shared by ``sweep run`` and ``reproduce``: ``--address`` and what a
lost cluster tells the user."""

from __future__ import annotations

import shlex
import sys
from contextlib import contextmanager
from pathlib import Path

import click

from sparsetopo.errors import SparsetopoError

ADDRESS = click.option(
    "--address", default=None,
    help="Ray cluster to run on (with --executor ray): the head's HOST:PORT (this machine a node of the "
         "cluster) or ray://HOST:10001 (Ray Client, from anywhere). Default: $RAY_ADDRESS, else a local Ray.")


def check_address_flag(executor: str, address: str | None) -> None:
    """``--address`` only makes sense for Ray: refuse it elsewhere rather than ignore it."""
    if address is not None and executor != "ray":
        raise SparsetopoError(f"--address {address} is for --executor ray: add --executor ray or drop --address")


def resume_command() -> str:
    """The command line that resumes this one: the same command."""
    program = Path(sys.argv[0]).name
    if program in ("sparsetopo", "__main__.py"):
        return shlex.join(["sparsetopo", *sys.argv[1:]])
    return "the same command"


@contextmanager
def cluster_faults():
    """A lost cluster head ends the command with one line that names the command resuming it."""
    from sparsetopo.sweep.cluster import ClusterLost

    try:
        yield
    except ClusterLost as exc:
        raise ClusterLost(f"{exc}: {resume_command()}") from None
