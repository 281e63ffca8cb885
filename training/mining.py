"""Hard-negative mining with the current model and a faiss index.

For each training query: retrieve with the model, look at a rank window (e.g. ranks
10-100, skipping the top where unjudged positives crowd), drop every judged positive and
every candidate that scores too close to the query's positive (likely an unjudged positive:
a false negative), then take `num_negatives` of what is left (at random, seeded, or the top).
The result is written as pairs JSONL ({query, pos, neg, qid, pos_ids, neg_ids}) so a run can
be repeated without mining again.

"Too close" follows sentence-transformers' `mine_hard_negatives` (its absolute_margin,
relative_margin and max_score); with s+ the reference positive score, a candidate scoring s
is dropped when

    margin (absolute):  s > s+ - margin
    relative_margin:    s > s+ - |s+| * relative_margin   (= (1 - relative_margin) * s+ for s+ >= 0)
    max_score:          s > max_score

Each filter is off when None; all that are set apply. s+ is the query's best-scoring judged
positive (``positive_reference="best"``, densekit's default: NFCorpus judges ~40 documents
per query, some barely related, and its weakest positive would empty most windows) or its
weakest (``"weakest"``, the choice sentence-transformers makes). The absolute form of the
relative margin keeps the threshold below s+ when s+ is negative (dot-product models).
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
    margin: float | None = 0.05  # absolute margin below the reference positive score
    num_negatives: int = 4
    sampling: str = "random"
    seed: int = 0
    fill_short: str = "random"  # "random": top up with random corpus documents; "none": leave short
    relative_margin: float | None = None  # fraction of |reference positive score|
    max_score: float | None = None
    positive_reference: str = "best"  # "best" or "weakest" judged positive

    def ceiling(self, positive_score: float) -> tuple[float, float, float]:
        """Scores above which a candidate is dropped: (margin, relative margin, max_score);
        inf where that filter is off."""
        inf = float("inf")
        finite = positive_score not in (inf, -inf)
        absolute = positive_score - self.margin if self.margin is not None and finite else inf
        relative = positive_score - abs(positive_score) * self.relative_margin if self.relative_margin is not None and finite else inf
        return absolute, relative, self.max_score if self.max_score is not None else inf


@dataclass
class MiningStats:
    queries: int = 0
    negatives: int = 0
    skipped_judged: int = 0
    skipped_margin: int = 0
    skipped_relative_margin: int = 0
    skipped_max_score: int = 0
    queries_short: int = 0  # fewer than num_negatives survived the filters
    filled_random: int = 0  # random corpus documents added to short queries

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def select_negatives(
    ranked: list[tuple[str, float]],
    judged_positive: set[str],
    positive_score: float,
    params: MiningParams,
    rng: random.Random,
    stats: MiningStats | None = None,
) -> list[tuple[str, float]]:
    """Pick negatives from `ranked` ((doc id, score), best first) for one query.
    `positive_score` is the reference positive score (inf: no margin applies); a candidate
    dropped by several filters is counted under the first of judged, margin, relative
    margin, max_score."""
    window = ranked[params.rank_start : params.rank_end]
    absolute, relative, max_score = params.ceiling(positive_score)
    keep = []
    for doc_id, score in window:
        reason = None
        if doc_id in judged_positive:
            reason = "skipped_judged"
        elif score > absolute:
            reason = "skipped_margin"
        elif score > relative:
            reason = "skipped_relative_margin"
        elif score > max_score:
            reason = "skipped_max_score"
        if reason is not None:
            if stats:
                setattr(stats, reason, getattr(stats, reason) + 1)
            continue
        keep.append((doc_id, score))
    if params.sampling == "random" and len(keep) > params.num_negatives:
        keep = sorted(rng.sample(keep, params.num_negatives), key=lambda x: -x[1])
    return keep[: params.num_negatives]


def reference_score(positive_scores, how: str = "best") -> float:
    """The positive score the margins are measured from: the best or the weakest of the
    query's judged positives; inf (no margin applies) when none is in the corpus."""
    if len(positive_scores) == 0:
        return float("inf")
    if how not in ("best", "weakest"):
        raise ValueError(f"positive_reference must be 'best' or 'weakest', got {how!r}")
    return float(np.max(positive_scores) if how == "best" else np.min(positive_scores))


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
        reference = reference_score(doc_vecs[pos_rows] @ q_vecs[i], params.positive_reference)
        ranked = [(doc_ids[r], float(s)) for s, r in zip(scores[i], rows[i]) if r >= 0]
        chosen = select_negatives(ranked, positives, reference, params, rng, stats)
        if len(chosen) < params.num_negatives:
            stats.queries_short += 1
            if params.fill_short == "random":
                # A query whose positive ranks below the window loses every candidate to the
                # margins; dropping it would drop exactly the hardest queries, so it gets random
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
