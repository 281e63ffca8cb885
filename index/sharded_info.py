"""What `densekit index info` shows of a sharded index folder, read from the manifests alone
(no shard is loaded and no checksum is recomputed, so it is quick on any size): the sharded
manifest, each shard's documents, bytes on disk and BM25 part, and the totals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from densekit.errors import IndexCorruptError
from densekit.index.manifest import read_manifest
from densekit.index.sharded_manifest import ShardedManifest, read_sharded_manifest


class ShardInfo(BaseModel):
    name: str
    doc_count: int  # as the sharded manifest lists it (live updates since may have changed the shard's own count)
    present: bool
    bytes: int | None = None  # every file under the shard's folder; None when the folder is missing
    lexical: bool | None = None  # has a BM25 part; None when its manifest cannot be read
    live_doc_count: int | None = None  # the shard manifest's own count, when it differs from the listed one


class ShardedInfo(BaseModel):
    manifest: ShardedManifest
    shards: list[ShardInfo]
    total_docs: int
    total_bytes: int
    lexical: str  # "all shards", "none" or "some shards (k of n)"
    missing_shards: list[str]


def folder_bytes(folder: Path) -> int:
    """Bytes of every regular file under `folder`."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def shard_info(folder: Path, name: str, listed_docs: int) -> ShardInfo:
    sub = folder / name
    if not sub.is_dir():
        return ShardInfo(name=name, doc_count=listed_docs, present=False)
    info = ShardInfo(name=name, doc_count=listed_docs, present=True, bytes=folder_bytes(sub))
    try:
        m = read_manifest(sub)
    except IndexCorruptError:
        return info
    info.lexical = m.lexical is not None
    if m.doc_count != listed_docs:
        info.live_doc_count = m.doc_count
    return info


def lexical_summary(shards: list[ShardInfo]) -> str:
    with_bm25 = sum(1 for s in shards if s.lexical)
    if with_bm25 == 0:
        return "none"
    if with_bm25 == len(shards):
        return "all shards"
    return f"some shards ({with_bm25} of {len(shards)})"


def read_sharded_info(folder: str | Path) -> ShardedInfo:
    """The summary of a sharded index folder (IndexCorruptError when its sharded manifest is missing or unreadable)."""
    folder = Path(folder)
    manifest = read_sharded_manifest(folder)
    shards = [shard_info(folder, e.name, e.doc_count) for e in manifest.shards]
    return ShardedInfo(
        manifest=manifest,
        shards=shards,
        total_docs=sum(s.live_doc_count if s.live_doc_count is not None else s.doc_count for s in shards),
        total_bytes=sum(s.bytes or 0 for s in shards),
        lexical=lexical_summary(shards),
        missing_shards=[s.name for s in shards if not s.present],
    )


def human_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def summary_rows(info: ShardedInfo) -> list[tuple[str, Any]]:
    """(label, value) lines of `densekit index info --summary` for a sharded folder."""
    m = info.manifest
    rows: list[tuple[str, Any]] = [
        ("kind", f"{m.kind} (sharded)"),
        ("faiss", m.faiss_description),
        ("shards", f"{len(m.shards)} (routing {m.routing.hash})"),
        ("documents", info.total_docs),
        ("bytes on disk", f"{info.total_bytes} ({human_bytes(info.total_bytes)})"),
        ("encoder", f"{m.encoder.name} (dim {m.encoder.dim}, {m.encoder.similarity})"),
        ("trained quantiser sha256", m.trained_sha256),
        ("build time s", m.build_time_s),
        ("build params", json.dumps(m.build_params)),
        ("search params", json.dumps(m.search_params)),
        ("lexical (BM25)", info.lexical),
        ("created", m.created_at),
    ]
    for s in info.shards:
        if not s.present:
            rows.append((f"  {s.name}", f"{s.doc_count} documents, MISSING"))
            continue
        live = f" ({s.live_doc_count} now, after live updates)" if s.live_doc_count is not None else ""
        bm25 = {True: ", BM25", False: "", None: ", manifest unreadable"}[s.lexical]
        rows.append((f"  {s.name}", f"{s.doc_count} documents{live}, {s.bytes} bytes ({human_bytes(s.bytes or 0)}){bm25}"))
    return rows
