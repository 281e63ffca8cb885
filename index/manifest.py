"""manifest.json: what an index folder holds and how to check it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from densekit.errors import IndexCorruptError, IndexMismatchError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.sqlite"


class EncoderSpec(BaseModel):
    name: str
    path: str | None = None
    dim: int
    similarity: str = "cosine"
    normalize: bool = True
    max_seq_length: int | None = None


class Manifest(BaseModel):
    format_version: int = FORMAT_VERSION
    kind: str = "flat"
    encoder: EncoderSpec
    metric: str = "inner_product"
    faiss_description: str = ""
    build_params: dict[str, Any] = Field(default_factory=dict)
    search_params: dict[str, Any] = Field(default_factory=dict)
    doc_count: int = 0
    bytes_per_vector: float | None = None
    build_time_s: float | None = None
    created_at: str | None = None
    checksums: dict[str, str] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def read_manifest(folder: Path) -> Manifest:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise IndexCorruptError(f"index folder not found: {folder}")
    if not path.is_file():
        raise IndexCorruptError(f"{path} is missing: not a densekit index folder (or a half-written one)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise IndexCorruptError(f"{path} must hold a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise IndexMismatchError(f"{path}: index format version {version!r}, this densekit reads version {FORMAT_VERSION}")
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        raise IndexCorruptError(f"{path} does not match the manifest schema: {exc}") from None


def verify_checksums(folder: Path, manifest: Manifest, files: tuple[str, ...] = (INDEX_FILE, DOCSTORE_FILE)) -> None:
    for name in files:
        path = folder / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing")
        expected = manifest.checksums.get(name)
        if expected is None:
            raise IndexCorruptError(f"{folder / MANIFEST} has no checksum for {name}")
        actual = sha256_file(path)
        if actual != expected:
            raise IndexCorruptError(f"{path} fails its checksum (expected {expected[:12]}..., got {actual[:12]}...): corrupt or truncated")
