"""Embedding shards: a corpus's document vectors on disk, in fixed-size row ranges.

Layout of an embeddings folder::

    embeddings.json               the manifest (EmbeddingsManifest), written last
    shard-00000.npy               vectors of rows [0, shard_size): (rows, dim) float32 or float16
    shard-00000.ids.jsonl         their document ids, one JSON string per line, same order
    shard-00000.json              the shard's record (ShardRecord), written once its two files are

A shard is plain `.npy` plus a JSON-lines id file rather than Parquet: numpy memory-maps it
(an index build reads any rows of a shard without loading it), faiss takes the array as it
is, and the bytes hashed for the checksum are exactly the bytes read. Ids are JSON strings so
that any id (tabs, newlines) survives.

A shard is complete when its record exists and both files match the record's SHA-256
checksums; a re-run skips complete shards whose plan (rows, ids, texts, encoder, dtype) is
unchanged and encodes the others. Every file is written atomically, so an interrupted run
leaves whole shards and nothing half-written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from densekit.atomic import write_bytes_atomic, write_json_atomic
from densekit.errors import ConfigError, IndexCorruptError
from densekit.index.manifest import EncoderSpec, read_format_json, sha256_file

FORMAT = "densekit-embeddings"
FORMAT_VERSION = 1
MANIFEST = "embeddings.json"
DTYPES = ("float32", "float16")


class ShardPlan(BaseModel):
    """What a shard must contain: its rows of the corpus, and who encodes them how."""

    name: str
    first_row: int
    rows: int
    ids_sha256: str  # of the shard's ids in order
    texts_sha256: str  # of the encoded texts in order
    encoder_key: str  # model files, normalisation, max length, runtime
    dtype: str


class ShardRecord(ShardPlan):
    vectors_file: str
    ids_file: str
    checksums: dict[str, str] = Field(default_factory=dict)


class EmbeddingsManifest(BaseModel):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    encoder: EncoderSpec
    encoder_key: str
    dim: int
    normalize: bool
    dtype: str
    shard_size: int
    rows: int
    corpus: str | None = None  # where the documents came from (an index build takes their texts there)
    text: str = "title + ' ' + text"
    shards: list[ShardRecord]
    created_at: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConfigError("dtype", f"embedding shards store {' or '.join(DTYPES)}, not {dtype!r}")


def hash_strings(items: Sequence[str]) -> str:
    h = hashlib.sha256()
    for s in items:
        h.update(hashlib.sha1(s.encode("utf-8", "surrogatepass")).digest())
    return h.hexdigest()


def plan_shards(ids: Sequence[str], texts: Sequence[str], shard_size: int, encoder_key: str, dtype: str) -> list[ShardPlan]:
    """Corpus rows cut into consecutive shards of `shard_size` rows (the last may be shorter)."""
    if shard_size < 1:
        raise ConfigError("shard_size", f"must be at least 1, got {shard_size}")
    check_dtype(dtype)
    plans = []
    for i, start in enumerate(range(0, len(ids), shard_size)):
        end = min(start + shard_size, len(ids))
        plans.append(
            ShardPlan(
                name=shard_name(i),
                first_row=start,
                rows=end - start,
                ids_sha256=hash_strings(ids[start:end]),
                texts_sha256=hash_strings(texts[start:end]),
                encoder_key=encoder_key,
                dtype=dtype,
            )
        )
    return plans


def write_shard(folder: Path, plan: ShardPlan, ids: Sequence[str], vectors: np.ndarray) -> ShardRecord:
    """Write a shard's vectors and ids, then its record (the record last: it marks the shard complete)."""
    if vectors.shape[0] != plan.rows or len(ids) != plan.rows:
        raise IndexCorruptError(f"{plan.name}: {vectors.shape[0]} vectors and {len(ids)} ids for a shard of {plan.rows} rows")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors, dtype=plan.dtype))
    vec_bytes = buf.getvalue()
    id_bytes = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ids).encode("utf-8", "surrogatepass")
    record = ShardRecord(
        **plan.model_dump(),
        vectors_file=f"{plan.name}.npy",
        ids_file=f"{plan.name}.ids.jsonl",
        checksums={"vectors": hashlib.sha256(vec_bytes).hexdigest(), "ids": hashlib.sha256(id_bytes).hexdigest()},
    )
    write_bytes_atomic(folder / record.vectors_file, vec_bytes)
    write_bytes_atomic(folder / record.ids_file, id_bytes)
    write_json_atomic(folder / f"{plan.name}.json", record.model_dump(mode="json"))
    return record


def verify_shard(folder: Path, record: ShardRecord) -> None:
    """IndexCorruptError when a shard's file is missing or fails its checksum."""
    for key, name in (("vectors", record.vectors_file), ("ids", record.ids_file)):
        path = folder / name
        if not path.is_file():
            raise IndexCorruptError(f"{path} is missing (named by {record.name}'s record)")
        expected = record.checksums.get(key)
        actual = sha256_file(path)
        if expected != actual:
            raise IndexCorruptError(f"{path} fails its checksum (expected {str(expected)[:12]}..., got {actual[:12]}...)")


def complete_shard(folder: Path, plan: ShardPlan) -> ShardRecord | None:
    """The shard's record when the shard on disk is complete and was made by this plan, else None."""
    path = folder / f"{plan.name}.json"
    if not path.is_file():
        return None
    try:
        record = ShardRecord.model_validate_json(path.read_bytes())
        if ShardPlan.model_validate(record.model_dump(include=set(ShardPlan.model_fields))) != plan:
            return None
        verify_shard(folder, record)
    except (ValidationError, ValueError, IndexCorruptError):
        return None
    return record


def write_manifest(
    folder: Path, spec: EncoderSpec, encoder_key: str, dtype: str, shard_size: int, records: list[ShardRecord], corpus: str | None
) -> EmbeddingsManifest:
    manifest = EmbeddingsManifest(
        encoder=spec,
        encoder_key=encoder_key,
        dim=spec.dim,
        normalize=spec.normalize,
        dtype=dtype,
        shard_size=shard_size,
        rows=sum(r.rows for r in records),
        corpus=corpus,
        shards=records,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )
    write_json_atomic(folder / MANIFEST, manifest.model_dump(mode="json"))
    return manifest


def read_manifest(folder: str | Path) -> EmbeddingsManifest:
    return read_format_json(
        Path(folder) / MANIFEST,
        EmbeddingsManifest,
        FORMAT,
        FORMAT_VERSION,
        "an embeddings manifest",
        "not a densekit embeddings folder (or an encode run that has not finished)",
    )


class EmbeddingsFolder:
    """A finished embeddings folder, checked: every shard present, checksums verified (unless
    `verify=False`), row counts and dimension as the manifest says."""

    def __init__(self, folder: str | Path, verify: bool = True):
        self.folder = Path(folder)
        self.manifest = read_manifest(self.folder)
        for record in self.manifest.shards:
            if verify:
                verify_shard(self.folder, record)
            else:
                for name in (record.vectors_file, record.ids_file):
                    if not (self.folder / name).is_file():
                        raise IndexCorruptError(f"{self.folder / name} is missing (named by {MANIFEST})")

    @property
    def rows(self) -> int:
        return self.manifest.rows

    def vectors(self, record: ShardRecord) -> np.ndarray:
        """A shard's vectors, memory-mapped (read-only) in their stored dtype."""
        arr = np.load(self.folder / record.vectors_file, mmap_mode="r")
        if arr.shape != (record.rows, self.manifest.dim):
            raise IndexCorruptError(
                f"{self.folder / record.vectors_file}: shape {arr.shape}, manifest says ({record.rows}, {self.manifest.dim})"
            )
        return arr

    def ids(self, record: ShardRecord) -> list[str]:
        lines = (self.folder / record.ids_file).read_text(encoding="utf-8", errors="surrogatepass").splitlines()
        ids = [json.loads(line) for line in lines]
        if len(ids) != record.rows:
            raise IndexCorruptError(f"{self.folder / record.ids_file}: {len(ids)} ids, manifest says {record.rows}")
        return ids

    def shards(self) -> Iterator[tuple[ShardRecord, list[str], np.ndarray]]:
        for record in self.manifest.shards:
            yield record, self.ids(record), self.vectors(record)

    def load_all(self) -> tuple[list[str], np.ndarray]:
        """Every id and vector (as float32), in corpus order."""
        ids: list[str] = []
        parts = []
        for _, shard_ids, vecs in self.shards():
            ids.extend(shard_ids)
            parts.append(np.asarray(vecs, dtype=np.float32))
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.manifest.dim), dtype=np.float32)
        return ids, vectors
