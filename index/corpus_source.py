"""A corpus from a BEIR folder, one JSONL file or Parquet (a file or a folder of files), as
densekit's Corpus mapping (id -> {title, text, metadata?}) in file order.

Embedding shards and sharded index builds number documents by this order, so it must be
the same on every read: files of a Parquet folder are read sorted by name.
"""

from __future__ import annotations

from pathlib import Path

from densekit.data.beir import Corpus, load_corpus
from densekit.data.jsonl import iter_jsonl
from densekit.errors import DataFormatError, DatasetNotFoundError

ID_COLUMNS = ("_id", "id")


def read_corpus(path: str | Path) -> Corpus:
    """DIR (a BEIR folder with corpus.jsonl, or a folder of .parquet files), a .jsonl file or
    a .parquet file. Rows need an id (`_id` or `id`); `title`, `text` and `metadata` are optional."""
    path = Path(path)
    if path.is_dir():
        if (path / "corpus.jsonl").is_file():
            return load_corpus(path)
        parts = sorted(path.glob("*.parquet"))
        if parts:
            return _read_parquet(parts)
        raise DatasetNotFoundError(f"{path} holds neither corpus.jsonl nor .parquet files")
    if not path.is_file():
        raise DatasetNotFoundError(f"corpus not found: {path}")
    if path.suffix == ".parquet":
        return _read_parquet([path])
    return _read_jsonl(path)


def _read_jsonl(path: Path) -> Corpus:
    corpus: Corpus = {}
    for lineno, obj in iter_jsonl(path):
        _add(corpus, obj, path, lineno)
    return corpus


def _read_parquet(files: list[Path]) -> Corpus:
    import pyarrow.parquet as pq

    corpus: Corpus = {}
    for f in files:
        for i, obj in enumerate(pq.read_table(f).to_pylist(), start=1):
            _add(corpus, obj, f, i)
    return corpus


def _add(corpus: Corpus, obj: dict, path: Path, line: int) -> None:
    doc_id = next((obj[c] for c in ID_COLUMNS if obj.get(c) not in (None, "")), None)
    if doc_id is None:
        raise DataFormatError(path, line, "missing '_id' (or 'id')")
    doc: dict = {}
    for key in ("title", "text"):
        value = obj.get(key)
        if value is not None and not isinstance(value, str):
            raise DataFormatError(path, line, f"'{key}' must be a string, got {type(value).__name__}")
        doc[key] = value or ""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and meta:
        doc["metadata"] = meta
    if str(doc_id) in corpus:
        raise DataFormatError(path, line, f"document id {str(doc_id)!r} appears twice")
    corpus[str(doc_id)] = doc
