"""The BM25 part of an index folder: a bm25s index over the same documents and rows as faiss.

Documents are indexed as BEIR encodes them (`title + " " + text`), tokenised by bm25s
(lower-cased, scikit-learn's `\\b\\w\\w+\\b` split, bm25s's English stop-words removed, then
Snowball-stemmed with PyStemmer) and scored by bm25s's default variant, "lucene":

    score(q, d) = sum over query tokens t of idf(t) * tf(t, d) / (tf(t, d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = log(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

(a query token repeated counts twice). Only documents sharing at least one token with the
query are hits, so a query of stop-words or unknown words has none.

Files, under `lexical/` in the index folder: bm25s's own (`data.csc.index.npy`,
`indices.csc.index.npy`, `indptr.csc.index.npy`, `vocab.index.json`, `params.index.json`)
and `rows.npy` (bm25s document i is densekit row rows[i]). They are written inside the index
folder's atomic write and listed with checksums in the manifest (`Manifest.lexical.files`).

Live updates. bm25s cannot add or remove documents, and BM25 scores depend on corpus-wide
statistics (N, df, avgdl), so a changed document changes every score. A `LexicalIndex` is
therefore immutable: an upsert or delete marks the index's lexical part stale, and the next
lexical search rebuilds it from the document store (which replay of the write-ahead log has
already brought up to date), so results are always exact BM25 over the current documents.
The cost is one tokenisation + bm25s build of the corpus per search that follows a write
(BENCHMARKS.md: 1.2 s for SciFact's 5,183 documents on 2 CPU cores): cheap for
corpora of thousands of documents and batches of writes, costly for a large corpus with
writes interleaved with lexical searches. Snapshots write the current lexical index, or
build one from the snapshot's own document-store copy on the snapshot thread.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from densekit.errors import ConfigError, IndexCorruptError, InvalidInputError
from densekit.index.manifest import LexicalSpec

LEXICAL_DIR = "lexical"
ROWS_FILE = "rows.npy"
_BM25S_FILES = ("data.csc.index.npy", "indices.csc.index.npy", "indptr.csc.index.npy", "vocab.index.json", "params.index.json")
FILES = tuple(f"{LEXICAL_DIR}/{name}" for name in (*_BM25S_FILES, ROWS_FILE))


def _bm25s():
    try:
        import bm25s
    except ImportError:  # a core dependency; only a broken install lacks it
        raise ConfigError("lexical", "lexical search needs bm25s and PyStemmer: pip install bm25s PyStemmer") from None
    # bm25s sets its logger to DEBUG when imported; densekit's logging settings decide instead.
    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


class Tokenizer:
    """bm25s's tokenisation with the spec's stemmer and stop-words, for documents and queries alike."""

    def __init__(self, spec: LexicalSpec):
        self.spec = spec
        self._stemmer = None
        if spec.stemmer:
            import Stemmer

            try:
                self._stemmer = Stemmer.Stemmer(spec.stemmer)
            except KeyError:
                raise ConfigError("lexical.stemmer", f"no Snowball stemmer for {spec.stemmer!r}") from None

    def tokens(self, texts: list[str]) -> list[list[str]]:
        """Each text's tokens (stems), stop-words removed; [] for a text with none."""
        if not texts:
            return []
        return list(_bm25s().tokenize(texts, stopwords=self.spec.stopwords, stemmer=self._stemmer, return_ids=False, show_progress=False))

    def ids(self, texts: list[str]):
        """bm25s's Tokenized (token ids per text, vocabulary) of a corpus."""
        return _bm25s().tokenize(texts, stopwords=self.spec.stopwords, stemmer=self._stemmer, return_ids=True, show_progress=False)


class LexicalIndex:
    """A bm25s index whose document i is densekit row `rows[i]`. Immutable once built."""

    def __init__(self, spec: LexicalSpec, retriever, rows: np.ndarray):
        self.spec = spec
        self.retriever = retriever  # None for an empty corpus
        self.rows = np.asarray(rows, dtype=np.int64)
        self.tokenizer = Tokenizer(spec)
        self._position = {int(r): i for i, r in enumerate(self.rows)}

    @classmethod
    def build(cls, docs: Iterable[tuple[int, str]], spec: LexicalSpec | None = None) -> LexicalIndex:
        """Index (row, text) pairs; a text is BEIR's `title + " " + text` of the document."""
        spec = spec or LexicalSpec()
        pairs = list(docs)
        rows = np.array([r for r, _ in pairs], dtype=np.int64)
        if len(set(rows.tolist())) != len(rows):
            raise IndexCorruptError("lexical index: the same row twice")
        if not pairs:
            return cls(spec, None, rows)
        tokenized = Tokenizer(spec).ids([t for _, t in pairs])
        retriever = _bm25s().BM25(method=spec.method, k1=spec.k1, b=spec.b)
        retriever.index((tokenized.ids, tokenized.vocab), show_progress=False)
        return cls(spec, retriever, rows)

    def __len__(self) -> int:
        return len(self.rows)

    # ---- persistence --------------------------------------------------------------------
    def save(self, folder: Path) -> list[str]:
        """Write the files under `folder/lexical/` (folder is the temporary sibling that the
        index folder's atomic write renames); returns their paths relative to `folder`."""
        target = Path(folder) / LEXICAL_DIR
        target.mkdir(parents=True, exist_ok=True)
        if self.retriever is not None:
            self.retriever.save(str(target), show_progress=False)
        else:  # an empty corpus: no bm25s arrays, only its (empty) rows
            for name in _BM25S_FILES:
                (target / name).write_bytes(b"")
        with open(target / ROWS_FILE, "wb") as fh:
            np.save(fh, self.rows, allow_pickle=False)
        missing = [f for f in FILES if not (Path(folder) / f).is_file()]
        if missing:
            raise IndexCorruptError(f"bm25s did not write {missing}")
        return list(FILES)

    @classmethod
    def load(cls, folder: Path, spec: LexicalSpec) -> LexicalIndex:
        source = Path(folder) / LEXICAL_DIR
        try:
            rows = np.load(source / ROWS_FILE, allow_pickle=False)
            retriever = None
            if len(rows):
                retriever = _bm25s().BM25.load(str(source), mmap=False)
        except (OSError, ValueError, json.JSONDecodeError) as exc:
            raise IndexCorruptError(f"{source}: the lexical index cannot be read ({exc})") from None
        if retriever is not None and int(retriever.scores["num_docs"]) != len(rows):
            raise IndexCorruptError(f"{source}: bm25s holds {retriever.scores['num_docs']} documents, rows.npy {len(rows)}")
        return cls(spec, retriever, rows)

    # ---- queries ------------------------------------------------------------------------
    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document (in `rows` order) for one query."""
        if self.retriever is None:
            return np.zeros(0, dtype=np.float32)
        ids = self.retriever.get_tokens_ids(self.tokenizer.tokens([query])[0])
        if not ids:
            return np.zeros(len(self.rows), dtype=np.float32)
        return np.asarray(self.retriever.get_scores(ids), dtype=np.float32)

    def search(self, queries: list[str], top_k: int, allowed_rows: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
        """The top_k (row, score) hits of each query among the documents sharing a token with it
        (only among `allowed_rows` when given), best first; ties by row."""
        if top_k < 1:
            raise InvalidInputError(f"top_k must be at least 1, got {top_k}")
        out: list[list[tuple[int, float]]] = []
        mask = None
        if allowed_rows is not None and self.retriever is not None:
            mask = np.isin(self.rows, np.asarray(allowed_rows, dtype=np.int64))
        for q in queries:
            scores = self.scores(q)
            candidates = np.flatnonzero(scores > 0 if mask is None else (scores > 0) & mask)
            if len(candidates) > top_k:
                # Keep every candidate scoring at least the k-th best: argpartition alone picks
                # an arbitrary subset of the documents tied at the cut, and ties go by row.
                kth = np.partition(scores[candidates], len(candidates) - top_k)[len(candidates) - top_k]
                candidates = candidates[scores[candidates] >= kth]
            order = np.lexsort((self.rows[candidates], -scores[candidates]))[:top_k]
            out.append([(int(self.rows[candidates[i]]), float(scores[candidates[i]])) for i in order])
        return out

    def document_scores(self, query: str, rows: Iterable[int]) -> dict[int, float]:
        """Exact scores of the given rows (0 for a row sharing no token with the query)."""
        scores = self.scores(query)
        return {int(r): float(scores[self._position[int(r)]]) for r in rows if int(r) in self._position}


def build_from_sqlite(conn, spec: LexicalSpec) -> LexicalIndex:
    """A lexical index of every document in a document-store connection (the docs table)."""
    from densekit.data.beir import document_text

    cursor = conn.execute("SELECT row, title, text FROM docs ORDER BY row")
    return LexicalIndex.build(((int(r), document_text({"title": t, "text": x})) for r, t, x in cursor), spec)
