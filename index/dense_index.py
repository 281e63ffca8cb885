"""DenseIndex: a faiss index, its document store and manifest, behind a small interface
(build, add, remove, search, save, load) so other backends can stand in later."""

from __future__ import annotations

import datetime as _dt
import logging
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from densekit.atomic import atomic_dir, write_json_atomic
from densekit.data.beir import Corpus, document_text
from densekit.errors import IndexCorruptError, IndexMismatchError, InvalidInputError
from densekit.index import faiss_kinds
from densekit.index.docstore import DocStore
from densekit.index.manifest import (
    DOCSTORE_FILE,
    INDEX_FILE,
    MANIFEST,
    EncoderSpec,
    Manifest,
    read_manifest,
    sha256_file,
    verify_checksums,
)


@dataclass
class SearchHit:
    id: str
    score: float
    row: int


class DenseIndex:
    def __init__(self, faiss_index: faiss.Index, docstore: DocStore, manifest: Manifest, folder: Path | None = None):
        self.faiss = faiss_index
        self.docstore = docstore
        self.manifest = manifest
        self.folder = folder
        self._row_to_id = docstore.row_to_id()
        self._lock = threading.RLock()
        # GPU copy that serves searches (to_device); the CPU index stays the one updated and saved.
        self._gpu = None
        self._gpu_request: tuple[str | None, str] | None = None
        self._gpu_stale = False

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
    ) -> DenseIndex:
        """Index `vectors` (row i is document doc_ids[i]); the docstore goes to a temp file
        unless `docstore_path` is given, and moves with `save`. `trained_index` is an empty,
        already trained faiss index to fill instead of training one (Distill-VQ's export)."""
        if vectors.shape[0] != len(doc_ids):
            raise InvalidInputError(f"{vectors.shape[0]} vectors for {len(doc_ids)} documents")
        if vectors.ndim != 2 or vectors.shape[1] != encoder_spec.dim:
            raise IndexMismatchError(f"vectors have shape {vectors.shape}, encoder dim is {encoder_spec.dim}")
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
            index = faiss_kinds.make_index(
                kind, encoder_spec.dim, resolved_build, faiss_kinds.metric_of(encoder_spec.similarity), n_train=len(doc_ids)
            )
            faiss_kinds.train_index(index, vectors, resolved_build)
        rows = np.arange(len(doc_ids), dtype=np.int64)
        index.add_with_ids(vectors, rows)
        faiss_kinds.apply_defaults(index, resolved_search)
        build_time = time.perf_counter() - t0
        if docstore_path is None:
            import tempfile

            docstore_path = Path(tempfile.mkdtemp(prefix="densekit-docstore-")) / DOCSTORE_FILE
        store = DocStore(docstore_path)
        store.add_many(
            (int(r), d, corpus[d].get("title", ""), corpus[d].get("text", ""), corpus[d].get("metadata"))  # type: ignore[arg-type]
            for r, d in zip(rows, doc_ids)
        )
        manifest = Manifest(
            kind=kind,
            encoder=encoder_spec,
            metric="inner_product" if faiss_kinds.metric_of(encoder_spec.similarity) == faiss.METRIC_INNER_PRODUCT else "l2",
            faiss_description=faiss_kinds.describe(index),
            build_params=resolved_build,
            search_params=resolved_search,
            doc_count=len(doc_ids),
            bytes_per_vector=faiss_kinds.bytes_per_vector(index, encoder_spec.dim),
            build_time_s=round(build_time, 4),
            created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            extra={"index_bytes_per_vector": faiss_kinds.index_bytes_per_vector(index)},
        )
        return cls(index, store, manifest)

    # ---- persistence --------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the folder atomically: temp sibling, then rename over any old one."""
        folder = Path(folder)
        with self._lock, atomic_dir(folder) as tmp:
            faiss.write_index(self.faiss, str(tmp / INDEX_FILE))
            # sqlite's backup API copies a consistent snapshot even while WAL is on.
            dst = DocStore(tmp / DOCSTORE_FILE)
            with dst.conn:
                self.docstore.conn.backup(dst.conn)
            dst.conn.execute("PRAGMA journal_mode=DELETE")
            dst.close()
            self.manifest.doc_count = int(self.faiss.ntotal)
            self.manifest.checksums = {
                INDEX_FILE: sha256_file(tmp / INDEX_FILE),
                DOCSTORE_FILE: sha256_file(tmp / DOCSTORE_FILE),
            }
            write_json_atomic(tmp / MANIFEST, self.manifest.model_dump(mode="json"))
        self.folder = folder
        return folder

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
        store = DocStore(folder / DOCSTORE_FILE, readonly=not writable)
        if index.ntotal != len(store):
            raise IndexCorruptError(f"{folder}: faiss holds {index.ntotal} vectors, document store {len(store)} documents")
        return cls(index, store, manifest, folder)

    # ---- queries ------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.manifest.encoder.dim

    def __len__(self) -> int:
        return int(self.faiss.ntotal)

    def search(self, queries: np.ndarray, top_k: int, params: dict[str, Any] | None = None) -> list[list[SearchHit]]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise IndexMismatchError(f"query vectors of shape {queries.shape} for an index of dim {self.dim}")
        if top_k < 1:
            raise InvalidInputError("top_k must be at least 1")
        merged = faiss_kinds.parse_search_params(self.manifest.kind, {**self.manifest.search_params, **(params or {})})
        sp = faiss_kinds.search_parameters(self.faiss, merged)
        k = min(top_k, max(1, len(self)))
        with self._lock:
            scores, rows = self._faiss_search(queries, k, sp)
            row_to_id = self._row_to_id
        out: list[list[SearchHit]] = []
        for srow, rrow in zip(scores, rows):
            hits = [SearchHit(row_to_id[int(r)], float(s), int(r)) for s, r in zip(srow, rrow) if r >= 0 and int(r) in row_to_id]
            out.append(hits)
        return out

    def documents(self, rows: list[int]) -> dict[int, dict]:
        return self.docstore.get_by_rows(rows)

    # ---- GPU search (issue 8) -------------------------------------------------------
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
            return len(rows)


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
) -> DenseIndex:
    """Encode a corpus (BEIR `title + " " + text`) and index it."""
    from densekit.index.manifest import EncoderSpec

    doc_ids = list(corpus.keys())
    if vectors is None:
        vectors = encode_corpus(encoder, corpus, doc_ids, progress=progress)
    info = encoder.info()
    spec = EncoderSpec(
        name=info.name,
        path=info.path,
        dim=info.dim,
        similarity=info.similarity,
        normalize=info.normalize,
        max_seq_length=info.max_seq_length,
    )
    return DenseIndex.build(vectors, corpus, doc_ids, spec, kind=kind, build_params=build_params, search_params=search_params)


def encode_corpus(encoder, corpus: Corpus, doc_ids: Sequence[str], progress: bool = True) -> np.ndarray:
    from densekit.index.embedding_cache import cached_document_vectors

    texts = [document_text(corpus[d]) for d in doc_ids]
    return cached_document_vectors(encoder, texts, progress=progress)


def remove_folder(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
