"""POST /search: dense, lexical (BM25) or hybrid retrieval over the loaded index, one query
or a batch, optionally reranked (two-stage: the first `rerank_top_n` first-stage hits are
rescored by the reranker)."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request

from densekit.data.beir import document_text
from densekit.errors import ConfigError
from densekit.fusion import FusionSettings, fuse_hybrid, fuse_rrf
from densekit.index.filters import parse_filter
from densekit.service.auth import require_api_key
from densekit.service.deps import check_text, check_texts, ready_state, settings_of, timings
from densekit.service.engines import Hit, PartialHits
from densekit.service.errors import no_reranker, not_ready, too_large, validation
from densekit.service.responses import HitsWriter, RawJSON, ResponseTooLarge, dumps
from densekit.service.schemas import BatchSearchResponse, SearchRequest, SearchResponse, errors

router = APIRouter(tags=["search"], dependencies=[Depends(require_api_key)])


# Hybrid search fuses at least this many hits of each list (fewer only past max_top_k):
# fusing two top-10 lists would drop documents that rank 11th in one list and 1st in the other.
HYBRID_DEPTH = 100


def _hit(h: Hit, dense: float | None = None, score: float | None = None, rerank: float | None = None, lexical: float | None = None) -> dict:
    out = {"id": h.id, "score": h.score if score is None else score, "title": h.title, "text": h.text, "metadata": h.metadata}
    if dense is not None:
        out["dense_score"] = dense
    if lexical is not None:
        out["lexical_score"] = lexical
    if rerank is not None:
        out["rerank_score"] = rerank
    return out


def _fused(dense: list[Hit], lexical: list[Hit], fusion: FusionSettings, k: int) -> tuple[list[Hit], dict[str, dict]]:
    """One query's hybrid hits (score: the fused one), best first, and each hit's component scores."""
    by_id = {h.id: h for h in lexical} | {h.id: h for h in dense}
    fused = fuse_hybrid({"q": {h.id: h.score for h in dense}}, {"q": {h.id: h.score for h in lexical}}, fusion).get("q", {})
    dense_s, lexical_s = {h.id: h.score for h in dense}, {h.id: h.score for h in lexical}
    order = sorted(fused, key=lambda d: (-fused[d], d))[:k]
    hits = [Hit(d, fused[d], by_id[d].title, by_id[d].text, by_id[d].metadata) for d in order]
    return hits, {d: {"dense": dense_s.get(d), "lexical": lexical_s.get(d)} for d in order}


@router.post(
    "/search",
    response_model=SearchResponse | BatchSearchResponse,
    summary="dense, lexical (BM25) or hybrid search over the index (one query or a batch), optionally reranked",
    description=(
        "Give `query` for one query (answer: `{query, hits, took_ms}`) or `queries` for a batch "
        "(answer: `{results: [{query, hits}], took_ms}`). `mode` picks the first stage: 'dense', 'lexical' "
        "(BM25; a query of stop-words or unknown words has no hits) or 'hybrid' (both fused by `fusion`; "
        "default mode and fusion: the index's). With `rerank: true` the first "
        "`rerank_top_n` first-stage hits of each query are rescored by the server's reranker and the best "
        '`top_k` returned; `score` is then the reranker\'s (with `rerank_fusion: "rrf"` the reciprocal rank fusion '
        "of both stages), `dense_score` the first stage's and `rerank_score` the reranker's."
    ),
    responses=errors(400, 401, 413, 422, 429, 503),
)
async def search(req: SearchRequest, request: Request):
    t0 = time.perf_counter()
    state = ready_state(request)
    s = settings_of(request)
    tm = timings(request)
    if state.index is None or state.search is None:
        raise not_ready("this server has no index loaded (start it with --index)")
    queries = [req.query] if req.query is not None else req.queries or []
    if req.query is not None:
        check_text(req.query, s, "query")
    else:
        check_texts(queries, s, "queries")
    if req.top_k > s.max_top_k:
        raise validation(f"top_k: must be at most {s.max_top_k} (max_top_k)")
    first_k = req.top_k
    if req.rerank:
        if state.rerank is None:
            raise no_reranker()
        # The server default is capped by max_top_k; only an explicit value can be refused.
        first_k = max(req.top_k, req.rerank_top_n or min(s.rerank_top_n, s.max_top_k))
        if first_k > s.max_top_k:
            raise validation(f"rerank_top_n: must be at most {s.max_top_k} (max_top_k)")
    elif req.rerank_top_n is not None and req.rerank_top_n > s.max_top_k:
        raise validation(f"rerank_top_n: must be at most {s.max_top_k} (max_top_k)")
    params = req.search_params.model_dump(exclude_none=True) if req.search_params else {}
    try:
        where = parse_filter(req.filter)
    except ConfigError as exc:
        raise validation(f"{exc.field}: {exc.message}") from None

    manifest = state.index.manifest
    mode = req.mode or manifest.search_mode
    if mode != "dense" and manifest.lexical is None:
        raise validation(
            f"mode: '{mode}' search needs an index with a lexical (BM25) part; this one has none (build it with `densekit index build --lexical`)",
            param="mode",
        )
    overrides = {k: v for k, v in {"method": req.fusion, "alpha": req.alpha}.items() if v is not None}
    fusion = manifest.fusion.model_copy(update=overrides)
    depth = max(first_k, min(HYBRID_DEPTH, s.max_top_k)) if mode == "hybrid" else first_k

    per_query: list[list[Hit]]
    components: list[dict[str, dict]] | None = None
    missing: list[str] = []
    if mode != "lexical":
        vectors, _ = await state.embed.embed(queries, "query", tm, truncate=True)
        per_query = await state.search.search(vectors, depth, params, tm, where=where)
        if isinstance(per_query, PartialHits):
            missing = per_query.missing_shards
    if mode != "dense":
        lexical = await state.search.lexical(queries, depth, tm, where=where)
        if mode == "lexical":
            per_query = lexical
        else:
            fused = [_fused(d, lx, fusion, first_k) for d, lx in zip(per_query, lexical)]
            per_query, components = [f[0] for f in fused], [f[1] for f in fused]

    hits_out: list[list[dict]]
    if req.rerank:
        hits_out = list(
            await asyncio.gather(*(_rerank(state, q, hits, req.top_k, req.rerank_fusion, tm) for q, hits in zip(queries, per_query)))
        )
    elif components is not None:
        hits_out = [
            [_hit(h, dense=c[h.id]["dense"], lexical=c[h.id]["lexical"]) for h in hits[: req.top_k]]
            for hits, c in zip(per_query, components)
        ]
    else:
        hits_out = [[_hit(h) for h in hits] for hits in per_query]
    return _answer(req, queries, hits_out, s.max_response_bytes, t0, missing)


def _answer(req: SearchRequest, queries: list[str], hits_out: list[list[dict]], limit: int, t0: float, missing: list[str]) -> RawJSON:
    """The answer, each hit serialised on its own (a stored document whose metadata cannot be
    written is sent with metadata null) and refused with 413 past max_response_bytes. Hits
    that lack the documents of `missing` shards say so (`partial`, `missing_shards`)."""
    drop = ([] if req.include_text else ["title", "text"]) + ([] if req.include_metadata else ["metadata"])
    if drop:
        hits_out = [[{k: v for k, v in h.items() if k not in drop} for h in hits] for hits in hits_out]
    writer = HitsWriter(limit)
    try:
        if req.query is not None:
            head = b'{"query":' + writer.add(dumps(req.query)) + b',"hits":' + writer.hits(hits_out[0])
        else:
            parts = (b'{"query":' + writer.add(dumps(q)) + b',"hits":' + writer.hits(h) + b"}" for q, h in zip(queries, hits_out))
            head = b'{"results":[' + b",".join(parts) + b"]"
    except ResponseTooLarge as exc:
        raise too_large(str(exc)) from None
    if missing:
        head += b',"partial":true,"missing_shards":' + dumps(missing)
    took = (time.perf_counter() - t0) * 1000
    return RawJSON(head + b',"took_ms":' + dumps(took) + b"}")


async def _rerank(state, query: str, hits: list[Hit], top_k: int, fusion: str, tm) -> list[dict]:
    if not hits:
        return []
    texts = [document_text({"title": h.title, "text": h.text}) for h in hits]
    result = await state.rerank.score(query, texts, tm)
    scores = list(result.scores)
    if fusion == "rrf":
        # The same fusion `densekit eval` measures (densekit.fusion.fuse_rrf), on this query's hits.
        fused = fuse_rrf([{"q": {h.id: h.score for h in hits}}, {"q": {h.id: s for h, s in zip(hits, scores)}}])["q"]
        final = [fused[h.id] for h in hits]
    else:
        final = scores
    order = sorted(range(len(hits)), key=lambda i: -final[i])[:top_k]
    return [_hit(hits[i], dense=hits[i].score, score=final[i], rerank=scores[i]) for i in order]
