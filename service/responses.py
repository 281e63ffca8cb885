"""JSON responses serialised with orjson: embeddings are float32 numpy rows, which orjson
writes directly (shortest round-trip decimal of each float32) without a Python float per
number. The routes' `response_model` still documents the shape in OpenAPI."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTS)
