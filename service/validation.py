"""Input checks shared by the request models: text that can be encoded as UTF-8 (no lone
surrogates), document ids that survive a URL path, and metadata that the response serialiser
(orjson, service/responses.py) can always write back.

A value that passes here can be logged, stored, tokenised and returned; one that does not is
refused with 422 before it reaches a model or the shared write batch."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator

# orjson writes integers in [-2**63, 2**64 - 1] and refuses the others.
INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
# orjson refuses documents nested deeper than 255 levels; a hit wraps metadata in a few more
# (results, hits, the hit itself), so no setting may allow more than this.
HARD_MAX_DEPTH = 200


def surrogate_free(value: str) -> str:
    """`value` unchanged, or ValueError when it holds a lone surrogate (not valid UTF-8)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains a lone surrogate at character {exc.start} (not valid UTF-8)") from None
    return value


# Every free-text field of a request uses this type.
Text = Annotated[str, AfterValidator(surrogate_free)]


def url_safe_id(value: str) -> str:
    """A document id that round-trips through `/documents/{id}`: any UTF-8 text (a "/" is
    fine, the route takes the rest of the path), but no control characters and no "." or ".."
    path segment, which clients remove from a URL before sending it."""
    surrogate_free(value)
    for i, ch in enumerate(value):
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            raise ValueError(f"contains a control character at character {i} (ids must be printable)")
    if any(seg in (".", "..") for seg in value.split("/")):
        raise ValueError('has a "." or ".." path segment, which URL clients rewrite; choose another id')
    return value


DocumentId = Annotated[str, AfterValidator(url_safe_id)]


def metadata_problem(value: Any, max_depth: int = HARD_MAX_DEPTH, path: str = "metadata") -> str | None:
    """Why `value` cannot be stored as document metadata, naming the offending place
    (e.g. "metadata.tags[2]: ..."), or None when it is fine. Iterative: a deeply nested value
    cannot exhaust the Python stack here."""
    stack: list[tuple[Any, str, int]] = [(value, path, 1)]
    while stack:
        v, where, depth = stack.pop()
        if isinstance(v, dict):
            if depth > max_depth:
                return f"{where}: nested deeper than {max_depth} levels (max_metadata_depth)"
            for k, item in v.items():
                if not isinstance(k, str):
                    return f"{where}: key {ascii(k)} is not a string"
                try:
                    surrogate_free(k)
                except ValueError as exc:
                    return f"{where}: key {ascii(k)} {exc}"
                stack.append((item, f"{where}.{k}", depth + 1))
        elif isinstance(v, list):
            if depth > max_depth:
                return f"{where}: nested deeper than {max_depth} levels (max_metadata_depth)"
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(v))
        elif isinstance(v, bool) or v is None:
            continue
        elif isinstance(v, int):
            if not INT_MIN <= v <= INT_MAX:
                return f"{where}: integer outside the 64-bit range [-2**63, 2**64 - 1]; send it as a string"
        elif isinstance(v, float):
            if not math.isfinite(v):
                return f"{where}: {v} is not a JSON number (NaN and Infinity are refused)"
        elif isinstance(v, str):
            try:
                surrogate_free(v)
            except ValueError as exc:
                return f"{where}: {exc}"
        else:
            return f"{where}: a {type(v).__name__} is not a JSON value"
    return None


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    problem = metadata_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# Metadata of a document in a request: representable by the response serialiser. The
# server's own, tighter limits (max_metadata_depth, max_metadata_bytes) are checked by the route.
Metadata = Annotated[dict[str, Any], AfterValidator(_storable)]
