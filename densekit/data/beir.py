"""BEIR folders: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

Semantics follow beir's GenericDataLoader (the same counts on every set): the corpus maps
_id -> {title, text}; queries are restricted to those with qrels in the split; qrels keep
every judged row, grade 0 included. Unlike GenericDataLoader, malformed rows fail with the
file and line named instead of a bare KeyError/ValueError.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from densekit.data.jsonl import iter_jsonl
from densekit.errors import DataFormatError, DatasetNotFoundError

Corpus = dict[str, dict[str, str]]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]


def _id_of(obj: dict, path: Path, lineno: int) -> str:
    if "_id" not in obj or obj["_id"] is None or str(obj["_id"]) == "":
        raise DataFormatError(path, lineno, "missing '_id'")
    return str(obj["_id"])


def _text_field(obj: dict, key: str, path: Path, lineno: int) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, lineno, f"'{key}' must be a string, got {type(value).__name__}")
    return value


def load_corpus(folder: str | Path) -> Corpus:
    path = Path(folder) / "corpus.jsonl"
    corpus: Corpus = {}
    for lineno, obj in iter_jsonl(path):
        doc_id = _id_of(obj, path, lineno)
        corpus[doc_id] = {
            "title": _text_field(obj, "title", path, lineno),
            "text": _text_field(obj, "text", path, lineno),
        }
        meta = obj.get("metadata")
        if isinstance(meta, dict) and meta:
            corpus[doc_id]["metadata"] = meta  # type: ignore[assignment]
    return corpus


def load_queries(folder: str | Path) -> Queries:
    path = Path(folder) / "queries.jsonl"
    queries: Queries = {}
    for lineno, obj in iter_jsonl(path):
        queries[_id_of(obj, path, lineno)] = _text_field(obj, "text", path, lineno)
    return queries


def list_splits(folder: str | Path) -> list[str]:
    qrels_dir = Path(folder) / "qrels"
    return sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []


def load_qrels(folder: str | Path, split: str) -> Qrels:
    path = Path(folder) / "qrels" / f"{split}.tsv"
    if not path.is_file():
        available = ", ".join(list_splits(folder)) or "none"
        raise DatasetNotFoundError(f"unknown split '{split}' in {folder} (no {path}; available: {available})")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        for lineno, row in enumerate(reader, start=1):
            if lineno == 1:
                continue  # header: query-id corpus-id score
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) < 3:
                raise DataFormatError(path, lineno, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(row)}")
            qid, did, raw = row[0], row[1], row[2]
            try:
                grade = int(raw)
            except ValueError:
                raise DataFormatError(path, lineno, f"score must be an integer, got {raw!r}") from None
            qrels.setdefault(qid, {})[did] = grade
    return qrels


@dataclass
class BeirDataset:
    """One split of a BEIR folder, as loaded in memory."""

    name: str
    folder: Path
    split: str
    corpus: Corpus
    queries: Queries
    qrels: Qrels
    counts: dict[str, int] = field(default_factory=dict)

    def doc_text(self, doc_id: str) -> str:
        return document_text(self.corpus[doc_id])


def document_text(doc: dict) -> str:
    """BEIR's convention for encoding a document: title, a space, then the text."""
    title = (doc.get("title") or "").strip()
    text = doc.get("text") or ""
    return f"{title} {text}".strip() if title else text


def load_beir(folder: str | Path, split: str = "test", corpus: Corpus | None = None) -> BeirDataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset folder not found: {folder}")
    corpus = load_corpus(folder) if corpus is None else corpus
    all_queries = load_queries(folder)
    qrels = load_qrels(folder, split)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    missing = [qid for qid in qrels if qid not in all_queries]
    if missing:
        raise DataFormatError(qrels_path, None, f"{len(missing)} query ids have qrels but no query text (first: {missing[0]!r})")
    queries = {qid: all_queries[qid] for qid in qrels}
    counts = {
        "documents": len(corpus),
        "queries": len(queries),
        "qrels": sum(len(v) for v in qrels.values()),
    }
    return BeirDataset(folder.name, folder, split, corpus, queries, qrels, counts)
