"""On-disk cache of corpus embeddings, keyed by the encoder's identity and the exact texts.

Encoding a corpus is the most expensive step on a CPU; eval, index builds of every kind and
benchmarks reuse the same vectors. A key covers the model files (path, size, mtime), the
normalisation and max length, and a hash of every text, so any change misses the cache.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from densekit.atomic import write_bytes_atomic


def cache_root() -> Path | None:
    if os.environ.get("DENSEKIT_NO_EMBED_CACHE"):
        return None
    from densekit.settings import Settings

    return Path(Settings().cache_dir) / "embeddings"


def _model_fingerprint(path: str) -> str:
    p = Path(path)
    if not p.exists():
        return path  # hub name: its revision is the best we know
    parts = [str(p.resolve())]
    for f in sorted(p.rglob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            st = f.stat()
            parts.append(f"{f.relative_to(p)}:{st.st_size}:{int(st.st_mtime)}")
    return "|".join(parts)


def cache_key(encoder, texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    h.update(_model_fingerprint(encoder.path).encode())
    h.update(f"|norm={encoder.normalize}|len={getattr(encoder.model, 'max_seq_length', None)}|doc".encode())
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
