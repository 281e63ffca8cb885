"""sharded_manifest.json: a sharded index folder, and which shard owns a document.

Layout::

    <index>/sharded_manifest.json   ShardedManifest (written last)
    <index>/shard-00000/            an ordinary index folder (manifest.json, index.faiss, docstore.sqlite)
    <index>/shard-00001/ ...
    <index>/shard-00000.wal/        a shard's write-ahead log, once it serves live updates

A document belongs to shard `crc32(utf-8 id) % shards` (`shard_of`): stable across
processes, machines and languages, so a writer can route an upsert or delete without asking
anybody. Every shard was filled from one trained empty index; `trained_sha256` is that
index's `trained_checksum`, and loading checks every shard against it.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from densekit.errors import IndexCorruptError, IndexMismatchError
from densekit.index.manifest import EncoderSpec, read_format_json

FORMAT = "densekit-sharded-index"
FORMAT_VERSION = 1
SHARDED_MANIFEST = "sharded_manifest.json"
ROUTING_HASH = "crc32-utf8-mod"


def shard_of(doc_id: str, shards: int) -> int:
    """The shard that owns `doc_id` among `shards`."""
    return zlib.crc32(doc_id.encode("utf-8", "surrogatepass")) % shards


def shard_dir_name(i: int) -> str:
    return f"shard-{i:05d}"


class Routing(BaseModel):
    hash: str = ROUTING_HASH
    shards: int


class ShardEntry(BaseModel):
    name: str
    doc_count: int
    # The shard's files as built; a shard that has taken live updates since (its manifest
    # records a log sequence, extra.wal_seq) is checked against its own manifest instead.
    checksums: dict[str, str] = Field(default_factory=dict)


class ShardedManifest(BaseModel):
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    kind: str
    encoder: EncoderSpec
    metric: str = "inner_product"
    faiss_description: str = ""
    build_params: dict[str, Any] = Field(default_factory=dict)
    search_params: dict[str, Any] = Field(default_factory=dict)
    trained_sha256: str
    routing: Routing
    shards: list[ShardEntry]
    doc_count: int = 0
    build_time_s: float | None = None
    created_at: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


def is_sharded(folder: str | Path) -> bool:
    return (Path(folder) / SHARDED_MANIFEST).is_file()


def read_sharded_manifest(folder: str | Path) -> ShardedManifest:
    path = Path(folder) / SHARDED_MANIFEST
    manifest = read_format_json(
        path, ShardedManifest, FORMAT, FORMAT_VERSION, "a sharded index manifest", "not a sharded densekit index folder"
    )
    if manifest.routing.hash != ROUTING_HASH:
        raise IndexMismatchError(f"{path}: routing hash {manifest.routing.hash!r}, this densekit routes by {ROUTING_HASH!r}")
    if manifest.routing.shards != len(manifest.shards) or manifest.routing.shards < 1:
        raise IndexCorruptError(f"{path}: routing over {manifest.routing.shards} shards, {len(manifest.shards)} listed")
    return manifest
