"""Checks shared by the routes: readiness, and the client-side limits of the HTTP API
(docs/architecture.md): 400 empty input, 413 too many or too long inputs."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from densekit.encoder import Encoder
from densekit.index.loading import AnyIndex, AnyLiveIndex
from densekit.rerankers import Reranker
from densekit.service.engines import EmbedEngine, IndexEngine, RerankEngine, Timings
from densekit.service.errors import ApiError, empty_input, not_ready
from densekit.service.middleware import timings_of
from densekit.service.state import ServiceState
from densekit.settings import Settings


@dataclass(frozen=True)
class Ready:
    """A loaded service as a request sees it: the encoder and its engine are always there;
    the index and the reranker only when the server was started with them."""

    encoder: Encoder
    embed: EmbedEngine
    index: AnyIndex | None
    search: IndexEngine | None
    live: AnyLiveIndex | None
    reranker: Reranker | None
    rerank: RerankEngine | None


def ready_state(request: Request) -> Ready:
    """The loaded service, or 503 while models load (or failed to)."""
    state: ServiceState | None = request.app.state.dk
    if state is None or not state.ready or state.encoder is None or state.embed is None:
        detail = "; ".join(state.errors) if state is not None and state.errors else "models are still loading"
        raise not_ready(detail)
    return Ready(state.encoder, state.embed, state.index, state.search, state.live, state.reranker, state.rerank)


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def timings(request: Request) -> Timings:
    return timings_of(request.scope)


def check_texts(texts: list[str], settings: Settings, what: str) -> None:
    """400 for no input or an empty text; 413 past max_client_batch or max_text_chars."""
    if not texts:
        raise empty_input(f"{what}: no input given")
    if len(texts) > settings.max_client_batch:
        raise ApiError(
            413,
            "payload_too_large",
            f"{what}: {len(texts)} inputs, the limit is {settings.max_client_batch} per request (max_client_batch)",
        )
    for i, t in enumerate(texts):
        if not t or not t.strip():
            raise empty_input(f"{what}[{i}] is empty")
        if len(t) > settings.max_text_chars:
            raise ApiError(
                413, "payload_too_large", f"{what}[{i}] is {len(t)} characters, the limit is {settings.max_text_chars} (max_text_chars)"
            )


def check_text(text: str, settings: Settings, what: str) -> None:
    if not text or not text.strip():
        raise empty_input(f"{what} is empty")
    if len(text) > settings.max_text_chars:
        raise ApiError(
            413, "payload_too_large", f"{what} is {len(text)} characters, the limit is {settings.max_text_chars} (max_text_chars)"
        )
