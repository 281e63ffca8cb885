"""Lexical (BM25) and hybrid first stages of an evaluation: runs from a lexical index, and the
fusion of a dense run with a lexical one (the same fusion /search applies)."""

from __future__ import annotations

import time

from densekit.eval.trec import Run
from densekit.fusion import FusionSettings, fuse_hybrid
from densekit.index.lexical import LexicalIndex
from densekit.runs import truncate_run


def corpus_lexical_index(corpus: dict[str, dict]) -> tuple[LexicalIndex, dict[int, str]]:
    """A BM25 index of a BEIR corpus in memory (row i: the corpus's i-th document) and its row -> id map."""
    from densekit.data.beir import document_text

    ids = list(corpus)
    return LexicalIndex.build((i, document_text(corpus[d])) for i, d in enumerate(ids)), dict(enumerate(ids))


def lexical_first_stage(
    lexical: LexicalIndex, row_ids: dict[int, str], queries: dict[str, str], qrels: dict[str, dict[str, int]], top_k: int
) -> tuple[Run, dict[str, dict[str, float]], dict[str, float]]:
    """(run, exact BM25 scores of every judged-relevant document, timings) of `queries`. A query
    sharing no word with the corpus has an empty ranking."""
    t0 = time.perf_counter()
    qids = list(queries)
    hits = lexical.search([queries[q] for q in qids], top_k)
    run: Run = {q: {row_ids[r]: s for r, s in per_query if r in row_ids} for q, per_query in zip(qids, hits)}
    t1 = time.perf_counter()
    id_rows = {d: r for r, d in row_ids.items()}
    positives: dict[str, dict[str, float]] = {}
    for q in qids:
        relevant = {d: id_rows[d] for d, g in qrels.get(q, {}).items() if g > 0 and d in id_rows}
        if relevant:
            scores = lexical.document_scores(queries[q], relevant.values())
            positives[q] = {d: scores[r] for d, r in relevant.items() if r in scores}
    return run, positives, {"lexical_search_s": t1 - t0}


def hybrid_run(dense: Run, lexical: Run, fusion: FusionSettings, top_k: int) -> Run:
    """The fused run, cut to each query's top_k."""
    return truncate_run(fuse_hybrid(dense, lexical, fusion), top_k)
