"""The names the API gives its models: `served_model_name` / `served_reranker_name`, else the
model folder's name or the hub id. Never a file path: where a model lives on the server is
none of a client's business (and a path names users and mounts)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from densekit.service.errors import model_not_found
from densekit.settings import Settings


class _Models(Protocol):
    @property
    def encoder(self) -> object: ...
    @property
    def reranker(self) -> object: ...


def served_name(configured: str | None, source: str) -> str:
    """`configured` when set; else the last component of a local path, or `source` as is
    (a hub id such as `BAAI/bge-reranker-base`)."""
    if configured:
        return configured
    p = Path(source).expanduser()
    if p.is_absolute() or p.exists() or source.startswith((".", "~")):
        return p.stem if p.is_file() else p.name
    return source


def encoder_name(models: _Models, settings: Settings) -> str | None:
    enc = models.encoder
    return None if enc is None else served_name(settings.served_model_name, str(getattr(enc, "name", "model")))


def reranker_name(models: _Models, settings: Settings) -> str | None:
    rr = models.reranker
    return None if rr is None else served_name(settings.served_reranker_name, str(getattr(rr, "name", "reranker")))


def check_model(given: str | None, served: str, settings: Settings) -> None:
    """404 model_not_found for a `model` other than the served one (none given: fine), unless
    the server allows any name."""
    if given is not None and given != served and not settings.allow_any_model:
        raise model_not_found(given, served)
