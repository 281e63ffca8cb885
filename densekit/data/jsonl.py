"""Line-by-line JSONL reading that reports the file and line of any malformed row."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from densekit.errors import DataFormatError, DatasetNotFoundError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (1-based line number, object) for each non-blank line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"file not found: {path}")
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj
