"""Reaching a Ray cluster: the address, a check before anything is created, and the head's health.

A sweep on a cluster connects before it creates its store, so that a wrong address, a missing
``ray[client]``, a refused token or another Ray version stops it with one line and leaves no
file behind. :func:`connect` checks in this order, each cheap and quick:

1. the address's form (``host:port``, ``ray://host:port`` or ``auto``);
2. for ``ray://``, the Ray Client package (grpcio, from ``ray[client]``);
3. a TCP connection to the port (an unreachable head otherwise makes ``ray.init`` retry for
   minutes);
4. for ``host:port``, one request to the head's GCS: it answers with its Ray and Python
   versions, or refuses the token (``ray.init`` would retry for 20 s and only say
   ``ConnectionError``);
5. ``ray.init`` itself, whose remaining errors are translated the same way.

Every failure is a :class:`ClusterError` (a SparsetopoError: one line, exit code 2) naming the
address, the cause and the fix. :class:`HeadWatch` tells a sweep in progress that the head has
stopped answering, so that it ends with a message instead of Ray's own exit a minute later.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from contextlib import contextmanager

from sparsetopo.errors import SparsetopoError, pip_install

__all__ = ["ClusterError", "ClusterLost", "HeadWatch", "connect", "resolve_address"]

PROBE_SECONDS = 5.0      # a TCP connection to the head gets this long
HEAD_LOST_SECONDS = 15.0  # the head unreachable this long ends a sweep
# Ray Client: the head starts a server process for each session; when that start fails (a
# loaded head, a port its session servers share with something else), a second try gets a
# new process on the next port. Refusals of the address or token are not retried.
CLIENT_SESSION_TRIES = 2


class ClusterError(SparsetopoError):
    """The cluster cannot be used (address, package, token, versions); nothing was started."""


class ClusterLost(SparsetopoError):
    """The head stopped answering during a sweep."""


def resolve_address(address: str | None) -> str | None:
    """``address``, else ``RAY_ADDRESS`` from the environment, else None (a local Ray)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return None if address is None else address.strip()


def _host_port(address: str) -> tuple[str, int]:
    rest = address.split("://", 1)[1] if "://" in address else address
    host, _, port = rest.rstrip("/").rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"Ray address {address!r} is not host:port or ray://host:port: give the address "
                           f"'ray start --head' printed (e.g. 10.0.0.5:6379, or ray://10.0.0.5:10001)")
    return host, int(port)


def _reachable(host: str, port: int, timeout: float = PROBE_SECONDS) -> str | None:
    """None when a TCP connection to host:port opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:.0f} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


@contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 for a moment: Ray's C++ client logs each failed attempt there,
    which would bury the one line that says what is wrong."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


TOKEN_FIX = ("set RAY_AUTH_TOKEN to the cluster's token (print it on the head with 'ray get-auth-token'), "
             "or RAY_AUTH_TOKEN_PATH to a file holding it")


def _token_refused(address: str) -> ClusterError:
    return ClusterError(f"the Ray cluster at {address} refused this driver: it uses token authentication and "
                        f"{'the token given is wrong' if _token_given() else 'no token was given'}; {TOKEN_FIX}")


def _token_given() -> bool:
    from pathlib import Path

    return bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                or (Path.home() / ".ray" / "auth_token").is_file())


def _versions_differ(address: str, cluster_ray: str, cluster_python: str) -> ClusterError:
    import ray

    here = f"Ray {ray.__version__}, Python {sys.version.split()[0]}"
    return ClusterError(f"the Ray cluster at {address} runs Ray {cluster_ray}, Python {cluster_python}, and this "
                        f"driver {here}: install ray[client]=={cluster_ray} here (pip install "
                        f"'ray[client]=={cluster_ray}'), on Python {cluster_python}, or start the cluster with this Ray")


def _check_gcs(address: str) -> None:
    """One request to the head's GCS: the token and the Ray and Python versions."""
    import json
    import logging

    import ray

    try:
        from ray._raylet import GcsClient
        from ray.exceptions import AuthenticationError
    except ImportError:  # a Ray without these: ray.init's own checks remain
        return
    if os.environ.get("RAY_AUTH_MODE") is None and _token_given():
        try:  # as ray.init does: a token at hand turns token mode on (without Ray's warning)
            from ray._private.authentication import authentication_token_setup as setup
        except ImportError:
            setup = None
        if setup is not None:
            log = logging.getLogger(setup.__name__)
            level, log.level = log.level, logging.ERROR
            try:
                setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
            finally:
                log.setLevel(level)
    try:
        with _quiet_stderr():
            client = GcsClient(address=address)
            raw = client.internal_kv_get(b"CLUSTER_METADATA", namespace=b"cluster", timeout=PROBE_SECONDS)
    except AuthenticationError:
        raise _token_refused(address) from None
    except Exception:  # noqa: BLE001 - anything else: ray.init tells more
        return
    try:
        metadata = json.loads(raw.decode()) if raw else {}
    except ValueError:
        return
    theirs = metadata.get("ray_version"), metadata.get("python_version")
    if theirs[0] and (theirs[0] != ray.__version__
                      or (theirs[1] and theirs[1].split(".")[:2] != sys.version.split()[0].split(".")[:2])):
        raise _versions_differ(address, *theirs)


def _translate(address: str, exc: BaseException) -> ClusterError:
    """A ClusterError for an exception of ``ray.init``."""
    text = str(exc)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    first = lines[0] if lines else type(exc).__name__
    if len(lines) > 1 and first.endswith(":"):  # Ray Client: the head's traceback follows; its last line says why
        first = f"{first} {lines[-1]}"
    if type(exc).__name__ == "AuthenticationError" or "InvalidAuthToken" in text or "Unauthenticated" in text:
        return _token_refused(address)
    if "Version mismatch" in text or "version mismatch" in text:
        return ClusterError(f"the Ray cluster at {address} and this driver run different versions "
                            f"({' '.join(text.split())}): install the cluster's Ray and Python here, "
                            f"or start the cluster with this driver's")
    if "ray[client]" in text or "grpc" in text.lower() and "No module" in text:
        return _client_missing(address)
    if address.startswith("ray://") and isinstance(exc, ConnectionError):
        return ClusterError(f"no Ray Client session at {address}: {first}; check that the head's Ray Client "
                            f"server listens there ('ray start --head --ray-client-server-port PORT', 10001 by "
                            f"default) and, if the cluster uses token authentication, {TOKEN_FIX}")
    if isinstance(exc, ConnectionError):
        return ClusterError(f"cannot reach the Ray cluster at {address}: {first}; check the address ('ray status' "
                            f"on the head prints it) and that this machine may reach it")
    return ClusterError(f"cannot use the Ray cluster at {address}: {type(exc).__name__}: {first}")


def _client_missing(address: str) -> ClusterError:
    return ClusterError(f"{address} is a Ray Client address, which needs ray[client] (grpcio) on this machine: "
                        f"{pip_install('ray')} or pip install 'ray[client]'; or give the head's "
                        f"host:port and run the driver on a node of the cluster")


def check_address(address: str) -> None:
    """Everything about ``address`` that can be checked without connecting a driver."""
    if address == "auto":
        return
    if "://" in address and not address.startswith("ray://"):
        raise ClusterError(f"Ray address {address!r}: the only scheme is ray:// (Ray Client); give "
                           f"ray://host:port or the head's host:port")
    host, port = _host_port(address)
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401 - Ray Client's transport, from ray[client]
        except ImportError:
            raise _client_missing(address) from None
    why = _reachable(host, port)
    if why is not None:
        raise ClusterError(f"cannot reach the Ray cluster at {address}: {why}; check the address ('ray start "
                           f"--head' prints it; ray:// addresses use the Ray Client port, 10001 by default), that "
                           f"the head is running and that this machine may reach port {port}")
    if not address.startswith("ray://"):
        _check_gcs(address)


def _session_start_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is the head's Ray Client server failing to start this session's server."""
    return isinstance(exc, ConnectionError) and str(exc).startswith("Initialization failure from server")


def _init_retrying_session_start(ray, address: str, options: dict) -> None:
    """``ray.init`` on ``address``, tried again (up to ``CLIENT_SESSION_TRIES`` in all) when a
    ``ray://`` session's server failed to start; Ray Client disconnects after such a failure,
    so the next try starts clean."""
    tries = CLIENT_SESSION_TRIES if address.startswith("ray://") else 1
    for attempt in range(1, tries + 1):
        try:
            ray.init(address=address, **options)
            return
        except Exception as exc:  # noqa: BLE001 - only a failed session start is tried again
            if attempt == tries or not _session_start_failed(exc):
                raise


def connect(address: str | None, num_cpus: int | None = None) -> None:
    """Start Ray's driver: on the cluster at ``address`` (checked first), or on a local Ray of
    ``num_cpus`` CPUs when ``address`` is None. Raises ClusterError with the fix.

    Ray's own SIGTERM handler (exit code 15, with a stack dump) is replaced again by the one
    in place before, so that SIGTERM stops a sweep as Ctrl-C does.
    """
    import logging
    import signal
    import threading

    import ray

    if address is not None:
        check_address(address)
    options = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
               "configure_logging": True}
    if address is None:
        options["num_cpus"] = num_cpus
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    environ = os.environ.pop("RAY_ADDRESS", None) if address is None else None  # a local Ray means local
    try:
        if address is None:
            ray.init(**options)
        else:
            with _quiet_stderr():
                _init_retrying_session_start(ray, address, options)
    except ClusterError:
        raise
    except Exception as exc:  # noqa: BLE001 - every way ray.init fails becomes one line
        raise _translate(address or "a local Ray", exc) from None
    finally:
        if environ is not None:
            os.environ["RAY_ADDRESS"] = environ
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


class HeadWatch:
    """Whether the cluster's head still answers: a TCP connection to its port, at most every
    ``every`` seconds; :meth:`check` raises ClusterLost once it has failed for ``limit`` seconds."""

    def __init__(self, address: str, probe: str | None = None, every: float = 2.0, limit: float = HEAD_LOST_SECONDS):
        self.address = address   # as the user gave it; ``probe`` (default the same) is what is tried
        self.host, self.port = _host_port(probe or address)
        self.every, self.limit = every, limit
        self.last = 0.0
        self.down_since: float | None = None

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        why = _reachable(self.host, self.port, timeout=min(self.every, 2.0))
        if why is None:
            self.down_since = None
            return
        if self.down_since is None:
            self.down_since = now
        if now - self.down_since >= self.limit:
            raise ClusterLost(f"lost the Ray cluster's head at {self.address} ({why} for "
                              f"{now - self.down_since:.0f} s)")

    @property
    def up(self) -> bool:
        return self.down_since is None
