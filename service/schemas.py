"""Request and response models of the HTTP API (pydantic); the OpenAPI page documents them."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(..., description="the query text (must not be empty)", max_length=100_000)
    top_k: int = Field(10, ge=1, le=10_000, description="number of documents to return (at most the server's max_top_k)")
    rerank: bool = Field(False, description="rerank the first-stage hits with the server's reranker")
    rerank_top_n: int | None = Field(None, ge=1, le=10_000, description="first-stage hits passed to the reranker (default: the server's rerank_top_n)")
    search_params: dict[str, int | float] | None = Field(None, description="per-query index parameters, e.g. {\"nprobe\": 32} or {\"efSearch\": 128}")


class SearchHitOut(BaseModel):
    id: str = Field(..., description="document id")
    score: float = Field(..., description="similarity (or reranker score when reranked)")
    title: str = Field("", description="document title")
    text: str = Field("", description="document text")
    metadata: dict[str, Any] = Field(default_factory=dict, description="document metadata")


class SearchResponse(BaseModel):
    query: str
    hits: list[SearchHitOut]
    took_ms: float = Field(..., description="server-side time for this request")


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    detail: str = ""


class InfoResponse(BaseModel):
    version: str
    model: str | None
    model_dim: int | None
    device: str | None
    index: dict[str, Any] | None
    reranker: str | None
    limits: dict[str, Any]
