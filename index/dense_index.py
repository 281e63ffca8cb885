"""DenseIndex: a faiss index, its document store and manifest, behind a small interface
(build, add, remove, search, save, load) so other backends can stand in later."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from densekit.atomic import atomic_dir, write_json_atomic
from densekit.data.beir import Corpus, document_text
from densekit.errors import IndexCorruptError, IndexMismatchError, InvalidInputError
from densekit.index import faiss_kinds
from densekit.index.docstore import DocStore
from densekit.index.filters import Filter, to_sql
from densekit.index.lexical import FILES as LEXICAL_FILES
from densekit.index.lexical import LexicalIndex, build_from_sqlite
from densekit.index.manifest import (
    DOCSTORE_FILE,
    INDEX_FILE,
    MANIFEST,
    EncoderSpec,
    LexicalSpec,
    Manifest,
    read_manifest,
    sha256_file,
    verify_checksums,
)

if TYPE_CHECKING:
    from densekit.index.gpu import GpuIndex


@dataclass
class SearchHit:
    id: str
    score: float
    row: int


def _remove_temp_store(store: DocStore, folder: Path) -> None:
    store.close()
    shutil.rmtree(folder, ignore_errors=True)


class DenseIndex:
    """A faiss index with its document store and manifest. An index built in memory keeps its
    document store in a temporary folder that `close()` removes (as does garbage collection
    or interpreter exit, for an index nobody closed); use it as a context manager to be sure."""

    def __init__(
        self,
        faiss_index: faiss.Index,
        docstore: DocStore,
        manifest: Manifest,
        folder: Path | None = None,
        temp_dir: Path | None = None,
        lexical: LexicalIndex | None = None,
    ):
        self.faiss = faiss_index
        self.docstore = docstore
        self.manifest = manifest
        self.folder = folder
        self._row_to_id = docstore.row_to_id()
        self._lock = threading.RLock()
        # The BM25 part (manifest.lexical); rebuilt from the document store at the first
        # lexical search after an update (densekit.index.lexical explains why).
        self._lexical = lexical
        self._lexical_stale = False
        # GPU copy that serves searches (to_device); the CPU index stays the one updated and saved.
        self._gpu: GpuIndex | None = None
        self._gpu_request: tuple[str | None, str] | None = None
        self._gpu_stale = False
        # The finalizer holds the store and folder, not the index, so it can run when the index dies.
        self._release_temp = weakref.finalize(self, _remove_temp_store, docstore, temp_dir) if temp_dir is not None else None

    @property
    def temp_dir(self) -> Path | None:
        """The temporary folder of an in-memory index's document store (None once closed, or when loaded)."""
        pending = self._release_temp.peek() if self._release_temp is not None else None
        return pending[2][1] if pending is not None else None

    def close(self) -> None:
        """Close the document store and remove a temporary one; the index is unusable afterwards."""
        with self._lock:
            self._gpu, self._gpu_request = None, None
            self.docstore.close()
            if self._release_temp is not None:
                self._release_temp()

    def __enter__(self) -> DenseIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- construction -------------------------------------------------------------
    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        corpus: Corpus,
        doc_ids: Sequence[str],
        encoder_spec: EncoderSpec,
        kind: str = "flat",
        build_params: dict[str, Any] | None = None,
        search_params: dict[str, Any] | None = None,
        docstore_path: Path | None = None,
        trained_index: faiss.Index | None = None,
        lexical: bool | LexicalSpec = False,
    ) -> DenseIndex:
        """Index `vectors` (row i is document doc_ids[i]); the docstore goes to a temp file
        unless `docstore_path` is given, and moves with `save`. `trained_index` is an empty,
        already trained faiss index to fill instead of training one (Distill-VQ's export).
        `lexical` (True or a LexicalSpec) also builds the BM25 part over the same rows."""
        if vectors.shape[0] != len(doc_ids):
            raise InvalidInputError(f"{vectors.shape[0]} vectors for {len(doc_ids)} documents")
        if vectors.ndim != 2 or vectors.shape[1] != encoder_spec.dim:
            raise IndexMismatchError(f"vectors have shape {vectors.shape}, encoder dim is {encoder_spec.dim}")
        missing = [d for d in doc_ids if d not in corpus]
        if missing:
            raise InvalidInputError(f"{len(missing)} document ids are not in the corpus, e.g. {missing[0]!r}")
        metric = faiss_kinds.metric_of(encoder_spec.similarity)
        # Parameters are checked before any training, so a typo fails in milliseconds.
        resolved_build = faiss_kinds.parse_build_params(kind, build_params).model_dump(exclude_none=True)
        if kind in faiss_kinds.IVF_KINDS:
            resolved_build["nlist"] = faiss_kinds.resolved_nlist(build_params, len(doc_ids))
        resolved_search = {
            **faiss_kinds.default_search_params(kind, resolved_build, len(doc_ids)),
            **faiss_kinds.parse_search_params(kind, search_params),
        }
        t0 = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if trained_index is not None:
            index = trained_index
        else:
            index = faiss_kinds.make_index(kind, encoder_spec.dim, resolved_build, metric, n_train=len(doc_ids))
            faiss_kinds.train_index(index, vectors, resolved_build)
        rows = np.arange(len(doc_ids), dtype=np.int64)
        index.add_with_ids(vectors, rows)
        faiss_kinds.apply_defaults(index, resolved_search)
        build_time = time.perf_counter() - t0
        temp_dir = None
        if docstore_path is None:
            temp_dir = Path(tempfile.mkdtemp(prefix="densekit-docstore-"))
            docstore_path = temp_dir / DOCSTORE_FILE
        try:
            store = DocStore(docstore_path)
            try:
                store.add_many(
                    (int(r), d, corpus[d].get("title", ""), corpus[d].get("text", ""), corpus[d].get("metadata"))  # type: ignore[misc]
                    for r, d in zip(rows, doc_ids)
                )
            except BaseException:
                store.close()
                raise
            manifest = Manifest(
                kind=kind,
                encoder=encoder_spec,
                metric=faiss_kinds.metric_name(index.metric_type),
                faiss_description=faiss_kinds.describe(index),
                build_params=resolved_build,
                search_params=resolved_search,
                doc_count=len(doc_ids),
                bytes_per_vector=faiss_kinds.bytes_per_vector(index, encoder_spec.dim),
                build_time_s=round(build_time, 4),
                created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                extra={"index_bytes_per_vector": faiss_kinds.index_bytes_per_vector(index)},
            )
            lexical_index = None
            if lexical:
                spec = lexical if isinstance(lexical, LexicalSpec) else LexicalSpec()
                t1 = time.perf_counter()
                lexical_index = LexicalIndex.build(((int(r), document_text(corpus[d])) for r, d in zip(rows, doc_ids)), spec)
                manifest.lexical = spec.model_copy(update={"files": list(LEXICAL_FILES)})
                manifest.search_mode = "hybrid"
                manifest.extra["lexical_build_s"] = round(time.perf_counter() - t1, 4)
        except BaseException:
            if temp_dir is not None:
                shutil.rmtree(temp_dir, ignore_errors=True)
            raise
        return cls(index, store, manifest, temp_dir=temp_dir, lexical=lexical_index)

    # ---- persistence --------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the folder atomically: temp sibling, then rename over any old one."""
        folder = Path(folder)
        with self._lock:
            self.manifest.doc_count = int(self.faiss.ntotal)
            self.manifest.checksums = write_folder(
                folder, lambda path: faiss.write_index(self.faiss, str(path)), self.docstore.conn, self.manifest, self.lexical_index()
            )
        self.folder = folder
        return folder

    def freeze(self) -> FrozenIndex:
        """A point-in-time copy in memory (serialised faiss index, document store, manifest)
        that can be written to a folder on another thread while this index keeps serving."""
        with self._lock:
            faiss_bytes = faiss.serialize_index(self.faiss)
            docstore = sqlite3.connect(":memory:", check_same_thread=False)
            self.docstore.conn.backup(docstore)
            manifest = self.manifest.model_copy(deep=True)
            manifest.doc_count = int(self.faiss.ntotal)
            # A current lexical index is immutable, so the copy may share it; a stale one is
            # rebuilt from the copied document store when the copy is written, off this thread.
            lexical = self._lexical if not self._lexical_stale else None
        return FrozenIndex(faiss_bytes, docstore, manifest, lexical)

    @classmethod
    def load(cls, folder: str | Path, verify: bool = True, expected_dim: int | None = None, writable: bool = False) -> DenseIndex:
        """Open an index folder. Read-only by default: opening SQLite for writing changes the
        file (journal mode), which would break its checksum for the next reader."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if verify:
            verify_checksums(folder, manifest)
        if expected_dim is not None and expected_dim != manifest.encoder.dim:
            raise IndexMismatchError(f"{folder}: index dim {manifest.encoder.dim}, encoder dim {expected_dim}")
        try:
            index = faiss.read_index(str(folder / INDEX_FILE))
        except RuntimeError as exc:
            raise IndexCorruptError(f"{folder / INDEX_FILE}: faiss cannot read it ({str(exc).splitlines()[0]})") from None
        if index.d != manifest.encoder.dim:
            raise IndexMismatchError(f"{folder}: faiss index dim {index.d} != manifest dim {manifest.encoder.dim}")
        faiss_kinds.check_metric(index, manifest.metric, manifest.encoder.similarity, str(folder))
        store = DocStore(folder / DOCSTORE_FILE, readonly=not writable)
        if index.ntotal != len(store):
            raise IndexCorruptError(f"{folder}: faiss holds {index.ntotal} vectors, document store {len(store)} documents")
        lexical = None
        if manifest.lexical is not None:
            lexical = LexicalIndex.load(folder, manifest.lexical)
            if set(lexical.rows.tolist()) != set(store.row_to_id()):
                store.close()
                raise IndexCorruptError(f"{folder}: the lexical index and the document store hold different rows")
        return cls(index, store, manifest, folder, lexical=lexical)

    # ---- queries ------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.manifest.encoder.dim

    def __len__(self) -> int:
        return int(self.faiss.ntotal)

    def search(
        self, queries: np.ndarray, top_k: int, params: dict[str, Any] | None = None, where: Filter | None = None
    ) -> list[list[SearchHit]]:
        """The top_k hits of each query; with `where` (densekit.index.filters), only among
        the documents whose metadata matches it, selected inside faiss."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise IndexMismatchError(f"query vectors of shape {queries.shape} for an index of dim {self.dim}")
        if top_k < 1:
            raise InvalidInputError("top_k must be at least 1")
        merged = faiss_kinds.parse_search_params(self.manifest.kind, {**self.manifest.search_params, **(params or {})})
        if where is not None:
            faiss_kinds.check_filterable(self.faiss, self.manifest.kind)
        with self._lock:
            if where is None:
                k = min(top_k, max(1, len(self)))
                scores, rows = self._faiss_search(queries, k, faiss_kinds.search_parameters(self.faiss, merged))
            else:
                scores, rows = self._filtered_search(queries, top_k, merged, where)
            row_to_id = self._row_to_id
        out: list[list[SearchHit]] = []
        for srow, rrow in zip(scores, rows):
            hits = [SearchHit(row_to_id[int(r)], float(s), int(r)) for s, r in zip(srow, rrow) if r >= 0 and int(r) in row_to_id]
            out.append(hits)
        return out

    def _filtered_search(self, queries: np.ndarray, top_k: int, params: dict[str, Any], where: Filter) -> tuple[np.ndarray, np.ndarray]:
        """Search among the rows the document store matches. Always on the CPU index: faiss's GPU
        indexes take no IDSelector. A query an approximate kind answers short (the probed lists
        or the HNSW candidates held too few matches) is searched once more, exhaustively."""
        condition, args = to_sql(where)
        allowed = np.array(self.docstore.rows_where(condition, args), dtype=np.int64)
        if allowed.size == 0:
            return np.zeros((len(queries), 0), dtype=np.float32), np.zeros((len(queries), 0), dtype=np.int64)
        k = min(top_k, int(allowed.size))
        scores, rows = self.faiss.search(queries, k, params=faiss_kinds.search_parameters(self.faiss, params, allowed))
        short = (rows < 0).any(axis=1)
        wider = self._exhaustive_params(params)
        if short.any() and wider is not None:
            sp = faiss_kinds.search_parameters(self.faiss, wider, allowed)
            scores[short], rows[short] = self.faiss.search(queries[short], k, params=sp)
        return scores, rows

    def _exhaustive_params(self, params: dict[str, Any]) -> dict[str, Any] | None:
        """Search params that visit every vector (IVF: all lists; HNSW: a candidate list as long
        as the index), or None when `params` already do or the kind is exact."""
        inner = faiss_kinds.core_index(self.faiss)
        if isinstance(inner, faiss.IndexIVF) and params.get("nprobe", inner.nprobe) < inner.nlist:
            return {**params, "nprobe": int(inner.nlist)}
        if isinstance(inner, faiss.IndexHNSW) and params.get("ef_search", inner.hnsw.efSearch) < len(self):
            return {**params, "ef_search": len(self)}
        return None

    def documents(self, rows: list[int]) -> dict[int, dict]:
        return self.docstore.get_by_rows(rows)

    # ---- lexical search -----------------------------------------------------------------
    @property
    def has_lexical(self) -> bool:
        return self.manifest.lexical is not None

    def lexical_index(self) -> LexicalIndex | None:
        """The BM25 part over the current documents (rebuilt first when an update made it stale);
        None when the folder has none."""
        if self.manifest.lexical is None:
            return None
        with self._lock:
            if self._lexical is None or self._lexical_stale:
                t0 = time.perf_counter()
                self._lexical = build_from_sqlite(self.docstore.conn, self.manifest.lexical)
                self._lexical_stale = False
                logging.getLogger(__name__).info(
                    "lexical index rebuilt (%d documents) in %.3f s", len(self._lexical), time.perf_counter() - t0
                )
            return self._lexical

    def lexical_rows(self) -> set[int] | None:
        """The rows the lexical part holds (after any rebuild), or None when there is none."""
        lexical = self.lexical_index()
        return None if lexical is None else set(lexical.rows.tolist())

    def lexical_search(self, queries: list[str], top_k: int, where: Filter | None = None) -> list[list[SearchHit]]:
        """The top_k BM25 hits of each query text (only documents sharing a word with it; with
        `where`, only among the documents whose metadata matches). ConfigError when the index
        has no lexical part."""
        from densekit.errors import ConfigError

        if top_k < 1:
            raise InvalidInputError("top_k must be at least 1")
        with self._lock:
            lexical = self.lexical_index()
            if lexical is None:
                raise ConfigError(
                    "mode",
                    "this index has no lexical (BM25) part; rebuild it with `densekit index build --lexical` for lexical or hybrid search",
                )
            allowed = None
            if where is not None:
                condition, args = to_sql(where)
                allowed = np.array(self.docstore.rows_where(condition, args), dtype=np.int64)
            hits = lexical.search(queries, top_k, allowed)
            row_to_id = self._row_to_id
        return [[SearchHit(row_to_id[r], s, r) for r, s in per_query if r in row_to_id] for per_query in hits]

    # ---- GPU search ------------------------------------------------------------------
    def to_device(self, faiss_device: str | None = "auto", device: str = "cpu") -> str:
        """Search from a GPU copy of the faiss index when `faiss_device` ('auto', 'cpu',
        'gpu') and the models' `device` allow it (densekit.index.gpu.place_index decides).
        Returns where searches run: 'cpu' or 'cuda:N[,M...]'."""
        from densekit.index.gpu import place_index

        with self._lock:
            self._gpu = place_index(self.faiss, faiss_device, device)
            self._gpu_request = (faiss_device, device) if self._gpu is not None else None
            self._gpu_stale = False
            return self._gpu.device if self._gpu is not None else "cpu"

    @property
    def search_device(self) -> str:
        return self._gpu.device if self._gpu is not None else "cpu"

    def _faiss_search(self, queries: np.ndarray, k: int, sp):
        """Search the GPU copy when there is one (cloned again after updates), else the CPU index."""
        if self._gpu_stale and self._gpu_request is not None:
            from densekit.index.gpu import place_index

            self._gpu = place_index(self.faiss, *self._gpu_request)
            self._gpu_stale = False
        if self._gpu is not None:
            try:
                return self._gpu.index.search(queries, k, params=sp) if sp is not None else self._gpu.index.search(queries, k)
            except RuntimeError as exc:  # search parameters a GPU index does not take
                logging.getLogger(__name__).warning(
                    "GPU search failed, searching on the CPU from now on: %s", str(exc).splitlines()[0] if str(exc) else exc
                )
                self._gpu, self._gpu_request = None, None
        return self.faiss.search(queries, k, params=sp) if sp is not None else self.faiss.search(queries, k)

    # ---- updates ------------------------------------------------------------------
    def upsert(self, docs: list[dict], vectors: np.ndarray) -> None:
        """Add or replace documents ({id, title, text, metadata}); rows of replaced ids are reused."""
        with self._lock:
            existing = self.docstore.rows_of(d["id"] for d in docs)
            if existing:
                faiss_kinds.require_removable(self.faiss, self.manifest.kind)
                self.faiss.remove_ids(np.array(sorted(existing.values()), dtype=np.int64))
            next_row = self.docstore.max_row() + 1
            rows = []
            for d in docs:
                if d["id"] in existing:
                    rows.append(existing[d["id"]])
                else:
                    rows.append(next_row)
                    next_row += 1
            self.faiss.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.array(rows, dtype=np.int64))
            self.docstore.add_many((r, d["id"], d.get("title", ""), d.get("text", ""), d.get("metadata")) for r, d in zip(rows, docs))
            for r, d in zip(rows, docs):
                self._row_to_id[r] = d["id"]
            self.manifest.doc_count = int(self.faiss.ntotal)
            self._gpu_stale = self._gpu_request is not None
            self._lexical_stale = True

    def remove(self, doc_ids: list[str]) -> int:
        with self._lock:
            rows = self.docstore.rows_of(doc_ids)
            if not rows:
                return 0
            faiss_kinds.require_removable(self.faiss, self.manifest.kind)
            self.faiss.remove_ids(np.array(sorted(rows.values()), dtype=np.int64))
            self.docstore.delete_ids(rows.keys())
            for r in rows.values():
                self._row_to_id.pop(r, None)
            self.manifest.doc_count = int(self.faiss.ntotal)
            self._gpu_stale = self._gpu_request is not None
            self._lexical_stale = True
            return len(rows)


@dataclass
class FrozenIndex:
    """What `DenseIndex.freeze` copied; `write` may run on any thread, once."""

    faiss_bytes: np.ndarray
    docstore: sqlite3.Connection
    manifest: Manifest
    lexical: LexicalIndex | None = None  # None: built from `docstore` when written (if the manifest has a lexical part)

    def write(self, folder: str | Path) -> Path:
        """Write the copy as an index folder (atomically) and release the memory it held."""
        folder = Path(folder)
        try:
            self.manifest.checksums = write_folder(folder, self._write_faiss, self.docstore, self.manifest, self.lexical)
        finally:
            self.docstore.close()
        return folder

    def _write_faiss(self, path: Path) -> None:
        with open(path, "wb") as fh:
            fh.write(self.faiss_bytes.data)


def write_folder(
    folder: Path,
    write_faiss: Callable[[Path], None],
    docstore: sqlite3.Connection,
    manifest: Manifest,
    lexical: LexicalIndex | None = None,
) -> dict[str, str]:
    """Write index.faiss, docstore.sqlite, the lexical part (when the manifest has one: `lexical`,
    or one built from `docstore`) and manifest.json into `folder` atomically (a temp sibling
    renamed over any old folder). Returns the files' checksums, as the manifest holds them."""
    if manifest.lexical is not None and lexical is None:
        lexical = build_from_sqlite(docstore, manifest.lexical)
    with atomic_dir(folder) as tmp:
        write_faiss(tmp / INDEX_FILE)
        # sqlite's backup API copies a consistent snapshot even while WAL is on.
        dst = sqlite3.connect(tmp / DOCSTORE_FILE)
        try:
            docstore.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
        if manifest.lexical is not None and lexical is not None:
            manifest = manifest.model_copy(update={"lexical": manifest.lexical.model_copy(update={"files": lexical.save(tmp)})})
        # On disk before the rename: a live index drops its log once the snapshot is in place.
        names = manifest.checked_files()
        for name in names:
            _fsync_file(tmp / name)
        checksums = {name: sha256_file(tmp / name) for name in names}
        write_json_atomic(tmp / MANIFEST, manifest.model_copy(update={"checksums": checksums}).model_dump(mode="json"))
    return checksums


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def load_index(folder: str | Path, verify: bool = True, writable: bool = False) -> DenseIndex:
    return DenseIndex.load(folder, verify=verify, writable=writable)


def build_from_corpus(
    encoder,
    corpus: Corpus,
    kind: str = "flat",
    build_params: dict[str, Any] | None = None,
    search_params: dict[str, Any] | None = None,
    progress: bool = True,
    vectors: np.ndarray | None = None,
    lexical: bool | LexicalSpec = False,
) -> DenseIndex:
    """Encode a corpus (BEIR `title + " " + text`) and index it (with `lexical`, its BM25 part too)."""
    from densekit.index.manifest import EncoderSpec

    doc_ids = list(corpus.keys())
    if vectors is None:
        vectors = encode_corpus(encoder, corpus, doc_ids, progress=progress)
    spec = EncoderSpec.of(encoder)
    return DenseIndex.build(
        vectors, corpus, doc_ids, spec, kind=kind, build_params=build_params, search_params=search_params, lexical=lexical
    )


def encode_corpus(encoder, corpus: Corpus, doc_ids: Sequence[str], progress: bool = True) -> np.ndarray:
    from densekit.index.embedding_cache import cached_document_vectors

    texts = [document_text(corpus[d]) for d in doc_ids]
    return cached_document_vectors(encoder, texts, progress=progress)
