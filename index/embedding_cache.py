"""On-disk cache of corpus embeddings, keyed by the encoder's identity and the exact texts.

Encoding a corpus is the most expensive step on a CPU; eval, index builds of every kind and
benchmarks reuse the same vectors. A key covers the model files (path, size, mtime), the
normalisation and max length, the runtime (backend/precision) and a hash of every text, so
any change misses the cache.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from densekit.atomic import write_bytes_atomic
from densekit.fingerprint import model_fingerprint


def cache_root() -> Path | None:
    if os.environ.get("DENSEKIT_NO_EMBED_CACHE"):
        return None
    from densekit.settings import Settings

    return Path(Settings().cache_dir) / "embeddings"


def _weights_dtype(model) -> str | None:
    try:
        return str(next(model.parameters()).dtype).removeprefix("torch.")
    except (StopIteration, AttributeError, TypeError):
        return None


def cache_key(encoder, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(model_fingerprint(encoder.path).encode())
    h.update(f"|norm={encoder.normalize}|len={getattr(encoder.model, 'max_seq_length', None)}|doc".encode())
    # fp16/bf16 vectors (CUDA) differ from fp32 ones; fp32 keys stay as they were.
    dtype = _weights_dtype(encoder.model)
    if dtype not in ("float32", None):
        h.update(f"|dtype={dtype}".encode())
    # Vectors of another runtime or precision never stand in for torch fp32 ones (nor for each
    # other); torch fp32 keys stay as they were.
    runtime = getattr(encoder, "runtime", None)
    if runtime is not None and not runtime.is_default:
        h.update(f"|runtime={runtime.backend}/{runtime.precision}".encode())
    for t in texts:
        h.update(hashlib.sha1(t.encode("utf-8")).digest())
    return h.hexdigest()[:32]


def cached_document_vectors(encoder, texts: Sequence[str], progress: bool = True) -> np.ndarray:
    root = cache_root()
    # In-memory models (training) have no stable identity on disk: never cache them.
    if root is None or not Path(encoder.path).exists():
        return encoder.encode_documents(texts, progress=progress)
    path = root / f"{cache_key(encoder, texts)}.npy"
    if path.is_file():
        try:
            arr = np.load(path)
            if arr.shape == (len(texts), encoder.dim):
                return arr
        except (OSError, ValueError):
            pass
    vectors = encoder.encode_documents(texts, progress=progress)
    buf = io.BytesIO()
    np.save(buf, vectors)
    write_bytes_atomic(path, buf.getvalue())
    return vectors
