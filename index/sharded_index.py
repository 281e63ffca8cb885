"""A sharded index folder served from one process: every shard loaded, every query sent to
all of them, their top-k merged by score. For exact kinds (flat) the merged answer equals one
index over all documents.

ShardedIndex offers DenseIndex's interface (search, documents, docstore.rows_of,
faiss.reconstruct, upsert, remove, to_device, manifest), so the server and evaluation use it
unchanged. Its rows are global: shard s's row r is `r * S + s`, so a row names its shard.
Writes go to the shard that owns the document id (`shard_of`); with live updates each shard
keeps its own write-ahead log (ShardedLiveIndex).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from densekit.errors import ConfigError, DocumentNotFoundError, IndexCorruptError, IndexMismatchError, InvalidInputError
from densekit.index.dense_index import DenseIndex, SearchHit
from densekit.index.filters import Filter
from densekit.index.live import Delete, LiveIndex, Upsert, WriteResult
from densekit.index.manifest import Manifest, read_manifest
from densekit.index.sharded_manifest import ShardedManifest, ShardEntry, read_sharded_manifest, shard_of
from densekit.index.trained_checksum import trained_checksum


def shard_folder(folder: Path, entry: ShardEntry) -> Path:
    """A listed shard's folder; IndexCorruptError when it is not there."""
    sub = folder / entry.name
    if not sub.is_dir():
        raise IndexCorruptError(f"{sub}: shard {entry.name!r} named by the sharded manifest is missing")
    return sub


def check_shard_files(folder: Path, entry: ShardEntry) -> None:
    """A shard that took no live update since the build must be the very folder the build wrote."""
    m = read_manifest(folder)
    if m.extra.get("wal_seq"):
        return  # snapshots since the build: its own manifest's checksums (checked on load) rule
    if m.checksums != entry.checksums:
        raise IndexCorruptError(
            f"{folder}: its files' checksums differ from the sharded manifest's: not the shard this index was built with"
        )


def check_shard_index(folder: Path, index: DenseIndex, sharded: ShardedManifest) -> None:
    """The shard fits the others: same encoder dimension, kind, and trained quantiser."""
    if index.dim != sharded.encoder.dim or index.manifest.kind != sharded.kind:
        raise IndexMismatchError(
            f"{folder}: kind {index.manifest.kind}, dim {index.dim}; the sharded index is kind {sharded.kind}, dim {sharded.encoder.dim}"
        )
    actual = trained_checksum(index.faiss)
    if actual != sharded.trained_sha256:
        raise IndexMismatchError(
            f"{folder}: trained with another quantiser (checksum {actual[:12]}..., the sharded index's is {sharded.trained_sha256[:12]}...)"
        )


def combined_manifest(sharded: ShardedManifest, doc_count: int) -> Manifest:
    """The manifest a sharded index shows as one index (what the server reports and searches by)."""
    return Manifest(
        kind=sharded.kind,
        encoder=sharded.encoder,
        metric=sharded.metric,
        faiss_description=f"{len(sharded.shards)} shards of {sharded.faiss_description}",
        build_params=sharded.build_params,
        search_params=sharded.search_params,
        doc_count=doc_count,
        build_time_s=sharded.build_time_s,
        created_at=sharded.created_at,
        extra={"shards": len(sharded.shards), "trained_sha256": sharded.trained_sha256, "routing": sharded.routing.model_dump()},
    )


class ShardedDocStore:
    """The part of DocStore the server and evaluation read, over all shards, in global rows."""

    def __init__(self, owner: ShardedIndex):
        self._owner = owner

    def rows_of(self, ids: Iterable[str]) -> dict[str, int]:
        n = len(self._owner.shards)
        out: dict[str, int] = {}
        for s, group in self._owner.group_ids(ids).items():
            out.update({d: r * n + s for d, r in self._owner.shards[s].docstore.rows_of(group).items()})
        return out

    def get_by_rows(self, rows: list[int]) -> dict[int, dict]:
        return self._owner.documents(rows)

    def __len__(self) -> int:
        return sum(len(s.docstore) for s in self._owner.shards)


class ShardedVectors:
    """faiss-like access to stored vectors by global row (evaluation reconstructs positives)."""

    def __init__(self, owner: ShardedIndex):
        self._owner = owner

    @property
    def ntotal(self) -> int:
        return len(self._owner)

    def reconstruct(self, row: int) -> np.ndarray:
        shard, local = self._owner.split_row(row)
        return self._owner.shards[shard].faiss.reconstruct(local)


class ShardedIndex:
    """Every shard of a sharded index folder, searched as one index."""

    def __init__(self, shards: list[DenseIndex], sharded: ShardedManifest, folder: Path | None = None):
        self.shards = shards
        self.sharded = sharded
        self.folder = folder
        self.docstore = ShardedDocStore(self)
        self.faiss = ShardedVectors(self)
        self.manifest = combined_manifest(sharded, sum(len(s) for s in shards))

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True, writable: bool = False) -> ShardedIndex:
        folder = Path(folder)
        sharded = read_sharded_manifest(folder)
        shards: list[DenseIndex] = []
        try:
            for entry in sharded.shards:
                sub = shard_folder(folder, entry)
                if verify:
                    check_shard_files(sub, entry)
                index = DenseIndex.load(sub, verify=verify, writable=writable)
                shards.append(index)
                check_shard_index(sub, index, sharded)
        except BaseException:
            for s in shards:
                s.close()
            raise
        return cls(shards, sharded, folder)

    # ---- routing ----------------------------------------------------------------------
    def shard_for(self, doc_id: str) -> int:
        return shard_of(doc_id, len(self.shards))

    def group_ids(self, ids: Iterable[str]) -> dict[int, list[str]]:
        groups: dict[int, list[str]] = defaultdict(list)
        for d in ids:
            groups[self.shard_for(d)].append(d)
        return groups

    def split_row(self, row: int) -> tuple[int, int]:
        """(shard, row within the shard) of a global row."""
        return row % len(self.shards), row // len(self.shards)

    # ---- DenseIndex's interface --------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.manifest.encoder.dim

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def search(
        self, queries: np.ndarray, top_k: int, params: dict[str, Any] | None = None, where: Filter | None = None
    ) -> list[list[SearchHit]]:
        """Each shard's top_k, merged: the best top_k by score over all shards (ties keep shard order)."""
        n = len(self.shards)
        per_shard = [s.search(queries, top_k, params, where) for s in self.shards]
        out = []
        for q in range(len(queries)):
            merged = [SearchHit(h.id, h.score, h.row * n + s) for s, res in enumerate(per_shard) for h in res[q]]
            merged.sort(key=lambda h: -h.score)
            out.append(merged[:top_k])
        return out

    def documents(self, rows: list[int]) -> dict[int, dict]:
        by_shard: dict[int, list[int]] = defaultdict(list)
        for row in rows:
            s, local = self.split_row(row)
            by_shard[s].append(local)
        n = len(self.shards)
        out: dict[int, dict] = {}
        for s, local_rows in by_shard.items():
            out.update({r * n + s: doc for r, doc in self.shards[s].documents(local_rows).items()})
        return out

    @property
    def has_lexical(self) -> bool:
        return False

    def lexical_rows(self) -> set[int] | None:
        return None

    def lexical_search(self, queries: list[str], top_k: int, where: Filter | None = None) -> list[list[SearchHit]]:
        # BM25 scores of separately built shards are not comparable (each has its own idf).
        raise ConfigError(
            "mode", "a sharded index has no lexical (BM25) part; lexical and hybrid search need an unsharded index built with --lexical"
        )

    def to_device(self, faiss_device: str | None = "auto", device: str = "cpu") -> str:
        places = {s.to_device(faiss_device, device) for s in self.shards}
        return ",".join(sorted(places))

    @property
    def search_device(self) -> str:
        return ",".join(sorted({s.search_device for s in self.shards}))

    def upsert(self, docs: list[dict], vectors: np.ndarray) -> None:
        """Each document to the shard that owns its id."""
        vectors = np.asarray(vectors, dtype=np.float32)
        by_shard: dict[int, list[int]] = defaultdict(list)
        for i, d in enumerate(docs):
            by_shard[self.shard_for(d["id"])].append(i)
        for s, idxs in by_shard.items():
            self.shards[s].upsert([docs[i] for i in idxs], vectors[idxs])
        self.manifest.doc_count = len(self)

    def remove(self, doc_ids: list[str]) -> int:
        removed = sum(self.shards[s].remove(group) for s, group in self.group_ids(doc_ids).items())
        self.manifest.doc_count = len(self)
        return removed

    def close(self) -> None:
        for s in self.shards:
            s.close()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ShardedLiveIndex:
    """Live updates of a sharded index: one LiveIndex (and write-ahead log) per shard, each
    write routed to the shards that own its documents. A write whose documents span shards is
    checked on every shard before any of it is logged, then each shard logs its part."""

    def __init__(self, lives: list[LiveIndex], index: ShardedIndex):
        self.lives = lives
        self.index = index
        self.folder = index.folder

    @classmethod
    def open(
        cls, folder: str | Path, wal_dir: str | Path | None = None, snapshot_every: int = 1000, snapshot_interval_s: float = 300.0
    ) -> ShardedLiveIndex:
        """Each shard's log is `<shard>.wal/` beside it, or `<wal_dir>/<shard>/` when `wal_dir` is given."""
        folder = Path(folder)
        sharded = read_sharded_manifest(folder)
        lives: list[LiveIndex] = []
        try:
            for entry in sharded.shards:
                sub = shard_folder(folder, entry)
                check_shard_files(sub, entry)
                live = LiveIndex.open(sub, Path(wal_dir) / entry.name if wal_dir else None, snapshot_every, snapshot_interval_s)
                lives.append(live)
                check_shard_index(sub, live.index, sharded)
        except BaseException:
            for live in lives:
                live.close(snapshot=False)
            raise
        return cls(lives, ShardedIndex([live.index for live in lives], sharded, folder))

    @property
    def accepts_removal(self) -> bool:
        return all(live.accepts_removal for live in self.lives)

    @property
    def failed(self) -> str | None:
        return next((live.failed for live in self.lives if live.failed), None)

    def _split(self, op: Upsert | Delete) -> dict[int, Upsert | Delete]:
        if isinstance(op, Upsert):
            by_shard: dict[int, list[int]] = defaultdict(list)
            for i, d in enumerate(op.docs):
                by_shard[self.index.shard_for(d["id"])].append(i)
            vectors = np.asarray(op.vectors)
            return {s: Upsert([op.docs[i] for i in idxs], vectors[idxs]) for s, idxs in by_shard.items()}
        return {s: Delete(group) for s, group in self.index.group_ids(op.ids).items()}

    def _precheck(self, parts: dict[int, Upsert | Delete]) -> dict[int, Upsert | Delete]:
        """The parts to log, once every shard has accepted its own; raises the first refusal.
        A delete names documents that may live in only some of its shards: those parts drop out."""
        if isinstance(next(iter(parts.values())), Delete):
            present: dict[int, Upsert | Delete] = {
                s: p for s, p in parts.items() if isinstance(p, Delete) and self.lives[s].index.docstore.rows_of(p.ids)
            }
            if not present:
                ids = [i for p in parts.values() if isinstance(p, Delete) for i in p.ids]
                raise DocumentNotFoundError(f"no document with id {', '.join(map(repr, ids[:5]))}")
            parts = present
        for s, part in parts.items():
            self.lives[s]._check(part)
        return parts

    def write(self, ops: list[Upsert | Delete]) -> list[WriteResult | Exception]:
        """LiveIndex.write over the shards: one group commit per shard for the whole batch."""
        results: list[WriteResult | Exception | None] = [None] * len(ops)
        queued: dict[int, list[tuple[int, Upsert | Delete]]] = defaultdict(list)
        for i, op in enumerate(ops):
            parts = self._split(op)
            if len(parts) > 1:
                try:
                    parts = self._precheck(parts)
                except (InvalidInputError, DocumentNotFoundError) as exc:
                    results[i] = exc
                    continue
            for s, part in parts.items():
                queued[s].append((i, part))
        done: dict[int, list[WriteResult | Exception]] = defaultdict(list)
        for s, items in queued.items():
            for (i, _), res in zip(items, self.lives[s].write([part for _, part in items])):
                done[i].append(res)
        for i, parts_done in done.items():
            err = next((r for r in parts_done if isinstance(r, Exception)), None)
            ok = [r for r in parts_done if isinstance(r, WriteResult)]
            results[i] = err if err is not None else WriteResult(max(r.seq for r in ok), sum(r.count for r in ok))
        self.index.manifest.doc_count = len(self.index)
        return [r if r is not None else InvalidInputError("empty write") for r in results]

    def snapshot_due(self) -> bool:
        return any(live.snapshot_due() for live in self.lives)

    def snapshot_in_background(self) -> bool:
        return any([live.snapshot_in_background() for live in self.lives if live.snapshot_due()])

    def snapshot(self) -> bool:
        return any([live.snapshot() for live in self.lives])

    def wait_for_snapshot(self, timeout: float | None = None) -> None:
        for live in self.lives:
            live.wait_for_snapshot(timeout)

    def check_consistent(self) -> None:
        for live in self.lives:
            live.check_consistent()

    def info(self) -> dict:
        shards = [live.info() for live in self.lives]
        return {
            "wal_dir": str(self.lives[0].wal_dir.parent) if self.lives else "",
            "accepts_removal": self.accepts_removal,
            "log_seq": sum(i["log_seq"] for i in shards),
            "snapshot_seq": sum(i["snapshot_seq"] for i in shards),
            "records_since_snapshot": sum(i["records_since_snapshot"] for i in shards),
            "failed": self.failed,
        }

    def close(self, snapshot: bool = True) -> None:
        for live in self.lives:
            live.close(snapshot=snapshot)
