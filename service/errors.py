"""One error shape for every failure: {"error": message, "error_type": kind}, with the
HTTP status listed in docs/architecture.md ("HTTP API"): 400 empty input, 401 auth, 413 too
large, 422 validation, 429 overloaded, 503 not ready, 404 unknown document, 409 an update the
index kind cannot do."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from densekit.errors import ConfigError, DensekitError, DocumentNotFoundError, InvalidInputError
from densekit.service.batching import BatcherStopped, QueueFull

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None):
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers
        super().__init__(message)


def empty_input(message: str) -> ApiError:
    return ApiError(400, "empty_input", message)


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def not_ready(message: str = "models are still loading") -> ApiError:
    return ApiError(503, "not_ready", message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def overloaded(message: str) -> ApiError:
    # Retry-After: the queue drains within a few batches; a second is a polite back-off.
    return ApiError(429, "overloaded", message, headers={"Retry-After": "1"})


def validation(message: str) -> ApiError:
    return ApiError(422, "validation", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "unsupported", message)


def error_body(status: int, error_type: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, "error_type": error_type}, headers=headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _answer(status: int, kind: str, headers: dict[str, str] | None):
    """An exception handler that answers every exception of its type alike."""

    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_body(status, kind, str(exc), headers)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        return error_body(exc.status, exc.error_type, exc.message, exc.headers)

    # Library errors with a fixed answer; ConfigError is raised for request-supplied
    # parameters (e.g. search_params that do not apply to the index kind).
    for exc_type, status, kind, headers in (
        (QueueFull, 429, "overloaded", {"Retry-After": "1"}),
        (BatcherStopped, 503, "not_ready", None),
        (ConfigError, 422, "validation", None),
        (InvalidInputError, 400, "invalid_input", None),
        (DocumentNotFoundError, 404, "not_found", None),
    ):
        app.add_exception_handler(exc_type, _answer(status, kind, headers))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        return error_body(422, "validation", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_body(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(DensekitError)
    async def _densekit(_: Request, exc: DensekitError):
        log.exception("densekit error")
        return error_body(500, type(exc).__name__, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception):
        # Never a stack trace to the client; the log keeps it.
        log.exception("unhandled error")
        return error_body(500, "internal", "internal server error")
