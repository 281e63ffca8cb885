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

import numpy as np

from densekit.devices import resolve_device, resolve_dtype
from densekit.errors import ModelLoadError
from densekit.models import resolve_encoder_name

log = logging.getLogger(__name__)


@dataclass
class EncoderInfo:
    name: str
    path: str
    dim: int
    similarity: str
    normalize: bool
    max_seq_length: int | None
    device: str


class Encoder:
    """Encodes queries and documents into float32 numpy arrays."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = "auto",
        normalize: bool | None = None,
        batch_size: int = 64,
        dtype: str | None = "auto",
        max_seq_length: int | None = None,
    ):
        from sentence_transformers import SentenceTransformer

        self.name = model or "sentence-transformers/all-MiniLM-L6-v2"
        self.path = resolve_encoder_name(self.name)
        self.device = resolve_device(device)
        try:
            self.model = SentenceTransformer(self.path, device=self.device)
        except Exception as exc:  # hub/IO errors come in many types; report them as one
            raise ModelLoadError(f"cannot load bi-encoder '{self.name}': {exc}") from exc
        # The checkpoint's own dtype and architecture steer 'auto' (fp16/bf16 on CUDA, fp32 on CPU).
        torch_dtype = resolve_dtype(self.device, dtype, model=self.model)
        if torch_dtype != "float32":
            import torch

            self.model.to(getattr(torch, torch_dtype))
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        sim = str(getattr(self.model, "similarity_fn_name", None) or "cosine")
        # Cosine similarity is served as inner product over unit vectors.
        self.normalize = (sim == "cosine") if normalize is None else normalize
        self.similarity = "cosine" if self.normalize else "dot"
        self.batch_size = batch_size
        self.dim = int(self.model.get_embedding_dimension())

    @classmethod
    def from_model(cls, model, name: str = "in-memory", normalize: bool | None = None, batch_size: int = 64) -> Encoder:
        """Wrap an already loaded SentenceTransformer (training hands its model over this way)."""
        self = cls.__new__(cls)
        self.name = name
        self.path = name
        self.model = model
        self.device = str(model.device)
        sim = str(getattr(model, "similarity_fn_name", None) or "cosine")
        self.normalize = (sim == "cosine") if normalize is None else normalize
        self.similarity = "cosine" if self.normalize else "dot"
        self.batch_size = batch_size
        self.dim = int(model.get_embedding_dimension())
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
