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


# The head's Ray Client server gives each client session a server on a port from this range;
# a node's workers listening there would make that session fail to start.
CLIENT_SESSION_PORTS = range(23000, 24001)


def free_range(width: int = 40) -> tuple[int, int]:
    """``width`` consecutive ports nobody listens on (worker ports of one node), clear of
    ``CLIENT_SESSION_PORTS``."""
    for _ in range(200):
        low = random.randrange(CLIENT_SESSION_PORTS.stop, 60000 - width)
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


def marked_pids(marker: str, folder: Path | None = None) -> list[int]:
    """Process ids whose environment holds ``MARKER=marker``, or (given ``folder``, the node's
    temp dir) a Ray process (``ray::...``) with a file open below it: Ray's agents rename
    themselves with setproctitle, which can overwrite their environment, but they keep their
    log files open. A driver also holds files there, and is not the node's."""
    needle = f"{MARKER}={marker}".encode()
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0") or (
                    folder is not None and (proc / "cmdline").read_bytes().startswith(b"ray::")
                    and any(str(os.readlink(fd)).startswith(str(folder) + "/") for fd in (proc / "fd").iterdir())):
                pids.append(int(proc.name))
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
                    "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
                    # the head's Ray Client server waits this long for a session's own server
                    # process (30 s by default: too short on two loaded cores)
                    "RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S": "120", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[str] = []
        self.address: str | None = None
        self.client_port: int | None = None

    def add_node(self, num_cpus: int = 4, env: dict | None = None) -> str:
        """Start a node (the first is the head); return its marker."""
        name = f"{self.id}-{len(self.nodes)}"
        low, high = free_range()
        taken: set = set()

        def port() -> int:   # free, outside the workers' range, and not given twice
            while True:
                chosen = free_port()
                if not low <= chosen <= high and chosen not in taken:
                    taken.add(chosen)
                    return chosen

        ports = ["--node-manager-port", port(), "--object-manager-port", port(),
                 "--min-worker-port", low, "--max-worker-port", high,
                 "--dashboard-agent-listen-port", port(), "--dashboard-agent-grpc-port", port(),
                 "--runtime-env-agent-port", port(), "--metrics-export-port", port()]
        command = ["ray", "start", "--num-cpus", str(num_cpus), "--node-ip-address", "127.0.0.1",
                   "--object-store-memory", str(100 << 20), "--disable-usage-stats",
                   "--temp-dir", str(self.root / f"n{len(self.nodes)}"), *map(str, ports)]
        if not self.nodes:
            gcs, self.client_port = port(), port()
            command += ["--head", "--port", str(gcs), "--ray-client-server-port", str(self.client_port),
                        "--include-dashboard", "false"]
            self.address = f"127.0.0.1:{gcs}"
        else:
            command += ["--address", self.address]
        self.nodes.append(name)
        done = subprocess.run(command, env={**self.env, **(env or {}), MARKER: name}, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray start failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")
        return name

    def client_server_logs(self, lines: int = 30) -> str:
        """The last lines of the head's Ray Client server logs (the proxy and each session's
        own server), to say why a ``ray://`` connection failed."""
        parts = []
        for log in sorted({p.resolve() for p in (self.root / "n0").glob("session_*/logs/ray_client_server*.err")}):
            tail = log.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts) or "(no Ray Client server log)"

    def node_pids(self, name: str) -> list[int]:
        """The processes of node ``name``."""
        return marked_pids(name, self.root / f"n{self.nodes.index(name)}")

    def kill_node(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Kill every process of node ``name``; return how many there were."""
        pids = self.node_pids(name)
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
        while time.time() < deadline and any(self.node_pids(n) for n in self.nodes):
            time.sleep(0.3)
        for name in self.nodes:
            self.kill_node(name, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
