"""The bi-encoder: a thin wrapper over sentence-transformers.

Encoding stays a pure function of (model, texts) -> vectors so it can later run as a batch
job elsewhere (Ray Data) without change. Documents are encoded as BEIR does
(`title + " " + text`); query and document prompts are used when the model defines them
(encode_query / encode_document pick them up).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from densekit.backends import Runtime, check_bf16_device, resolve_runtime
from densekit.devices import resolve_device, resolve_dtype
from densekit.errors import ConfigError, ModelLoadError
from densekit.models import resolve_encoder_name

if TYPE_CHECKING:
    from densekit.settings import Settings

log = logging.getLogger(__name__)


def _default(field: str) -> Any:
    """A setting's default, as the Settings model defines it (not read from the environment)."""
    from densekit.settings import Settings

    return Settings.model_fields[field].default


def explicit_runtime(settings: Settings) -> dict[str, str]:
    """The backend/precision that `settings` set explicitly (environment or flag); unset ones are
    left out so that an exported model folder brings its own."""
    return {k: getattr(settings, k) for k in ("backend", "precision") if k in settings.model_fields_set}


def _model_similarity(model: Any) -> str:
    return str(getattr(model, "similarity_fn_name", None) or "cosine")


@dataclass
class EncoderInfo:
    name: str
    path: str
    dim: int
    similarity: str
    normalize: bool
    max_seq_length: int | None
    device: str
    backend: str = "torch"
    precision: str = "fp32"


def similarity_of(model_similarity: str, normalize: bool | None, name: str) -> tuple[str, bool]:
    """(served similarity, normalise?) for a model whose own similarity function is
    `model_similarity`. densekit ranks by inner product: cosine over unit vectors, or dot. A
    euclidean model is served as cosine only when asked to normalise (the same ranking on
    unit vectors); any other distance is refused rather than ranked the wrong way round."""
    if model_similarity in ("cosine", "dot"):
        norm = (model_similarity == "cosine") if normalize is None else normalize
        return ("cosine" if norm else "dot"), norm
    if model_similarity == "euclidean" and normalize:
        return "cosine", True
    raise ModelLoadError(
        f"bi-encoder '{name}' scores by {model_similarity} distance, which densekit does not serve (it ranks by inner product)"
        + ("; pass normalize=True to serve it as cosine (the same ranking on unit vectors)" if model_similarity == "euclidean" else "")
    )


class Encoder:
    """Encodes queries and documents into float32 numpy arrays.

    Arguments left at None take the defaults of `Settings` (one place); `from_settings`
    builds an encoder from the environment (DENSEKIT_MODEL, _BATCH_SIZE, _DTYPE, _DEVICE,
    _BACKEND, _PRECISION). A folder written by `densekit export` runs under its own backend and
    precision; asking for onnx/openvino with a plain model folder exports it first (cached)."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        normalize: bool | None = None,
        batch_size: int | None = None,
        dtype: str | None = None,
        max_seq_length: int | None = None,
        backend: str | None = None,
        precision: str | None = None,
        threads: int = 0,
    ):
        from sentence_transformers import SentenceTransformer

        self.name = model or _default("model")
        self.path = resolve_encoder_name(self.name)
        self.runtime, meta = resolve_runtime(self.path, backend, precision)
        if meta is None and self.runtime.backend != "torch":
            from densekit.backends import read_export_metadata
            from densekit.export import export_model

            log.warning("exporting '%s' to %s without a quality check (use `densekit export` for a checked one)", self.name, self.runtime)
            self.path = str(export_model(self.path, "bi-encoder", self.runtime.backend, self.runtime.precision))
            meta = read_export_metadata(self.path)
        requested_device = device or _default("device")
        if self.runtime.backend != "torch" and requested_device == "auto":
            requested_device = "cpu"  # the exported graphs run on the CPU
        self.device = resolve_device(requested_device)
        if self.runtime.backend != "torch" and self.device != "cpu":
            raise ConfigError("device", f"the {self.runtime.backend} backend runs on the CPU, not {self.device}")
        try:
            self.model = SentenceTransformer(self.path, device=self.device)
        except Exception as exc:  # hub/IO errors come in many types; report them as one
            raise ModelLoadError(f"cannot load bi-encoder '{self.name}': {exc}") from exc
        # 1 - the lowest cosine to its source that the export's quality check measured, if known.
        self.drift: float | None = None
        if meta is not None:
            from densekit.exported_runtime import attach_graph

            attach_graph(self.model, self.path, meta, threads=threads)
            if meta.quality and meta.quality.get("cosine_min") is not None:
                self.drift = 1.0 - float(meta.quality["cosine_min"])
        self.similarity, self.normalize = similarity_of(_model_similarity(self.model), normalize, self.name)
        # The checkpoint's own dtype and architecture steer 'auto' (fp16/bf16 on CUDA, fp32 on CPU).
        torch_dtype = "float32" if meta is not None else resolve_dtype(self.device, dtype or _default("dtype"), model=self.model)
        if self.runtime.precision == "bf16":
            check_bf16_device(self.device)
            torch_dtype = "bfloat16"
        elif torch_dtype == "bfloat16":
            self.runtime = Runtime("torch", "bf16")
        if torch_dtype != "float32":
            import torch

            self.model.to(getattr(torch, torch_dtype))
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.batch_size: int = batch_size if batch_size else int(_default("batch_size"))
        dim = self.model.get_embedding_dimension()
        if not dim:
            raise ModelLoadError(f"bi-encoder '{self.name}' does not report its embedding dimension")
        self.dim = int(dim)

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: Any) -> Encoder:
        """An encoder configured by `settings` (default: `Settings()`, i.e. the DENSEKIT_*
        environment); keyword arguments that are not None (model, device, batch_size, dtype,
        normalize, max_seq_length, backend, precision) win over the settings. Backend and
        precision pass on only when set explicitly, so an exported model brings its own."""
        from densekit.settings import Settings

        s = settings if settings is not None else Settings()
        args: dict[str, Any] = {"model": s.model, "device": s.device, "batch_size": s.batch_size, "dtype": s.dtype}
        args.update(explicit_runtime(s))
        args["threads"] = s.torch_threads
        args.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**args)

    @classmethod
    def from_model(cls, model, name: str = "in-memory", normalize: bool | None = None, batch_size: int | None = None) -> Encoder:
        """Wrap an already loaded SentenceTransformer (training hands its model over this way)."""
        self = cls.__new__(cls)
        self.name = name
        self.path = name
        self.model = model
        self.device = str(model.device)
        self.similarity, self.normalize = similarity_of(_model_similarity(model), normalize, name)
        self.batch_size = batch_size if batch_size else int(_default("batch_size"))
        self.dim = int(model.get_embedding_dimension())
        self.runtime = Runtime()
        self.drift = None
        return self

    def info(self) -> EncoderInfo:
        return EncoderInfo(
            name=self.name,
            path=self.path,
            dim=self.dim,
            similarity=self.similarity,
            normalize=self.normalize,
            max_seq_length=getattr(self.model, "max_seq_length", None),
            device=self.device,
            backend=self.runtime.backend,
            precision=self.runtime.precision,
        )

    def _encode(self, fn, texts: Sequence[str], progress: bool, batch_size: int | None) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        emb = fn(
            list(texts),
            batch_size=batch_size or self.batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.ascontiguousarray(emb, dtype=np.float32)

    def encode_queries(self, queries: Sequence[str], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        return self._encode(self.model.encode_query, queries, progress, batch_size)

    def encode_documents(self, docs: Sequence[str], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        return self._encode(self.model.encode_document, docs, progress, batch_size)

    def encode(self, texts: Sequence[str], progress: bool = False, batch_size: int | None = None) -> np.ndarray:
        """Plain embedding with no query/document prompt (the /embed route)."""
        return self._encode(self.model.encode, texts, progress, batch_size)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        tok = self.model.tokenizer
        limit = getattr(self.model, "max_seq_length", None) or 512
        enc = tok(list(texts), add_special_tokens=True, truncation=True, max_length=limit)
        return [len(ids) for ids in enc["input_ids"]]
