"""Request and response models of densekit's own routes (pydantic); the OpenAPI page
documents them. The shapes borrowed from TEI, OpenAI and Cohere/Jina are in
`compat_schemas.py`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from densekit.service.validation import DocumentId, Metadata, Text


class SearchParamsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    nprobe: int | None = Field(None, ge=1, le=1_000_000, description="IVF kinds: inverted lists visited per query")
    ef_search: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        validation_alias=AliasChoices("ef_search", "efSearch"),
        description="HNSW: candidate list size (faiss's efSearch)",
    )


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Text | None = Field(None, description="one query (must not be empty); give either `query` or `queries`")
    queries: list[Text] | None = Field(None, description="a batch of queries, answered in order (at most the server's max_client_batch)")
    top_k: int = Field(10, ge=1, le=100_000, description="documents to return per query (at most the server's max_top_k)")
    rerank: bool = Field(False, description="rescore the first-stage hits with the server's reranker (two-stage retrieval)")
    rerank_top_n: int | None = Field(
        None, ge=1, le=100_000, description="first-stage hits the reranker rescores (default: the server's rerank_top_n; at least top_k)"
    )
    rerank_fusion: Literal["none", "rrf"] = Field(
        "none",
        description="with rerank: 'none' orders by the reranker's score; 'rrf' by reciprocal rank fusion of the dense and reranker ranks "
        "(1/(60+rank) summed), which keeps the retriever's signal (BENCHMARKS.md: the best SciFact system)",
    )
    search_params: SearchParamsIn | None = Field(
        None, description='per-request index parameters, e.g. {"nprobe": 32} or {"ef_search": 128}'
    )
    filter: dict[str, Any] | None = Field(
        None,
        description="only documents whose metadata matches, selected inside the index (top_k is filled from them): "
        '{"field": value} equality, {"field": {"$in": [...]}}, {"$ne": v}, numeric {"$gt"|"$gte"|"$lt"|"$lte": x}, '
        '{"$and": [...]}, {"$or": [...]}; fields are top-level metadata keys (a dot is part of the name)',
    )
    mode: Literal["dense", "lexical", "hybrid"] | None = Field(
        None,
        description="'dense' (the bi-encoder and faiss), 'lexical' (BM25 over the index's lexical part) or 'hybrid' (both lists "
        "fused); default: the index's own (`densekit index build --mode`). lexical and hybrid need an index built with --lexical",
    )
    fusion: Literal["rrf", "convex"] | None = Field(
        None,
        description="hybrid: 'rrf' (reciprocal rank fusion) or 'convex' (alpha * dense + (1 - alpha) * lexical, min-max normalised); default: the index's",
    )
    alpha: float | None = Field(
        None, ge=0.0, le=1.0, description="hybrid with convex fusion: weight of the dense scores; default: the index's"
    )
    include_text: bool = Field(True, description="false: hits carry no `title` and `text` (smaller answers)")
    include_metadata: bool = Field(True, description="false: hits carry no `metadata` (smaller answers)")

    @model_validator(mode="after")
    def _one_of(self) -> SearchRequest:
        if (self.query is None) == (self.queries is None):
            raise ValueError("give exactly one of `query` (a string) or `queries` (a list of strings)")
        return self


class SearchHitOut(BaseModel):
    id: str = Field(..., description="document id")
    score: float = Field(..., description="similarity; when reranked the reranker's score, or the fused RRF score with rerank_fusion 'rrf'")
    dense_score: float | None = Field(
        None, description="first-stage score (only when reranked or hybrid; hybrid: the dense similarity, absent when only BM25 found it)"
    )
    lexical_score: float | None = Field(None, description="hybrid: the BM25 score (absent when only the dense search found it)")
    rerank_score: float | None = Field(None, description="the reranker's score (only when reranked)")
    title: str = Field("", description="document title (absent with include_text false)")
    text: str = Field("", description="document text (absent with include_text false)")
    metadata: dict[str, Any] | None = Field(
        default_factory=dict,
        description="document metadata (absent with include_metadata false); null when the stored metadata cannot be written as JSON",
    )
    metadata_error: str | None = Field(None, description="why `metadata` is null (only then)")


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHitOut]
    partial: bool | None = Field(
        None, description="true when some shards of a distributed index were down and the server answers without them (--allow-partial)"
    )
    missing_shards: list[str] | None = Field(None, description="the shards whose documents this answer lacks (only when partial)")
    took_ms: float = Field(..., description="server-side time for this request")


class QueryHits(BaseModel):
    query: str
    hits: list[SearchHitOut]


class BatchSearchResponse(BaseModel):
    results: list[QueryHits] = Field(..., description="one entry per query, in request order")
    partial: bool | None = Field(
        None, description="true when some shards of a distributed index were down and the server answers without them (--allow-partial)"
    )
    missing_shards: list[str] | None = Field(None, description="the shards whose documents this answer lacks (only when partial)")
    took_ms: float = Field(..., description="server-side time for this request")


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DocumentId = Field(
        ...,
        min_length=1,
        max_length=512,
        description='document id; an existing id is replaced. Any printable text ("/" included) without a "." or ".." path segment',
    )
    title: Text = Field("", description="title (encoded as BEIR does: title + ' ' + text)")
    text: Text = Field(..., description="document text")
    metadata: Metadata = Field(
        default_factory=dict,
        description="a JSON object returned with search hits: integers within 64 bits, no NaN/Infinity, "
        "at most max_metadata_depth levels deep and max_metadata_bytes as compact JSON",
    )


class UpsertRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    documents: list[DocumentIn] = Field(..., description="documents to add or replace (at most the server's max_client_batch)")


class UpsertResponse(BaseModel):
    upserted: int = Field(..., description="documents written (durable when this response arrives)")
    documents: int = Field(..., description="documents in the index now")


class DeleteResponse(BaseModel):
    deleted: str = Field(..., description="id of the removed document")
    documents: int = Field(..., description="documents in the index now")


class DocumentOut(BaseModel):
    id: str
    title: str = ""
    text: str = ""
    metadata: dict[str, Any] | None = Field(default_factory=dict, description="null when the stored metadata cannot be written as JSON")
    metadata_error: str | None = Field(None, description="why `metadata` is null (only then)")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    detail: str = ""


class InfoResponse(BaseModel):
    version: str
    model: str | None
    model_dim: int | None
    max_input_tokens: int | None = Field(None, description="bi-encoder input length; longer inputs are truncated or refused (`truncate`)")
    device: str | None
    backend: str = Field("", description="inference backend and its settings")
    runtime: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="backend and precision of each loaded model: {'encoder': {...}, 'reranker': {...}}"
    )
    index: dict[str, Any] | None
    reranker: str | None
    limits: dict[str, Any] = Field(..., description="every server limit (settings), and whether API keys are required")


class ErrorResponse(BaseModel):
    error: str = Field(..., description="what went wrong, for people")
    error_type: str = Field(
        ...,
        description="machine-readable kind: empty_input, unauthorized, payload_too_large, validation, overloaded, not_ready, not_found, ...",
    )


# Documented on every route so clients and schemathesis know the error shape.
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "empty input"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    413: {"model": ErrorResponse, "description": "too many inputs, too long an input, too large a payload or answer"},
    422: {"model": ErrorResponse, "description": "invalid request"},
    429: {"model": ErrorResponse, "description": "overloaded: the queue is full, retry later"},
    503: {"model": ErrorResponse, "description": "not ready: models or index still loading"},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERRORS[c] for c in codes}
