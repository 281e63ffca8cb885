"""Start, wait for and stop the HTTP servers a benchmark drives (all on 127.0.0.1)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from densekit.errors import ServerStartError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_command(port: int, *extra: str) -> list[str]:
    """`densekit serve` on 127.0.0.1:port with this interpreter, quiet logs, plus `extra` flags."""
    return [
        sys.executable,
        "-m",
        "densekit.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra,
    ]


def open_log(path: str | Path | None):
    """An append-mode binary file for a server's stderr, or DEVNULL when no path is given."""
    return open(path, "ab") if path else subprocess.DEVNULL


def wait_ready(url: str, proc: subprocess.Popen | None, path: str = "/ready", timeout: float = 300) -> None:
    """Poll `url + path` until it answers 200; raise ServerStartError when `proc` exits or time runs out."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            args = proc.args if isinstance(proc.args, list) else [proc.args]
            name = " ".join(str(a) for a in args[:3])
            raise ServerStartError(f"server {name} exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise ServerStartError(f"{url} not ready after {timeout:g}s")


def stop(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
