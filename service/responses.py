"""JSON responses serialised with orjson: embeddings are float32 numpy rows, which orjson
writes directly (shortest round-trip decimal of each float32) without a Python float per
number. The routes' `response_model` still documents the shape in OpenAPI.

Documents come from the store, written by earlier requests (or by other tools): one whose
metadata orjson cannot write must not fail a whole answer. `render_document` writes each
document on its own and, when its metadata is the problem, sends it with `metadata: null`
and a `metadata_error`; `HitsWriter` does the same per search hit and stops a search answer
from growing past `max_response_bytes`."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.responses import Response

log = logging.getLogger(__name__)

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
UNWRITABLE_METADATA = "the stored metadata cannot be written as JSON (see the server log); it is left out"


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTS)


class RawJSON(Response):
    """A body already serialised (by `dumps`, `render_document` or `HitsWriter`)."""

    media_type = "application/json"


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=_OPTS)


def render_document(doc: dict[str, Any]) -> bytes:
    """One document or hit as JSON. When it cannot be written as it is, it is written again
    with its metadata replaced by null (the store's other fields are text and numbers); the
    failure is logged with the document's id."""
    try:
        return orjson.dumps(doc, option=_OPTS)
    except orjson.JSONEncodeError as exc:
        log.error("document %r: metadata cannot be written as JSON (%s); answered with metadata null", doc.get("id"), exc)
    safe = {**doc, "metadata": None, "metadata_error": UNWRITABLE_METADATA}
    try:
        return orjson.dumps(safe, option=_OPTS)
    except orjson.JSONEncodeError:
        # Text that is not UTF-8 (a lone surrogate) cannot come through the API; replace it.
        return orjson.dumps({k: v.encode("utf-8", "replace").decode("utf-8") if isinstance(v, str) else v for k, v in safe.items()})


class ResponseTooLarge(Exception):
    def __init__(self, limit: int):
        self.limit = limit
        super().__init__(
            f"the answer would be larger than {limit} bytes (max_response_bytes): lower top_k or the number of queries, "
            "or send include_text: false / include_metadata: false"
        )


class HitsWriter:
    """Serialises hits one at a time, counting bytes against a budget: an answer over the
    budget is refused before it is built in full, so memory stays bounded too."""

    def __init__(self, limit: int):
        self.limit = limit
        self.size = 0

    def add(self, part: bytes) -> bytes:
        self.size += len(part) + 1  # and a separator
        if self.size > self.limit:
            raise ResponseTooLarge(self.limit)
        return part

    def hits(self, hits: list[dict[str, Any]]) -> bytes:
        """A JSON array of the hits."""
        return b"[" + b",".join(self.add(render_document(h)) for h in hits) + b"]"
