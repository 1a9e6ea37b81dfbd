"""A real multi-node Ray cluster on this machine, for the cluster tests: ``ray start --head`` and
more ``ray start --address`` nodes as subprocesses, each on its own free ports and temp dir.

Every process a node starts (raylet, GCS, agents, workers) inherits a marker variable in its
environment; stopping a node kills exactly the processes carrying its marker, so the tests never
touch another Ray on the same machine (``ray stop`` would stop every Ray of this user).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

MARKER = "SPARSETOPO_TEST_RAY_NODE"
SRC = str(Path(__file__).resolve().parents[1] / "src")


def ray_start_available() -> bool:
    """``ray start`` can run here (the ray package and its command line)."""
    return shutil.which("ray") is not None and _importable("ray")


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(width: int = 40) -> tuple[int, int]:
    """``width`` consecutive ports nobody listens on (worker ports of one node)."""
    for _ in range(200):
        low = random.randrange(20000, 60000 - width)
        if all(_free(p) for p in range(low, low + width)):
            return low, low + width - 1
    raise RuntimeError("no free port range")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def marked_pids(marker: str) -> list[int]:
    """Process ids whose environment holds ``MARKER=marker``."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in environ.read_bytes().split(b"\0"):
                pids.append(int(environ.parent.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in pids if pid != os.getpid()]


class LocalCluster:
    """Nodes started with ``ray start``; ``add_node`` then ``stop`` (always, in a finally)."""

    def __init__(self, env: dict | None = None):
        self.root = Path(tempfile.mkdtemp(prefix="st-ray-", dir="/tmp"))   # short: Ray's socket paths
        self.home = self.root / "home"
        self.home.mkdir()
        self.id = uuid.uuid4().hex[:12]
        self.env = {**os.environ, "HOME": str(self.home), "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1",
                    "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[str] = []
        self.address: str | None = None
        self.client_port: int | None = None

    def add_node(self, num_cpus: int = 4, env: dict | None = None) -> str:
        """Start a node (the first is the head); return its marker."""
        name = f"{self.id}-{len(self.nodes)}"
        low, high = free_range()
        ports = ["--node-manager-port", free_port(), "--object-manager-port", free_port(),
                 "--min-worker-port", low, "--max-worker-port", high,
                 "--dashboard-agent-listen-port", free_port(), "--dashboard-agent-grpc-port", free_port(),
                 "--runtime-env-agent-port", free_port(), "--metrics-export-port", free_port()]
        command = ["ray", "start", "--num-cpus", str(num_cpus), "--node-ip-address", "127.0.0.1",
                   "--object-store-memory", str(100 << 20), "--disable-usage-stats",
                   "--temp-dir", str(self.root / f"n{len(self.nodes)}"), *map(str, ports)]
        if not self.nodes:
            port, self.client_port = free_port(), free_port()
            command += ["--head", "--port", str(port), "--ray-client-server-port", str(self.client_port),
                        "--include-dashboard", "false"]
            self.address = f"127.0.0.1:{port}"
        else:
            command += ["--address", self.address]
        self.nodes.append(name)
        done = subprocess.run(command, env={**self.env, **(env or {}), MARKER: name}, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return name

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Kill every process of node ``name``; return how many there were."""
        pids = marked_pids(name)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return len(pids)

    def wait_cpus(self, cpus: int, timeout: float = 60) -> None:
        """Wait until the cluster reports ``cpus`` CPUs (every node registered)."""
        script = ("import ray, time\nray.init(address=%r, log_to_driver=False)\n"
                  "end = time.time() + %f\n"
                  "while ray.cluster_resources().get('CPU', 0) < %d and time.time() < end: time.sleep(0.5)\n"
                  "print(int(ray.cluster_resources().get('CPU', 0)))\n") % (self.address, timeout, cpus)
        out = subprocess.run(["python", "-c", script], env=self.env, capture_output=True, text=True,
                             timeout=timeout + 60)
        got = out.stdout.strip().splitlines()[-1:] or ["?"]
        if got[0] != str(cpus):
            raise RuntimeError(f"cluster has {got[0]} CPUs, not {cpus}: {out.stderr[-2000:]}")

    def stop(self) -> None:
        """Kill every process of every node (SIGTERM, then SIGKILL) and remove the temp dirs."""
        for name in self.nodes:
            self.kill_node(name, signal.SIGTERM)
        deadline = time.time() + 10
        while time.time() < deadline and any(marked_pids(n) for n in self.nodes):
            time.sleep(0.3)
        for name in self.nodes:
            self.kill_node(name, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
