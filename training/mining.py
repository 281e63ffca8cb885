"""Hard-negative mining with the current model and a faiss index.

For each training query: retrieve with the model, look at a rank window (e.g. ranks
10-100, skipping the top where unjudged positives crowd), drop every judged positive and
every candidate that scores within `margin` of the query's best positive (likely an
unjudged positive: a false negative), then take `num_negatives` of what is left (at random,
seeded, or the top). The result is written as pairs JSONL ({query, pos, neg, qid, pos_ids,
neg_ids}) so a run can be repeated without mining again.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from densekit.atomic import write_text_atomic
from densekit.data.beir import BeirDataset, document_text
from densekit.training.pairs_data import BeirPair


@dataclass
class MiningParams:
    rank_start: int = 10
    rank_end: int = 100
    margin: float = 0.05
    num_negatives: int = 4
    sampling: str = "random"
    seed: int = 0
    fill_short: str = "random"  # "random": top up with random corpus documents; "none": leave short


@dataclass
class MiningStats:
    queries: int = 0
    negatives: int = 0
    skipped_judged: int = 0
    skipped_margin: int = 0
    queries_short: int = 0  # fewer than num_negatives survived the filters
    filled_random: int = 0  # random corpus documents added to short queries

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def select_negatives(
    ranked: list[tuple[str, float]],
    judged_positive: set[str],
    best_positive_score: float,
    params: MiningParams,
    rng: random.Random,
    stats: MiningStats | None = None,
) -> list[tuple[str, float]]:
    """Pick negatives from `ranked` ((doc id, score), best first) for one query."""
    window = ranked[params.rank_start : params.rank_end]
    ceiling = best_positive_score - params.margin
    keep = []
    for doc_id, score in window:
        if doc_id in judged_positive:
            if stats:
                stats.skipped_judged += 1
            continue
        if score > ceiling:
            if stats:
                stats.skipped_margin += 1
            continue
        keep.append((doc_id, score))
    if params.sampling == "random" and len(keep) > params.num_negatives:
        keep = sorted(rng.sample(keep, params.num_negatives), key=lambda x: -x[1])
    return keep[: params.num_negatives]


def mine_hard_negatives(
    encoder,
    dataset: BeirDataset,
    pairs: list[BeirPair],
    params: MiningParams,
    judged: dict[str, dict[str, int]] | None = None,
    progress: bool = True,
) -> tuple[list[BeirPair], MiningStats]:
    """Fill `neg`/`neg_ids` of each pair from `dataset.corpus` using `encoder`.

    `judged` (default: the dataset's qrels) lists every document that must never be a
    negative for a query: any grade > 0, whatever `min_grade` chose as training positives."""
    import faiss

    from densekit.index.dense_index import encode_corpus

    judged = dataset.qrels if judged is None else judged
    doc_ids = list(dataset.corpus)
    doc_vecs = np.ascontiguousarray(encode_corpus(encoder, dataset.corpus, doc_ids, progress=progress), dtype=np.float32)
    row_of = {d: i for i, d in enumerate(doc_ids)}
    index = faiss.IndexFlatIP(doc_vecs.shape[1])
    index.add(doc_vecs)
    q_vecs = encoder.encode_queries([p.query for p in pairs], progress=progress)
    k = min(params.rank_end, len(doc_ids))
    scores, rows = index.search(np.ascontiguousarray(q_vecs, dtype=np.float32), k)
    rng = random.Random(params.seed)
    stats = MiningStats()
    out: list[BeirPair] = []
    for i, pair in enumerate(pairs):
        positives = {d for d, g in judged.get(pair.qid or "", {}).items() if g > 0} | set(pair.pos_ids)
        pos_rows = [row_of[d] for d in pair.pos_ids if d in row_of]
        best_pos = float(np.max(doc_vecs[pos_rows] @ q_vecs[i])) if pos_rows else float("inf")
        ranked = [(doc_ids[r], float(s)) for s, r in zip(scores[i], rows[i]) if r >= 0]
        chosen = select_negatives(ranked, positives, best_pos, params, rng, stats)
        if len(chosen) < params.num_negatives:
            stats.queries_short += 1
            if params.fill_short == "random":
                # A query whose positive ranks below the window loses every candidate to the
                # margin; dropping it would drop exactly the hardest queries, so it gets random
                # (easy, but never judged-positive) documents instead.
                extra = _random_fill(doc_ids, positives | {d for d, _ in chosen}, params.num_negatives - len(chosen), rng)
                stats.filled_random += len(extra)
                chosen += extra
        stats.queries += 1
        stats.negatives += len(chosen)
        neg_ids = [d for d, _ in chosen]
        out.append(
            BeirPair(
                query=pair.query,
                pos=pair.pos,
                neg=[document_text(dataset.corpus[d]) for d in neg_ids],
                qid=pair.qid,
                pos_ids=pair.pos_ids,
                neg_ids=neg_ids,
            )
        )
    return out, stats


def _random_fill(doc_ids: list[str], exclude: set[str], n: int, rng: random.Random) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for _ in range(20 * n):  # rejection sampling: the excluded set is tiny next to the corpus
        if len(out) == n:
            break
        d = doc_ids[rng.randrange(len(doc_ids))]
        if d not in exclude:
            exclude = exclude | {d}
            out.append((d, float("nan")))
    return out


def write_mined(pairs: list[BeirPair], path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, "".join(json.dumps(p.to_json(), ensure_ascii=False) + "\n" for p in pairs))
    return path


def read_mined(path: str | Path) -> list[BeirPair]:
    """Load a mined file (pairs JSONL; ids are optional) back into pairs."""
    from densekit.data.pairs import load_pairs

    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        raw = [json.loads(line) for line in fh if line.strip()]
    for base, obj in zip(load_pairs(path), raw):
        rows.append(
            BeirPair(
                query=base.query,
                pos=base.pos,
                neg=base.neg,
                qid=base.qid,
                pos_ids=list(obj.get("pos_ids", [])),
                neg_ids=list(obj.get("neg_ids", [])),
            )
        )
    return rows
