"""Reaching a Ray cluster: the optional extra, and a connection that fails fast.

Importable without Ray installed; only `connect` imports it, after `require_ray` said it is there.
"""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

from densekit.errors import ConfigError

log = logging.getLogger(__name__)

EXTRA_HINT = "install the extra: pip install 'densekit[ray]'"
DEFAULT_GCS_PORT = 6379
CLIENT_PORT = 10001


def ray_installed() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def require_ray(field: str = "engine") -> None:
    """ConfigError naming the extra unless Ray is importable."""
    if not ray_installed():
        raise ConfigError(field, f"the Ray engine needs Ray, which is not installed; {EXTRA_HINT}")


def host_port(address: str) -> tuple[str, int]:
    """(host, port) of a cluster address: `host:port`, `host` (GCS port 6379) or `ray://host[:port]` (client port 10001)."""
    if address.startswith("ray://"):
        parts = urlsplit(address)
        if not parts.hostname:
            raise ConfigError("address", f"no host in {address!r}")
        return parts.hostname, parts.port or CLIENT_PORT
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, DEFAULT_GCS_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ConfigError("address", f"expected HOST:PORT or ray://HOST:PORT, got {address!r}") from None


def check_reachable(address: str, timeout_s: float) -> None:
    """ConfigError unless a TCP connection to the cluster's address opens within `timeout_s`:
    ray.init would otherwise retry for minutes before it gives up."""
    host, port = host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise ConfigError("address", f"cannot reach a Ray cluster at {address} ({host}:{port}) within {timeout_s:g} s: {exc}") from None


def connect(address: str | None = None, timeout_s: float = 15.0) -> float:
    """Join the cluster at `address` ('auto': the one `ray start` runs on this machine), or
    start a local one when None; a cluster this process already joined is kept. Returns the
    seconds it took."""
    require_ray()
    import ray

    t0 = time.perf_counter()
    if address not in (None, "auto", "local"):
        check_reachable(address, timeout_s)
    if ray.is_initialized():
        return 0.0
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    except ConnectionError as exc:
        raise ConfigError("address", f"cannot join the Ray cluster at {address}: {exc}") from None
    took = time.perf_counter() - t0
    log.info("Ray cluster %s joined in %.1f s", address or "(local)", took)
    return took
