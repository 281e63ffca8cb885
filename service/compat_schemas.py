"""Request and response shapes that existing clients already speak:

- text-embeddings-inference (TEI): `POST /embed`, `POST /rerank`
- OpenAI: `POST /v1/embeddings`
- Cohere / Jina: `POST /v1/rerank`

Fields those APIs define but densekit does not act on are accepted and documented as such,
so that stock clients work unchanged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


# ---- TEI ---------------------------------------------------------------------------------
class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inputs: str | list[str] = Field(..., description="one text or a list of texts (at most the server's max_client_batch)")
    normalize: bool = Field(True, description="L2-normalise each embedding")
    truncate: bool = Field(
        False, description="cut inputs longer than the model's max length; false: such inputs are refused with 413 (as TEI does)"
    )
    truncation_direction: Literal["right", "left", "Right", "Left"] = Field(
        "right", description="accepted for TEI compatibility; densekit truncates on the right"
    )
    prompt_name: str | None = Field(None, description="'query' or 'document' to apply the model's prompt for that role; none: no prompt")


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., description="the query (must not be empty)")
    texts: list[str] = Field(..., description="texts to score against the query (at most the server's max_client_batch)")
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

    input: str | list[str] = Field(
        ..., description="text or list of texts (token-id arrays are not accepted: they belong to OpenAI's tokenizer)"
    )
    model: str | None = Field(None, description="accepted for compatibility; the server's loaded bi-encoder answers")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes, base64-encoded"
    )
    dimensions: int | None = Field(None, ge=1, description="must equal the model's dimension when given")
    user: str | None = Field(None, description="accepted for compatibility, ignored")


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

    text: str


class CohereRerankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., description="the query (must not be empty)")
    documents: list[str | RerankDocumentIn] = Field(
        ..., description='strings or {"text": ...} objects (at most the server\'s max_client_batch)'
    )
    model: str | None = Field(None, description="accepted for compatibility; the server's loaded reranker answers")
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    return_documents: bool = Field(False, description="include each document's text")
    max_chunks_per_doc: int | None = Field(None, ge=1, description="accepted for compatibility, ignored")
    rank_fields: list[str] | None = Field(None, description="accepted for compatibility, ignored")


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
