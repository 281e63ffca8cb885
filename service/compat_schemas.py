"""Request and response shapes that existing clients already speak:

- text-embeddings-inference (TEI): `POST /embed`, `POST /rerank`
- OpenAI: `POST /v1/embeddings` (and OpenAI's error object on every `/v1/` route)
- Cohere / Jina: `POST /v1/rerank`; Cohere v2: `POST /v2/rerank`

Fields those APIs define but densekit does not act on are accepted and documented as such,
so that stock clients work unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from densekit.service.schemas import ERRORS, ErrorResponse
from densekit.service.validation import Text


# ---- TEI ---------------------------------------------------------------------------------
class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: Text | list[Text] = Field(..., description="one text or a list of texts (at most the server's max_client_batch)")
    normalize: bool = Field(True, description="L2-normalise each embedding")
    truncate: bool = Field(
        False, description="cut inputs longer than the model's max length; false: such inputs are refused with 413 (as TEI does)"
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
        "right", description="accepted for TEI compatibility; densekit truncates on the right"
    )
    prompt_name: Text | None = Field(None, description="'query' or 'document' to apply the model's prompt for that role; none: no prompt")


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text = Field(..., description="the query (must not be empty)")
    texts: list[Text] = Field(..., description="texts to score against the query (at most the server's max_client_batch)")
    raw_scores: bool = Field(False, description="true: the reranker's logit; false: a score in [0, 1] (sigmoid)")
    return_text: bool = Field(False, description="include each text in the answer")
    truncate: bool = Field(
        False, description="accepted for TEI compatibility; the reranker always cuts the document (never the query) to fit"
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field("right", description="accepted for TEI compatibility")


class RankOut(BaseModel):
    index: int = Field(..., description="position of the text in the request")
    score: float
    text: str | None = Field(None, description="the text (when return_text)")


# ---- OpenAI ------------------------------------------------------------------------------
class OpenAIEmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Text | list[Text] = Field(
        ..., description="text or list of texts (token-id arrays are not accepted: they belong to OpenAI's tokenizer)"
    )
    model: Text | None = Field(
        None, description="the served model's name (see /info); another name gets 404 model_not_found unless the server allows any"
    )
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes, base64-encoded"
    )
    dimensions: int | None = Field(None, ge=1, description="must equal the model's dimension when given")
    user: Text | None = Field(None, description="accepted for compatibility, ignored")


class OpenAIEmbedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class OpenAIUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[OpenAIEmbedding]
    model: str
    usage: OpenAIUsage


# ---- Cohere / Jina -----------------------------------------------------------------------
class RerankDocumentIn(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: Text


class CohereRerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text = Field(..., description="the query (must not be empty)")
    documents: list[Text | RerankDocumentIn] = Field(
        ..., description='strings or {"text": ...} objects (at most the server\'s max_client_batch)'
    )
    model: Text | None = Field(
        None, description="the served reranker's name (see /info); another name gets 404 model_not_found unless the server allows any"
    )
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    return_documents: bool = Field(False, description="include each document's text")
    max_chunks_per_doc: int | None = Field(None, ge=1, description="accepted for compatibility, ignored")
    rank_fields: list[Text] | None = Field(None, description="accepted for compatibility, ignored")


class RerankDocumentOut(BaseModel):
    text: str


class CohereRerankResult(BaseModel):
    index: int = Field(..., description="position of the document in the request")
    relevance_score: float
    document: RerankDocumentOut | None = None


class CohereUsage(BaseModel):
    total_tokens: int


class CohereRerankResponse(BaseModel):
    id: str = Field(..., description="the request id")
    model: str
    results: list[CohereRerankResult]
    usage: CohereUsage


class CohereV2RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text | None = Field(
        None, description="the served reranker's name (see /info); another name gets 404 model_not_found unless the server allows any"
    )
    query: Text = Field(..., description="the query (must not be empty)")
    documents: list[Text] = Field(..., description="texts to rank (at most the server's max_client_batch)")
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="cut each document to this many tokens of the reranker's tokenizer before scoring (default: no cut)"
    )
    return_documents: bool = Field(False, description="include each document's text (as Cohere's earlier v2 API did)")
    priority: int | None = Field(None, description="accepted for compatibility, ignored")


class CohereApiVersion(BaseModel):
    version: str = Field("2", description="the Cohere API version this shape follows")


class CohereBilledUnits(BaseModel):
    search_units: int = Field(1, description="one search unit per request, as Cohere bills up to 100 documents")


class CohereMeta(BaseModel):
    api_version: CohereApiVersion
    billed_units: CohereBilledUnits


class CohereV2RerankResponse(BaseModel):
    id: str = Field(..., description="the request id")
    results: list[CohereRerankResult]
    meta: CohereMeta


# ---- errors ------------------------------------------------------------------------------
class OpenAIError(BaseModel):
    message: str = Field(..., description="what went wrong, for people")
    type: str = Field(..., description="invalid_request_error, authentication_error, rate_limit_error or server_error")
    param: str | None = Field(None, description="the request field at fault, when one is")
    code: str | None = Field(None, description="machine-readable kind (densekit's error_type), e.g. model_not_found")


class OpenAIErrorResponse(BaseModel):
    error: OpenAIError


_EXTRA_ERRORS: dict[int, str] = {
    404: "unknown model (model_not_found)",
    422: "invalid request, or no reranker on this server (no_reranker)",
}


def compat_errors(*codes: int, openai: bool = False) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of a compatibility route (OpenAI's error object on /v1/)."""
    model = OpenAIErrorResponse if openai else ErrorResponse
    return {c: {"model": model, "description": _EXTRA_ERRORS.get(c) or ERRORS[c]["description"]} for c in codes}
