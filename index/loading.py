"""Open an index folder of either layout: one index, or a sharded one (sharded_manifest.json)."""

from __future__ import annotations

from pathlib import Path

from densekit.index.dense_index import DenseIndex
from densekit.index.live import LiveIndex
from densekit.index.sharded_index import ShardedIndex, ShardedLiveIndex
from densekit.index.sharded_manifest import is_sharded

AnyIndex = DenseIndex | ShardedIndex
AnyLiveIndex = LiveIndex | ShardedLiveIndex


def open_index(folder: str | Path, verify: bool = True, writable: bool = False) -> AnyIndex:
    """A DenseIndex, or a ShardedIndex when the folder holds a sharded manifest."""
    if is_sharded(folder):
        return ShardedIndex.load(folder, verify=verify, writable=writable)
    return DenseIndex.load(folder, verify=verify, writable=writable)


def open_live_index(
    folder: str | Path, wal_dir: str | Path | None = None, snapshot_every: int = 1000, snapshot_interval_s: float = 300.0
) -> AnyLiveIndex:
    """LiveIndex.open, or its sharded counterpart (one log per shard)."""
    if is_sharded(folder):
        return ShardedLiveIndex.open(folder, wal_dir, snapshot_every, snapshot_interval_s)
    return LiveIndex.open(folder, wal_dir, snapshot_every, snapshot_interval_s)
