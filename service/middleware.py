"""One pure-ASGI middleware for what every request needs: a request id, the payload size
limit and body-read deadline, HEAD answered as GET without a body, per-stage timing headers,
Prometheus counts (refusals by kind too) and one structured access-log line. And the CORS
middleware, with its refusals in the API's error shape.

Pure ASGI (not BaseHTTPMiddleware) because it sits on every request's path and must not
add a task hop or buffer responses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from densekit.service.engines import Timings
from densekit.service.errors import ERROR_TYPE_KEY, error_body, error_content, is_refusal
from densekit.service.logging_setup import request_id_var
from densekit.service.metrics import KNOWN_ROUTES, ServiceMetrics

access_log = logging.getLogger("densekit.access")
log = logging.getLogger(__name__)

TIMINGS_KEY = "densekit.timings"
REQUEST_ID_KEY = "densekit.request_id"
_RID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
# Stage headers, in the order a request passes them (TEI spells them the same way).
STAGES = ("tokenize", "queue", "encode", "search", "rerank", "write")


def timings_of(scope: Scope) -> Timings:
    t = scope.get(TIMINGS_KEY)
    if t is None:  # a route called without the middleware (unit tests of handlers)
        t = scope[TIMINGS_KEY] = Timings()
    return t


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return v.decode("latin-1")
    return None


async def _send_error(send: Send, scope: Scope, status: int, error_type: str, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(error_content(scope.get("path", ""), status, error_type, message)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _TooSlow(Exception):
    pass


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, max_payload_bytes: int, metrics: ServiceMetrics, read_timeout_s: float = 30.0):
        self.app = app
        self.max_payload = max_payload_bytes
        self.metrics = metrics
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        method = scope["method"]
        if method == "HEAD":
            # HEAD is GET without the body (RFC 9110): routed as GET on a copy of the scope,
            # so that the server still knows to send no body.
            scope = {**scope, "method": "GET"}
        given = _header(scope, b"x-request-id")
        rid = given if given and _RID_OK.match(given) else uuid.uuid4().hex
        timings = Timings()
        scope[TIMINGS_KEY] = timings
        scope[REQUEST_ID_KEY] = rid
        token = request_id_var.set(rid)
        status = 500
        rid_header = (b"x-request-id", rid.encode())
        self.metrics.in_flight.inc()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                h = MutableHeaders(scope=message)
                h["x-request-id"] = rid
                total = (time.perf_counter() - t0) * 1000
                h["x-total-time"] = f"{total:.3f}"
                parts = []
                for stage in STAGES:
                    if stage in timings:
                        h[f"x-{stage}-time"] = f"{timings[stage]:.3f}"
                        parts.append(f"{stage};dur={timings[stage]:.3f}")
                parts.append(f"total;dur={total:.3f}")
                h["server-timing"] = ", ".join(parts)
            elif method == "HEAD" and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        try:
            receive = await self._limited_body(scope, receive)
            await self.app(scope, receive, send_with_headers)
        except ClientDisconnect:
            status = 499  # nginx's code for "client closed the request"; nobody reads it
        except _TooLarge as exc:
            status = 413
            scope[ERROR_TYPE_KEY] = "payload_too_large"
            await _send_error(send, scope, 413, "payload_too_large", str(exc), [rid_header])
        except _TooSlow as exc:
            # The rest of the body may still be on its way: close rather than read it.
            status = 408
            scope[ERROR_TYPE_KEY] = "request_timeout"
            await _send_error(send, scope, 408, "request_timeout", str(exc), [rid_header, (b"connection", b"close")])
        except Exception:
            # Never a stack trace to the client; the log keeps it with the request id.
            log.exception("unhandled error")
            status = 500
            try:
                await _send_error(send, scope, 500, "internal", "internal server error", [rid_header])
            except Exception:  # the response had already started
                pass
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, method, status, t0, timings)
            request_id_var.reset(token)

    async def _limited_body(self, scope: Scope, receive: Receive) -> Receive:
        """Refuse a body over the limit: at once from Content-Length, else while reading it
        (chunked uploads); and one that takes longer than `read_timeout_s` to arrive (a client
        trickling bytes would hold the connection as long as it likes). The body is read
        here, once, and replayed to the app."""
        if scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return receive
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_payload:
            raise _TooLarge(f"request body of {declared} bytes is over the limit of {self.max_payload} bytes")
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.read_timeout_s
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise _TooSlow(f"the request body did not arrive within {self.read_timeout_s:g} s (request_read_timeout_s)") from None
            if message["type"] != "http.request":
                # The client went away before sending everything: hand that on as is.
                async def disconnected(last: Message = message) -> Message:
                    return last

                return disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_payload:
                raise _TooLarge(f"request body is over the limit of {self.max_payload} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    def _record(self, scope: Scope, method: str, status: int, t0: float, timings: Timings) -> None:
        seconds = time.perf_counter() - t0
        route = scope.get("route")
        path = getattr(route, "path", None)
        label = path if path in KNOWN_ROUTES else "other"
        self.metrics.requests.labels(label, method, str(status)).inc()
        self.metrics.latency.labels(label).observe(seconds)
        kind = scope.get(ERROR_TYPE_KEY)
        if kind is not None and is_refusal(status, kind):
            self.metrics.rejected.labels(kind).inc()
        if label == "/metrics":
            return  # scrapes would drown the access log
        access_log.info(
            "%s %s %d %.1fms",
            method,
            scope.get("path", ""),
            status,
            seconds * 1000,
            extra={
                "method": method,
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "client": (scope.get("client") or ("-",))[0],
                **{f"{k}_ms": round(v, 3) for k, v in timings.items()},
            },
        )


class JSONErrorCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, whose refused preflights (plain text there) answer the
    API's JSON error shape and count as refusals."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        allow_origins: list[str],
        allow_methods: list[str],
        allow_headers: list[str],
        expose_headers: list[str],
    ):
        super().__init__(
            app, allow_origins=allow_origins, allow_methods=allow_methods, allow_headers=allow_headers, expose_headers=expose_headers
        )
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code == 400:
                    self.metrics.rejected.labels("cors_rejected").inc()
                    kept = {k: v for k, v in response.headers.items() if k not in ("content-type", "content-length")}
                    reason = bytes(response.body).decode()
                    response = error_body(400, "cors_rejected", f"{reason} for this server", kept, path=scope.get("path", ""))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
