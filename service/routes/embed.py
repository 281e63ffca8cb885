"""Embeddings in the two shapes clients speak: TEI's `POST /embed` and OpenAI's
`POST /v1/embeddings` (whose `model` is the served model's name)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Depends, Request

from densekit.service.auth import require_api_key
from densekit.service.compat_schemas import EmbedRequest, OpenAIEmbeddingRequest, OpenAIEmbeddingResponse, compat_errors
from densekit.service.deps import Ready, check_texts, ready_state, settings_of, timings
from densekit.service.errors import validation
from densekit.service.responses import FastJSON
from densekit.service.schemas import errors
from densekit.service.served_names import check_model, encoder_name

router = APIRouter(tags=["embed"], dependencies=[Depends(require_api_key)])

_PROMPT_MODES = {None: "plain", "query": "query", "document": "document"}


def _l2_normalize(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(norms, 1e-12)


def _inputs(request: Request, inputs: str | list[str], what: str) -> tuple[Ready, list[str]]:
    """The loaded service and the request's texts, once they pass the input limits."""
    state = ready_state(request)
    texts = [inputs] if isinstance(inputs, str) else inputs
    check_texts(texts, settings_of(request), what)
    return state, texts


@router.post(
    "/embed",
    response_model=list[list[float]],
    summary="embed texts (text-embeddings-inference shape): one vector per input",
    responses=errors(400, 401, 413, 422, 429, 503),
)
async def embed(req: EmbedRequest, request: Request):
    state, texts = _inputs(request, req.inputs, "inputs")
    if req.prompt_name not in _PROMPT_MODES:
        raise validation(f"prompt_name: '{req.prompt_name}' is not one of query, document")
    vectors, _ = await state.embed.embed(texts, _PROMPT_MODES[req.prompt_name], timings(request), truncate=req.truncate)
    if req.normalize:
        vectors = _l2_normalize(vectors)
    return FastJSON(vectors)


@router.post(
    "/v1/embeddings",
    response_model=OpenAIEmbeddingResponse,
    summary="embed texts (OpenAI shape); long inputs are truncated to the model's length",
    responses=compat_errors(400, 401, 404, 413, 422, 429, 503, openai=True),
)
async def embeddings_v1(req: OpenAIEmbeddingRequest, request: Request):
    state, texts = _inputs(request, req.input, "input")
    model = encoder_name(state, settings_of(request)) or "model"
    check_model(req.model, model, settings_of(request))
    dim = state.encoder.dim
    if req.dimensions is not None and req.dimensions != dim:
        raise validation(f"dimensions: this model gives {dim}-dimensional embeddings, not {req.dimensions}", param="dimensions")
    vectors, counts = await state.embed.embed(texts, "plain", timings(request), truncate=True)
    if state.encoder.normalize:  # a cosine model's vectors are unit length, as OpenAI's are
        vectors = _l2_normalize(vectors)
    rows: list[str] | np.ndarray
    if req.encoding_format == "base64":
        rows = [base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        rows = vectors
    tokens = int(sum(counts))
    return FastJSON(
        {
            "object": "list",
            "data": [{"object": "embedding", "embedding": row, "index": i} for i, row in enumerate(rows)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
