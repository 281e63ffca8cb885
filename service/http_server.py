"""How uvicorn serves the app: its options from `Settings`, and an HTTP protocol that cuts off
clients too slow to send a request's head.

uvicorn times out idle keep-alive connections (`keep_alive_timeout_s`) but not a request in
progress: a client sending a header line every few seconds holds its connection for as long
as it likes. `HeadDeadlineProtocol` (uvicorn's own protocol underneath: httptools when
installed, else h11) gives every request `request_header_timeout_s` to deliver its request
line and headers, and at most `max_header_bytes` of them; past either it answers 408 or 431
and closes the connection, counted in `densekit_rejected_total`. The body has its own
deadline in the middleware (`request_read_timeout_s`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from functools import cache
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from densekit.service.errors import error_content
from densekit.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadLimits:
    timeout_s: float
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> HeadLimits:
        return cls(settings.request_header_timeout_s, settings.max_header_bytes)


@cache
def _limits_from_environment() -> HeadLimits:
    # Worker processes of `densekit serve --workers N` get their settings from DENSEKIT_*.
    return HeadLimits.of(Settings())


def _app_metrics(app: Any) -> Any:
    """The densekit app's metrics under uvicorn's wrappers (proxy headers, ...), or None."""
    for _ in range(8):
        metrics = getattr(getattr(app, "state", None), "metrics", None)
        if metrics is not None:
            return metrics
        app = getattr(app, "app", None)
    return None


def _raw_error(status: int, reason: str, error_type: str, message: str) -> bytes:
    # No request was parsed yet, so no path: densekit's shape.
    body = json.dumps(error_content("", status, error_type, message)).encode()
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return head.encode("latin-1") + body


class HeadDeadlineProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol with a deadline and a size limit on each request's head.

    A timer starts when the connection opens and again after each response; it stops when
    the parser has a whole request head (uvicorn then makes a new request cycle)."""

    limits: HeadLimits | None = None  # None: from the environment's settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_limits = self.limits or _limits_from_environment()
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._waiting_cycle: object = None

    def _arm(self) -> None:
        self._disarm()
        self._head_bytes = 0
        self._waiting_cycle = self.cycle
        self._head_timer = self.loop.call_later(self._head_limits.timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, reason: str, error_type: str, message: str) -> None:
        self._disarm()
        if self.transport.is_closing():
            return
        if self._head_bytes:  # the client sent part of a request: tell it why, count the refusal
            log.warning("closing a connection from %s: %s", self.client, message)
            self.transport.write(_raw_error(status, reason, error_type, message))
            metrics = _app_metrics(self.app)
            if metrics is not None:
                metrics.rejected.labels(error_type).inc()
        self.transport.close()  # else an idle connection: nothing was refused

    def _head_timed_out(self) -> None:
        self._head_timer = None
        self._refuse(
            408,
            "Request Timeout",
            "request_timeout",
            f"the request line and headers did not arrive within {self._head_limits.timeout_s:g} s (request_header_timeout_s)",
        )

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        waiting = self._head_timer is not None
        if waiting:
            self._head_bytes += len(data)
        super().data_received(data)
        if not waiting:
            return
        if self.cycle is not self._waiting_cycle:
            self._disarm()  # a whole request head arrived
        elif self._head_bytes > self._head_limits.max_bytes:
            self._refuse(
                431,
                "Request Header Fields Too Large",
                "headers_too_large",
                f"the request line and headers are over {self._head_limits.max_bytes} bytes (max_header_bytes)",
            )

    def on_response_complete(self) -> None:
        self._arm()
        super().on_response_complete()
        if self.cycle is not self._waiting_cycle or self.transport.is_closing():
            self._disarm()  # a pipelined request was waiting already, or the connection ends

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


def protocol_for(settings: Settings) -> type[asyncio.Protocol]:
    """`HeadDeadlineProtocol` with `settings`' limits (for a server in this process)."""
    return type("HeadDeadlineProtocol", (HeadDeadlineProtocol,), {"limits": HeadLimits.of(settings)})


def uvicorn_options(settings: Settings, in_process: bool = True) -> dict[str, Any]:
    """uvicorn.run / uvicorn.Config options for the slow-client limits of `settings`.
    `in_process=False` (several worker processes): the protocol class must be importable by
    name, and reads the same limits from the DENSEKIT_* environment."""
    return {
        "http": protocol_for(settings) if in_process else HeadDeadlineProtocol,
        "timeout_keep_alive": settings.keep_alive_timeout_s,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
    }
