"""`load_reranker`: any reranker by hub name, folder, `.gguf` file or 'smollm2'."""

from __future__ import annotations

from densekit.errors import ConfigError
from densekit.rerankers.base import KINDS, Reranker, detect_kind
from densekit.rerankers.cross_encoder import CrossEncoderReranker
from densekit.rerankers.llm import LLMReranker
from densekit.settings import Settings


def load_reranker(
    name_or_path: str,
    kind: str = "auto",
    device: str | None = "auto",
    dtype: str | None = "auto",
    max_length: int | None = None,
    backend: str | None = None,
    precision: str | None = None,
) -> Reranker:
    """Load a reranker by hub name, local folder, `.gguf` file, or 'smollm2'.

    kind: 'auto' (from the model's config: causal LM -> llm, sequence classification ->
    cross-encoder), 'cross-encoder' or 'llm'. Raises ConfigError for a bad argument and
    ModelLoadError when the model cannot be found or loaded.
    """
    if not name_or_path or not str(name_or_path).strip():
        raise ConfigError("reranker", "empty model name")
    if kind not in KINDS:
        raise ConfigError("reranker_kind", f"unknown kind '{kind}' (use {', '.join(KINDS)})")
    if max_length is not None and max_length < 16:
        raise ConfigError("max_length", f"must be at least 16, got {max_length}")
    name_or_path = str(name_or_path)
    if kind == "auto":
        kind = detect_kind(name_or_path)
    if kind == "llm":
        if backend not in (None, "torch") or precision not in (None, "fp32"):
            raise ConfigError("reranker_backend", "an LLM reranker runs under torch (set its dtype instead of backend/precision)")
        return LLMReranker.load(name_or_path, device=device, dtype=dtype, max_length=max_length)
    return CrossEncoderReranker.load(name_or_path, device=device, dtype=dtype, max_length=max_length, backend=backend, precision=precision)


def load_reranker_from_settings(settings: Settings) -> Reranker:
    """The reranker that `settings` name (DENSEKIT_RERANKER, _RERANKER_KIND, _DEVICE, _DTYPE,
    _RERANKER_MAX_LENGTH, _RERANKER_BACKEND, _RERANKER_PRECISION): what every server loads."""
    if not settings.reranker:
        raise ConfigError("reranker", "no reranker configured")
    return load_reranker(
        settings.reranker,
        kind=settings.reranker_kind,
        device=settings.device,
        dtype=settings.dtype,
        max_length=settings.reranker_max_length,
        backend=settings.reranker_backend,
        precision=settings.reranker_precision,
    )
