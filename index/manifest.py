"""manifest.json: what an index folder holds and how to check it."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from densekit.errors import IndexCorruptError, IndexMismatchError
from densekit.fusion import FusionSettings, SearchMode

_M = TypeVar("_M", bound=BaseModel)

log = logging.getLogger(__name__)

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
    # The runtime that encoded the stored vectors; indexes written before runtimes existed
    # were all torch fp32.
    backend: str = "torch"
    precision: str = "fp32"

    @classmethod
    def of(cls, encoder) -> EncoderSpec:
        """The spec of the encoder that produced an index's vectors (its `info()`)."""
        info = encoder.info()
        return cls(
            name=info.name,
            path=info.path,
            dim=info.dim,
            similarity=info.similarity,
            normalize=info.normalize,
            max_seq_length=info.max_seq_length,
            backend=info.backend,
            precision=info.precision,
        )


class LexicalSpec(BaseModel):
    """The BM25 part of an index folder (densekit.index.lexical): how documents were tokenised
    and scored. Documents are indexed as BEIR encodes them, `title + " " + text`."""

    method: str = "lucene"  # bm25s's variant: Lucene's idf log(1 + (N - df + 0.5) / (df + 0.5))
    k1: float = 1.5
    b: float = 0.75
    stemmer: str | None = "english"  # a Snowball (PyStemmer) language, or None
    stopwords: str = "en"  # bm25s's English list
    files: list[str] = Field(default_factory=list, description="files under the folder, each with a checksum in the manifest")


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
    # Folders written before lexical search have none of the three below: no lexical part,
    # dense searches, RRF when a lexical part is added.
    lexical: LexicalSpec | None = None
    search_mode: SearchMode = "dense"
    fusion: FusionSettings = Field(default_factory=FusionSettings)

    def checked_files(self) -> tuple[str, ...]:
        """Every file of the folder that has a checksum in the manifest."""
        return (INDEX_FILE, DOCSTORE_FILE, *(self.lexical.files if self.lexical is not None else ()))


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def read_format_json(path: Path, model: type[_M], fmt: str, version: int, what: str, missing: str) -> _M:
    """A JSON file tagged {"format": fmt, "format_version": version} read into `model`:
    IndexCorruptError when it is missing (`missing` says what that means), unreadable or off
    schema; IndexMismatchError for another format version."""
    if not path.is_file():
        raise IndexCorruptError(f"{path} is missing: {missing}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexCorruptError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise IndexCorruptError(f"{path} is not {what} (format {fmt!r})")
    if raw.get("format_version") != version:
        raise IndexMismatchError(f"{path}: {what} format version {raw.get('format_version')!r}, this densekit reads {version}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise IndexCorruptError(f"{path} does not match the {what} schema: {exc}") from None


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


def verify_checksums(folder: Path, manifest: Manifest, files: tuple[str, ...] | None = None) -> None:
    for name in files if files is not None else manifest.checked_files():
        path = folder / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing")
        expected = manifest.checksums.get(name)
        if expected is None:
            raise IndexCorruptError(f"{folder / MANIFEST} has no checksum for {name}")
        actual = sha256_file(path)
        if actual != expected:
            raise IndexCorruptError(f"{path} fails its checksum (expected {expected[:12]}..., got {actual[:12]}...): corrupt or truncated")


def update_search_defaults(folder: Path, search_mode: SearchMode | None = None, fusion: FusionSettings | None = None) -> Manifest:
    """Rewrite an index folder's default search mode and fusion settings in place (the
    manifest alone, atomically; no checksum covers it). A server serving the folder keeps its
    loaded settings until restarted, and a live server's next snapshot writes its own."""
    from densekit.atomic import write_json_atomic

    manifest = read_manifest(folder)
    if search_mode is not None:
        if search_mode != "dense" and manifest.lexical is None:
            raise IndexMismatchError(f"{folder}: no lexical part, so it cannot default to {search_mode} search (build it with --lexical)")
        manifest.search_mode = search_mode
    if fusion is not None:
        manifest.fusion = fusion
    write_json_atomic(folder / MANIFEST, manifest.model_dump(mode="json"))
    return manifest


# Largest drift (1 - cosine between an export's embeddings and its source's) at which queries
# of one runtime may still search documents encoded by another.
MAX_RUNTIME_DRIFT = 0.01


def check_encoder_runtime(spec: EncoderSpec, backend: str, precision: str, drift: float | None = None) -> None:
    """Warn when queries are encoded by another runtime than the index's documents were, and
    raise IndexMismatchError when the known drift between the two (`drift`: 1 - the lowest
    cosine an export's quality check measured against its source) passes MAX_RUNTIME_DRIFT."""
    if (spec.backend, spec.precision) == (backend, precision):
        return
    where = f"index built with {spec.backend}/{spec.precision}, queries encoded with {backend}/{precision}"
    if drift is not None and drift > MAX_RUNTIME_DRIFT:
        raise IndexMismatchError(
            f"{where}: their embeddings differ by a cosine drift of {drift:.4f} (limit {MAX_RUNTIME_DRIFT}); rebuild the index with this runtime"
        )
    log.warning("%s: scores shift slightly; rebuild the index with this runtime for exact agreement", where)
