"""Crash-safe live updates of an index folder: a write-ahead log plus periodic snapshots.

The index folder on disk is only ever replaced whole (`DenseIndex.save` writes a temporary
sibling and renames it), so it is always a consistent snapshot of faiss vectors and
documents. Every acknowledged upsert or delete after that snapshot lives in the write-ahead
log (WAL), fsynced before the caller is told "done". On open, the snapshot is loaded and the
log replayed on top, so a `kill -9` at any instant loses no acknowledged write and never
leaves the faiss index and the document store disagreeing: in memory they are changed
together under one lock, and on disk they only exist together, inside a snapshot.

Layout of the log folder (default `<index>.wal/`, beside the index so that a snapshot's
rename never touches it)::

    LOCK                         flock: one writer process per index
    wal-<first seq>.log          frames: b"DKW1" | u32 length | u32 crc32 | payload
    docstore.work.sqlite         working copy of the document store (rebuilt at each open)

A payload is a u32 header length, a JSON header ({seq, op, docs | ids, n, dim}) and, for
upserts, the document vectors as raw little-endian float32, so replay needs no encoder and
gives bit-identical vectors. The snapshot's manifest records the last sequence number it
contains (`extra.wal_seq`); replay skips records up to it.

A frame cut short by a crash (its length runs past the end of the file, or its checksum fails
on the file's last frame) was never acknowledged and is dropped; a bad frame followed by good
ones is corruption and is refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from densekit.errors import ConfigError, DocumentNotFoundError, IndexCorruptError, InvalidInputError
from densekit.index.dense_index import DenseIndex, FrozenIndex
from densekit.index.docstore import DocStore
from densekit.index.faiss_kinds import ivf_of
from densekit.index.manifest import read_manifest

log = logging.getLogger(__name__)

MAGIC = b"DKW1"
_FRAME = struct.Struct("<4sII")  # magic, payload length, crc32
_U32 = struct.Struct("<I")
WORK_DOCSTORE = "docstore.work.sqlite"
LOCK_FILE = "LOCK"


def default_wal_dir(index_dir: Path) -> Path:
    index_dir = Path(index_dir)
    return index_dir.parent / f"{index_dir.name}.wal"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- operations -------------------------------------------------------------------------
@dataclass
class Upsert:
    """Add or replace documents ({id, title, text, metadata}) with their vectors."""

    docs: list[dict]
    vectors: np.ndarray


@dataclass
class Delete:
    ids: list[str]


@dataclass
class WriteResult:
    seq: int
    count: int  # documents written or removed


def _encode_record(seq: int, op: Upsert | Delete) -> bytes:
    """One log frame; InvalidInputError when the operation's documents cannot be written as
    UTF-8 JSON (a lone surrogate, a non-JSON value, nesting past the stack)."""
    try:
        return _frame(seq, op)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidInputError(f"the write cannot be logged as UTF-8 JSON: {exc}") from None


def _frame(seq: int, op: Upsert | Delete) -> bytes:
    if isinstance(op, Upsert):
        vec = np.ascontiguousarray(op.vectors, dtype="<f4")
        header = {"seq": seq, "op": "upsert", "docs": op.docs, "n": int(vec.shape[0]), "dim": int(vec.shape[1])}
        body = vec.tobytes()
    else:
        header = {"seq": seq, "op": "delete", "ids": list(op.ids)}
        body = b""
    hjson = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    payload = _U32.pack(len(hjson)) + hjson + body
    return _FRAME.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> tuple[int, Upsert | Delete]:
    (hlen,) = _U32.unpack_from(payload, 0)
    header = json.loads(payload[4 : 4 + hlen].decode("utf-8"))
    if header["op"] == "upsert":
        vec = np.frombuffer(payload[4 + hlen :], dtype="<f4").reshape(header["n"], header["dim"]).astype(np.float32)
        return int(header["seq"]), Upsert(header["docs"], vec)
    return int(header["seq"]), Delete(header["ids"])


def read_segment(path: Path) -> tuple[list[tuple[int, Upsert | Delete]], int]:
    """All complete records of one log file and the byte offset where the good data ends."""
    data = path.read_bytes()
    records: list[tuple[int, Upsert | Delete]] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < _FRAME.size:
            break  # torn header at the tail
        magic, length, crc = _FRAME.unpack_from(data, pos)
        end = pos + _FRAME.size + length
        if magic != MAGIC or end > len(data) or zlib.crc32(data[pos + _FRAME.size : end]) != crc:
            if magic == MAGIC and end >= len(data):
                break  # the last frame was cut short by a crash: never acknowledged
            raise IndexCorruptError(f"{path}: write-ahead log record at byte {pos} is corrupt and is not the last one")
        try:
            records.append(_decode_payload(data[pos + _FRAME.size : end]))
        except (ValueError, KeyError, UnicodeDecodeError) as exc:
            raise IndexCorruptError(f"{path}: write-ahead log record at byte {pos} cannot be decoded ({exc})") from None
        pos = end
    return records, pos


def _segment_first_seq(path: Path) -> int:
    return int(path.stem.split("-", 1)[1])


def _segments(wal_dir: Path) -> list[Path]:
    return sorted(wal_dir.glob("wal-*.log"), key=_segment_first_seq)


# ---- recovery of an interrupted snapshot rename ---------------------------------------
def recover_folder(folder: Path) -> None:
    """`atomic_dir` moves the old folder aside, then renames the new one in. A crash between
    the two renames leaves only `.<name>.old-<pid>`: put it back (the log still holds every
    record after it, because segments are deleted only after a snapshot is complete). Then
    remove what other crashes leave: half-written temp folders and already-replaced olds.
    Only the process holding the log's lock calls this, so nobody else is writing them."""
    olds = sorted(folder.parent.glob(f".{folder.name}.old-*"), key=lambda p: p.stat().st_mtime, reverse=True)
    if not folder.exists() and olds:
        log.warning("index folder %s missing after an interrupted snapshot; restoring %s", folder, olds[0])
        os.replace(olds[0], folder)
        _fsync_dir(folder.parent)
        olds = olds[1:]
    for stale in [*folder.parent.glob(f".{folder.name}.*.tmp"), *olds]:
        shutil.rmtree(stale, ignore_errors=True)


def check_index_folder(folder: Path) -> None:
    """Raise IndexCorruptError unless `folder` is an index folder, or one whose snapshot rename
    was interrupted (recover_folder puts it back). Creates nothing."""
    if not folder.exists() and any(folder.parent.glob(f".{folder.name}.old-*")):
        return
    read_manifest(folder)


def accepts_removal(index: faiss.Index) -> bool:
    """Whether faiss can remove ids from this index (flat, IVF, PQ yes; HNSW, NSG no).

    Probed by removing an id that cannot exist: supported kinds remove nothing, the others
    raise, whatever wrappers (IDMap, pre-transform, refine) sit around them."""
    try:
        index.remove_ids(np.array([-(2**62)], dtype=np.int64))
    except RuntimeError:
        return False
    return True


@dataclass
class PendingSnapshot:
    """A snapshot between its copy (begin_snapshot) and its write (finish_snapshot)."""

    seq: int  # last log record it contains
    records: int  # log records it covers that no earlier snapshot did
    old_segments: list[Path]  # log segments it makes redundant once written
    frozen: FrozenIndex
    copy_s: float


@dataclass
class LiveStats:
    seq: int = 0
    snapshot_seq: int = 0
    records_since_snapshot: int = 0
    last_snapshot_at: float = field(default_factory=time.monotonic)
    snapshots: int = 0
    replayed: int = 0


class LiveIndex:
    """A DenseIndex that accepts upserts and deletes durably. Not thread-safe by itself: the
    service calls it from one index thread (reads and writes alike). Only the writing of a
    snapshot's files runs on a thread of its own, from an in-memory copy, so that searches
    never wait for the disk (snapshot_in_background)."""

    def __init__(
        self, index: DenseIndex, folder: Path, wal_dir: Path, lock_fd: int, snapshot_every: int = 1000, snapshot_interval_s: float = 300.0
    ):
        self.index = index
        self.folder = Path(folder)
        self.wal_dir = Path(wal_dir)
        self._lock_fd: int | None = lock_fd
        self.snapshot_every = snapshot_every
        self.snapshot_interval_s = snapshot_interval_s
        self.stats = LiveStats()
        self.accepts_removal = accepts_removal(index.faiss)
        self._segment: Any = None
        self._mutex = threading.RLock()
        self.failed: str | None = None  # set when the log cannot be written: writes stop
        self._snapshot_running = False
        self._snapshot_thread: threading.Thread | None = None
        # Called on the snapshot-writing thread before it writes (tests use it to slow a snapshot down).
        self.snapshot_hook: Callable[[], None] | None = None

    # ---- open ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls, folder: str | Path, wal_dir: str | Path | None = None, snapshot_every: int = 1000, snapshot_interval_s: float = 300.0
    ) -> LiveIndex:
        folder = Path(folder)
        wal_dir = Path(wal_dir) if wal_dir else default_wal_dir(folder)
        check_index_folder(folder)  # before creating anything: a mistyped path leaves no trace
        wal_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = os.open(wal_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise ConfigError(
                "wal_dir", f"{wal_dir} is locked by another densekit process; one writer per index (use --workers 1, or --read-only)"
            ) from None
        try:
            recover_folder(folder)
            index = DenseIndex.load(folder)
            work = wal_dir / WORK_DOCSTORE
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(work) + suffix).unlink(missing_ok=True)
            # The snapshot's store stays untouched (its checksum must hold); writes go to a
            # copy that is rebuilt from snapshot + log at every open, so it needs no fsync.
            dst = sqlite3.connect(work)
            index.docstore.conn.backup(dst)
            dst.close()
            index.docstore.close()
            index.docstore = DocStore(work)
            index.docstore.conn.execute("PRAGMA synchronous=OFF")
            self = cls(index, folder, wal_dir, lock_fd, snapshot_every, snapshot_interval_s)
            self._replay()
        except BaseException:
            os.close(lock_fd)
            raise
        return self

    def _replay(self) -> None:
        base = int(self.index.manifest.extra.get("wal_seq", 0))
        self.stats.seq = self.stats.snapshot_seq = base
        segments = _segments(self.wal_dir)
        last_good_end = 0
        for i, seg in enumerate(segments):
            records, good_end = read_segment(seg)
            if i == len(segments) - 1:
                last_good_end = good_end
            elif good_end != seg.stat().st_size:
                raise IndexCorruptError(f"{seg}: damaged write-ahead log segment that is not the last one")
            for seq, op in records:
                if seq <= base:
                    continue
                if seq != self.stats.seq + 1:
                    raise IndexCorruptError(f"{seg}: write-ahead log jumps from record {self.stats.seq} to {seq}")
                self._apply(op)
                self.stats.seq = seq
                self.stats.replayed += 1
        self.stats.records_since_snapshot = self.stats.seq - base
        if segments:
            last = segments[-1]
            if last_good_end != last.stat().st_size:
                log.warning(
                    "dropping %d bytes of an unacknowledged, cut-short record at the end of %s", last.stat().st_size - last_good_end, last
                )
                with open(last, "r+b") as fh:
                    fh.truncate(last_good_end)
                    os.fsync(fh.fileno())
            self._segment = open(last, "ab")
        else:
            self._new_segment()
        if self.stats.replayed:
            log.info("replayed %d write-ahead log records over the snapshot of %s", self.stats.replayed, self.folder)
        self.check_consistent()

    # ---- writes -------------------------------------------------------------------------
    def _new_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
        path = self.wal_dir / f"wal-{self.stats.seq + 1:020d}.log"
        self._segment = open(path, "ab")
        _fsync_dir(self.wal_dir)

    def _apply(self, op: Upsert | Delete) -> int:
        if isinstance(op, Upsert):
            self.index.upsert(op.docs, op.vectors)
            return len(op.docs)
        return self.index.remove(op.ids)

    def _check(self, op: Upsert | Delete) -> None:
        """Refuse an operation before it reaches the log, so the log only holds writes that
        replay will accept."""
        if isinstance(op, Upsert):
            ids = [d["id"] for d in op.docs]
            if len(set(ids)) != len(ids):
                raise InvalidInputError("documents: the same id appears twice in one request")
            if op.vectors.shape != (len(ids), self.index.dim):
                raise InvalidInputError(
                    f"{op.vectors.shape[0]} vectors of dim {op.vectors.shape[1] if op.vectors.ndim == 2 else '?'} for {len(ids)} documents of dim {self.index.dim}"
                )
            if not self.accepts_removal and self.index.docstore.rows_of(ids):
                raise InvalidInputError(
                    f"a '{self.index.manifest.kind}' index cannot replace documents (faiss cannot remove from it); use new ids or an index of kind flat/ivf/ivfpq"
                )
        else:
            if not self.index.docstore.rows_of(op.ids):
                raise DocumentNotFoundError(f"no document with id {', '.join(map(repr, op.ids[:5]))}")
            if not self.accepts_removal:
                raise InvalidInputError(f"a '{self.index.manifest.kind}' index cannot remove documents (faiss cannot remove from it)")

    def write(self, ops: list[Upsert | Delete]) -> list[WriteResult | Exception]:
        """Apply operations in order with one fsync for all of them (group commit). Each
        result is a WriteResult, or the error that refused that operation (nothing of it
        was written). When this returns, every WriteResult is durable."""
        with self._mutex:
            if self.failed:
                err = IndexCorruptError(f"live updates are stopped: {self.failed}")
                return [err for _ in ops]
            out: list[WriteResult | Exception] = []
            logged = False
            try:
                for op in ops:
                    seq = self.stats.seq + 1
                    try:
                        self._check(op)
                        # Encoded before anything is applied: an operation that cannot be
                        # logged is refused alone, and the others of the batch go on.
                        record = _encode_record(seq, op)
                    except (InvalidInputError, DocumentNotFoundError) as exc:
                        out.append(exc)
                        continue
                    try:
                        count = self._apply(op)
                    except Exception as exc:
                        # Half-applied in memory: refuse further writes rather than risk
                        # acknowledging a state the log cannot reproduce.
                        self.failed = f"applying record {seq} failed: {exc}"
                        log.critical(self.failed)
                        raise OSError(self.failed) from exc
                    # Nothing is acknowledged or visible to readers before the fsync below
                    # (readers share this thread), so logging after applying is safe.
                    self._segment.write(record)
                    logged = True
                    self.stats.seq = seq
                    self.stats.records_since_snapshot += 1
                    out.append(WriteResult(seq, count))
                if logged:
                    self._segment.flush()
                    os.fsync(self._segment.fileno())
            except OSError as exc:
                # Memory may now hold writes the disk does not: stop accepting writes rather
                # than acknowledge anything that a restart would lose.
                self.failed = self.failed or f"write-ahead log write failed: {exc}"
                log.critical(self.failed)
                err = IndexCorruptError(self.failed)
                failed: list[WriteResult | Exception] = [err if isinstance(r, WriteResult) else r for r in out]
                return failed + [err] * (len(ops) - len(out))
            return out

    # ---- snapshots ----------------------------------------------------------------------
    def snapshot_due(self) -> bool:
        s = self.stats
        if s.records_since_snapshot == 0 or self._snapshot_running:
            return False
        return s.records_since_snapshot >= self.snapshot_every or time.monotonic() - s.last_snapshot_at >= self.snapshot_interval_s

    def begin_snapshot(self) -> PendingSnapshot | None:
        """The short part of a snapshot, on the thread that owns the index: start a fresh log
        segment and copy the index in memory (DenseIndex.freeze). None when there is nothing
        new, writes have failed, or a snapshot is already being written."""
        with self._mutex:
            if self.stats.records_since_snapshot == 0 or self.failed or self._snapshot_running:
                return None
            t0 = time.perf_counter()
            # A fresh segment first: a crash at any later point leaves the old snapshot plus
            # all old segments, which replay to the same state.
            old_segments = _segments(self.wal_dir)
            self._new_segment()
            self.index.manifest.extra["wal_seq"] = self.stats.seq
            frozen = self.index.freeze()
            self._snapshot_running = True
            return PendingSnapshot(self.stats.seq, self.stats.records_since_snapshot, old_segments, frozen, time.perf_counter() - t0)

    def finish_snapshot(self, pending: PendingSnapshot) -> bool:
        """The long part, on any thread: write the copy as the index folder (atomic), then drop
        the log segments it covers. Searches and writes go on meanwhile; writes land in the
        new segment, so nothing acknowledged is lost whenever a crash comes."""
        try:
            if self.snapshot_hook is not None:
                self.snapshot_hook()
            t0 = time.perf_counter()
            pending.frozen.write(self.folder)
            for seg in pending.old_segments:
                seg.unlink(missing_ok=True)
            _fsync_dir(self.wal_dir)
            with self._mutex:
                self.stats.snapshot_seq = pending.seq
                self.stats.records_since_snapshot -= pending.records
                self.stats.last_snapshot_at = time.monotonic()
                self.stats.snapshots += 1
            log.info(
                "snapshot of %s at log record %d: %.1f ms copying on the index thread, %.1f ms writing",
                self.folder,
                pending.seq,
                pending.copy_s * 1000,
                (time.perf_counter() - t0) * 1000,
            )
            return True
        finally:
            pending.frozen.docstore.close()
            with self._mutex:
                self._snapshot_running = False

    def snapshot(self) -> bool:
        """Snapshot now and wait for it (after any snapshot already being written). Returns
        False when there was nothing new."""
        self.wait_for_snapshot()
        pending = self.begin_snapshot()
        return self.finish_snapshot(pending) if pending is not None else False

    def snapshot_in_background(self) -> bool:
        """Copy the index now, write it on a thread of its own; True when one was started."""
        pending = self.begin_snapshot()
        if pending is None:
            return False
        self._snapshot_thread = threading.Thread(target=self._write_in_background, args=(pending,), name="densekit-snapshot", daemon=True)
        self._snapshot_thread.start()
        return True

    def _write_in_background(self, pending: PendingSnapshot) -> None:
        try:
            self.finish_snapshot(pending)
        except Exception:  # the log still holds every record; the next snapshot tries again
            log.exception("snapshot of %s failed", self.folder)

    def wait_for_snapshot(self, timeout: float | None = None) -> None:
        """Wait for a snapshot being written in the background, if any."""
        thread = self._snapshot_thread
        if thread is not None:
            thread.join(timeout)

    # ---- checks and shutdown ------------------------------------------------------------
    def check_consistent(self) -> None:
        """faiss ids, document-store rows and the lexical part's rows (if any) must be the same set."""
        rows = set(self.index.docstore.row_to_id())
        ids = faiss_ids(self.index.faiss)
        if ids is not None and ids != rows:
            raise IndexCorruptError(
                f"{self.folder}: faiss holds {len(ids)} ids, the document store {len(rows)} rows, {len(ids ^ rows)} differ"
            )
        if ids is None and len(rows) != self.index.faiss.ntotal:
            raise IndexCorruptError(
                f"{self.folder}: faiss holds {self.index.faiss.ntotal} vectors, the document store {len(rows)} documents"
            )
        lexical = self.index.lexical_rows()
        if lexical is not None and lexical != rows:
            raise IndexCorruptError(f"{self.folder}: the lexical index holds {len(lexical)} rows, the document store {len(rows)}")

    def info(self) -> dict:
        s = self.stats
        return {
            "wal_dir": str(self.wal_dir),
            "accepts_removal": self.accepts_removal,
            "log_seq": s.seq,
            "snapshot_seq": s.snapshot_seq,
            "records_since_snapshot": s.records_since_snapshot,
            "failed": self.failed,
        }

    def close(self, snapshot: bool = True) -> None:
        self.wait_for_snapshot()
        with self._mutex:
            if snapshot:
                try:
                    self.snapshot()
                except Exception:  # the log still holds everything; the next open replays it
                    log.exception("final snapshot failed")
            if self._segment is not None:
                self._segment.close()
                self._segment = None
            self.index.docstore.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def faiss_ids(index: faiss.Index) -> set[int] | None:
    """The ids an IDMap-wrapped index holds (None when the index keeps no id map)."""
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexIDMap):
        return {int(x) for x in faiss.vector_to_array(outer.id_map)}
    ivf = ivf_of(index)
    if ivf is None:
        return None
    invlists = ivf.invlists
    out: set[int] = set()
    for lst in range(ivf.nlist):
        n = invlists.list_size(lst)
        if n:
            out.update(int(x) for x in faiss.rev_swig_ptr(invlists.get_ids(lst), n))
    return out


def iter_records(wal_dir: Path) -> Iterator[tuple[int, Upsert | Delete]]:
    """Every record in a log folder, in order (for inspection and tests)."""
    for seg in _segments(Path(wal_dir)):
        yield from read_segment(seg)[0]
