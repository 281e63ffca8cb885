"""Training pairs: JSONL rows {"query": str, "pos": [str], "neg": [str]} (neg optional)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from densekit.data.jsonl import iter_jsonl
from densekit.errors import DataFormatError


@dataclass
class TrainingPair:
    query: str
    pos: list[str]
    neg: list[str] = field(default_factory=list)
    qid: str | None = None

    def to_json(self) -> dict:
        row = {"query": self.query, "pos": self.pos, "neg": self.neg}
        if self.qid is not None:
            row["qid"] = self.qid
        return row


def _str_list(obj: dict, key: str, path: Path, lineno: int, required: bool) -> list[str]:
    value = obj.get(key)
    if value is None:
        if required:
            raise DataFormatError(path, lineno, f"missing '{key}'")
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DataFormatError(path, lineno, f"'{key}' must be a list of strings")
    if required and not value:
        raise DataFormatError(path, lineno, f"'{key}' is empty")
    return value


def load_pairs(path: str | Path) -> list[TrainingPair]:
    path = Path(path)
    rows: list[TrainingPair] = []
    for lineno, obj in iter_jsonl(path):
        query = obj.get("query")
        if not isinstance(query, str) or not query.strip():
            raise DataFormatError(path, lineno, "missing or empty 'query'")
        qid = obj.get("qid")
        rows.append(
            TrainingPair(
                query=query,
                pos=_str_list(obj, "pos", path, lineno, required=True),
                neg=_str_list(obj, "neg", path, lineno, required=False),
                qid=str(qid) if qid is not None else None,
            )
        )
    return rows
