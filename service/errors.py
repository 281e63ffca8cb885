"""One error shape per API family, with the HTTP status listed in docs/architecture.md ("HTTP API"):
400 empty input, 401 auth, 404 unknown document or model, 408 too slow a client, 409 an update
the index kind cannot do, 413 too large, 422 validation or a capability this server lacks
(`no_reranker`), 429 overloaded, 503 not ready.

Bodies: `{"error": message, "error_type": kind}` everywhere except under `/v1/`, where the
OpenAI-compatible routes answer OpenAI's error object, `{"error": {"message", "type",
"param", "code"}}` (`code` carries the same kind), so the official SDKs show the message.

A refusal (every error answer but an unknown document and an internal error) is counted in
`densekit_rejected_total` by its kind: the handlers mark the request, the middleware counts."""

from __future__ import annotations

import logging
import re
from pathlib import PurePosixPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from densekit.errors import ConfigError, DensekitError, DocumentNotFoundError, InvalidInputError
from densekit.service.batching import BatcherStopped, QueueFull

log = logging.getLogger(__name__)

# The request's error kind, set by the handlers, read by the middleware's metrics.
ERROR_TYPE_KEY = "densekit.error_type"
OPENAI_PREFIX = "/v1/"
# Error answers that are not refusals: the request was served, the answer is "no such document".
_NOT_REFUSALS = frozenset(("not_found", "internal"))


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str, headers: dict[str, str] | None = None, param: str | None = None):
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers
        self.param = param
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


def validation(message: str, param: str | None = None) -> ApiError:
    return ApiError(422, "validation", message, param=param)


def conflict(message: str) -> ApiError:
    return ApiError(409, "unsupported", message)


def no_reranker() -> ApiError:
    # 422, not 503: a missing capability is a property of this deployment, and clients (and
    # the OpenAI and Cohere SDKs) retry 5xx answers, which could never succeed here.
    return ApiError(422, "no_reranker", "this server has no reranker loaded (start it with --reranker)")


def model_not_found(given: str, served: str) -> ApiError:
    return ApiError(
        404,
        "model_not_found",
        f"The model `{given}` does not exist: this server serves `{served}` (or start it with --allow-any-model)",
        param="model",
    )


def is_refusal(status: int, error_type: str) -> bool:
    """Whether an error answer counts as a refused request in densekit_rejected_total."""
    return error_type not in _NOT_REFUSALS and (status < 500 or status in (501, 503))


def _openai_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_content(path: str, status: int, error_type: str, message: str, param: str | None = None) -> dict[str, Any]:
    """The error body of a request to `path` (OpenAI's object under /v1/, else densekit's)."""
    # A message may quote the client's input, lone surrogates included: escape what UTF-8
    # cannot carry, so the answer to bad input is never a 500.
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")
    param = param.encode("utf-8", "backslashreplace").decode("utf-8") if param is not None else None
    if path.startswith(OPENAI_PREFIX):
        return {"error": {"message": message, "type": _openai_type(status), "param": param, "code": error_type}}
    return {"error": message, "error_type": error_type}


def error_body(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None, *, path: str = "", param: str | None = None
) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_content(path, status, error_type, message, param), headers=headers)


def error_answer(
    scope: Scope, status: int, error_type: str, message: str, headers: dict[str, str] | None = None, param: str | None = None
) -> JSONResponse:
    """The error response of the request in `scope`, marked for the middleware's metrics."""
    scope[ERROR_TYPE_KEY] = error_type
    return error_body(status, error_type, message, headers, path=scope.get("path", ""), param=param)


# An absolute file path in a message (not a URL's path, which follows "scheme:").
_ABS_PATH = re.compile(r"(?<![\w.:/~-])(?:~/|/)[^\s'\"`,;()\[\]{}]+")


def without_paths(message: str) -> str:
    """`message` with every absolute path replaced by its last component: error texts of
    models and indexes name their files, which an HTTP client has no business knowing."""
    return _ABS_PATH.sub(lambda m: PurePosixPath(m.group(0)).name or "<path>", message)


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The message naming each field at fault, and the first top-level field (OpenAI's `param`)."""
    parts = []
    params = []
    for err in exc.errors():
        # pydantic names the union member a value was tried as, e.g. `function-after[check(), str]`: not a field.
        loc = [str(x) for x in err.get("loc", ()) if x != "body" and not any(c in str(x) for c in "[(")]
        params.extend(loc[:1])
        parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request", next(iter(params), None)


def _answer(status: int, kind: str, headers: dict[str, str] | None):
    """An exception handler that answers every exception of its type alike."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return error_answer(request.scope, status, kind, str(exc), headers)

    return handle


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_answer(request.scope, exc.status, exc.error_type, exc.message, exc.headers, exc.param)

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
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_answer(request.scope, 422, "validation", message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return error_answer(request.scope, exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(DensekitError)
    async def _densekit(request: Request, exc: DensekitError):
        log.exception("densekit error")
        return error_answer(request.scope, 500, type(exc).__name__, without_paths(str(exc)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # Never a stack trace to the client; the log keeps it.
        log.exception("unhandled error")
        return error_answer(request.scope, 500, "internal", "internal server error")
