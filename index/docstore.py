"""SQLite document store: faiss row id <-> document id, title, text, metadata JSON."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from densekit.errors import IndexCorruptError, InvalidInputError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    row INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}'
);
"""


def _metadata_json(doc_id: str, metadata: dict | None) -> str:
    try:
        return json.dumps(metadata or {})
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"metadata of document {doc_id!r} is not JSON: {exc}") from None


def _stored_metadata(doc_id: str, text: str) -> dict | None:
    """Stored metadata, or None (logged) when it cannot be read back: one damaged row must
    not fail every search that returns it."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        log.error("document %r: stored metadata cannot be decoded (%s); read as null", doc_id, exc)
        return None


class DocStore:
    def __init__(self, path: str | Path, readonly: bool = False):
        self.path = Path(path)
        uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
        try:
            self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            if not readonly:
                self.conn.execute("PRAGMA journal_mode=WAL")
                self.conn.execute("PRAGMA synchronous=FULL")
                self.conn.executescript(_SCHEMA)
            self.conn.execute("SELECT count(*) FROM docs").fetchone()
        except sqlite3.DatabaseError as exc:
            raise IndexCorruptError(f"{self.path}: not a readable document store ({exc})") from None

    def close(self) -> None:
        self.conn.close()

    def __len__(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM docs").fetchone()[0])

    def add_many(self, rows: Iterable[tuple[int, str, str, str, dict | None]]) -> None:
        """Insert or replace (row, id, title, text, metadata) rows in one transaction."""
        with self.conn:
            self.conn.executemany(
                "INSERT OR REPLACE INTO docs(row, id, title, text, metadata) VALUES (?, ?, ?, ?, ?)",
                ((r, i, t or "", x or "", _metadata_json(i, m)) for r, i, t, x, m in rows),
            )

    def delete_ids(self, doc_ids: Iterable[str]) -> None:
        with self.conn:
            self.conn.executemany("DELETE FROM docs WHERE id = ?", ((d,) for d in doc_ids))

    def row_to_id(self) -> dict[int, str]:
        return {int(r): i for r, i in self.conn.execute("SELECT row, id FROM docs")}

    def rows_of(self, doc_ids: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in doc_ids:
            hit = self.conn.execute("SELECT row FROM docs WHERE id = ?", (d,)).fetchone()
            if hit is not None:
                out[d] = int(hit[0])
        return out

    def rows_where(self, condition: str, params: Sequence[Any]) -> list[int]:
        """Rows of the documents for which a SQL condition over the docs table holds (a
        filter's condition from densekit.index.filters.to_sql)."""
        return [int(r) for (r,) in self.conn.execute(f"SELECT row FROM docs WHERE {condition}", list(params))]

    def max_row(self) -> int:
        v = self.conn.execute("SELECT max(row) FROM docs").fetchone()[0]
        return -1 if v is None else int(v)

    def get_by_rows(self, rows: list[int]) -> dict[int, dict]:
        if not rows:
            return {}
        out: dict[int, dict] = {}
        # SQLite limits bound parameters; chunk the IN list.
        for start in range(0, len(rows), 900):
            chunk = rows[start : start + 900]
            q = f"SELECT row, id, title, text, metadata FROM docs WHERE row IN ({','.join('?' * len(chunk))})"
            for r, i, t, x, m in self.conn.execute(q, chunk):
                out[int(r)] = {"id": i, "title": t, "text": x, "metadata": _stored_metadata(i, m)}
        return out

    def iter_all(self) -> Iterator[dict]:
        for r, i, t, x, m in self.conn.execute("SELECT row, id, title, text, metadata FROM docs ORDER BY row"):
            yield {"row": int(r), "id": i, "title": t, "text": x, "metadata": json.loads(m)}
