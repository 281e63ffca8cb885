"""Live documents: `POST /documents` (batch upsert), `GET /documents/{id}`,
`DELETE /documents/{id}`. A 200 means the write is in the fsynced write-ahead log
(index/live.py): a restart, even after `kill -9`, still has it.

Every check of a write runs here, before it joins the index thread's shared write batch, so
that one bad request never fails (or half-applies) the requests batched with it. An id may
hold "/": the routes take the rest of the path as the id."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request

from densekit.data.beir import document_text
from densekit.errors import DocumentNotFoundError, InvalidInputError
from densekit.index.live import Delete, Upsert
from densekit.service.auth import require_api_key
from densekit.service.deps import check_texts, ready_state, settings_of, timings
from densekit.service.errors import ApiError, conflict, empty_input, not_ready, validation
from densekit.service.responses import RawJSON, render_document
from densekit.service.schemas import DeleteResponse, DocumentOut, UpsertRequest, UpsertResponse, errors
from densekit.service.validation import metadata_problem
from densekit.settings import Settings

router = APIRouter(tags=["documents"], dependencies=[Depends(require_api_key)])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": errors(400)[400]["model"], "description": "no document with this id"}}
_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": errors(400)[400]["model"], "description": "the server is read-only, or the index kind cannot remove/replace documents"}
}


def _writable(request: Request):
    state = ready_state(request)
    if state.index is None or state.search is None:
        raise not_ready("this server has no index loaded (start it with --index)")
    if state.live is None:
        raise conflict("this server's index is read-only (started with --read-only or several workers)")
    return state


def _check_metadata(docs: list[dict], s: Settings) -> None:
    """The server's own limits on metadata (the request model has already refused what JSON
    cannot carry back): nesting depth and size, naming the document."""
    for i, d in enumerate(docs):
        problem = metadata_problem(d["metadata"], s.max_metadata_depth)
        if problem is not None:
            raise validation(f"documents[{i}].{problem}")
        size = len(orjson.dumps(d["metadata"]))
        if size > s.max_metadata_bytes:
            raise validation(f"documents[{i}].metadata: {size} bytes as JSON, the limit is {s.max_metadata_bytes} (max_metadata_bytes)")


@router.post(
    "/documents",
    response_model=UpsertResponse,
    summary="add or replace documents (durable when answered)",
    responses={**errors(400, 401, 413, 422, 429, 503), **_CONFLICT},
)
async def upsert_documents(req: UpsertRequest, request: Request):
    state = _writable(request)
    s = settings_of(request)
    docs = [d.model_dump() for d in req.documents]
    if not docs:
        raise empty_input("documents: no document given")
    texts = [document_text(d) for d in docs]
    check_texts(texts, s, "documents")
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise validation("documents: the same id appears twice in one request")
    if any(not i.strip() for i in ids):
        raise empty_input("documents: an id is blank")
    _check_metadata(docs, s)
    tm = timings(request)
    vectors, _ = await state.embed.embed(texts, "document", tm, truncate=True)
    try:
        result = await state.search.write(Upsert(docs, vectors), tm)
    except InvalidInputError as exc:
        raise conflict(str(exc)) from None
    return UpsertResponse(upserted=result.count, documents=len(state.index))


@router.get(
    "/documents/{doc_id:path}",
    response_model=DocumentOut,
    summary="one document of the index by id",
    responses={**errors(401, 503), **_NOT_FOUND},
)
async def get_document(doc_id: str, request: Request):
    state = ready_state(request)
    if state.index is None or state.search is None:
        raise not_ready("this server has no index loaded (start it with --index)")
    doc = await state.search.get(doc_id, timings(request))
    if doc is None:
        raise ApiError(404, "not_found", f"no document with id {doc_id!r}")
    return RawJSON(render_document({"id": doc["id"], "title": doc["title"], "text": doc["text"], "metadata": doc["metadata"]}))


@router.delete(
    "/documents/{doc_id:path}",
    response_model=DeleteResponse,
    summary="remove a document (durable when answered)",
    responses={**errors(401, 429, 503), **_NOT_FOUND, **_CONFLICT},
)
async def delete_document(doc_id: str, request: Request):
    state = _writable(request)
    try:
        await state.search.write(Delete([doc_id]), timings(request))
    except DocumentNotFoundError:
        raise ApiError(404, "not_found", f"no document with id {doc_id!r}") from None
    except InvalidInputError as exc:
        raise conflict(str(exc)) from None
    return DeleteResponse(deleted=doc_id, documents=len(state.index))
