"""A BEIR folder made from a training-pairs file, so that a dataset that has only pairs (WikiQA's
train_pairs.jsonl) gets a split to tune on (`densekit tune fusion`, `densekit eval`).

The corpus is every distinct passage of the file (positives and negatives, compared after
stripping white space), with ids p0, p1, ... in order of first appearance; each distinct query
text is one query (q0, q1, ...), judged relevant (grade 1) to every passage that a row lists as
its positive. Rows with the same query text are one query with the union of their positives.
A passage listed as a negative is only a corpus document: where its own row, or another row of
the same query, also lists it as positive, it counts as positive. Retrieval runs over the
whole pooled corpus, so every other query's passages are distractors as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from densekit.atomic import atomic_dir
from densekit.data.folders import check_split_name
from densekit.data.pairs import TrainingPair
from densekit.errors import InvalidInputError


def pairs_to_beir(pairs: list[TrainingPair], out: str | Path, split: str = "train") -> dict[str, int]:
    """Write `out/` (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) atomically; returns the counts."""
    with atomic_dir(out) as tmp:
        return write_beir_files(pairs, tmp, split)


def write_beir_files(pairs: list[TrainingPair], folder: Path, split: str = "train") -> dict[str, int]:
    """The BEIR files of `pairs` into an existing (temporary) folder; returns the counts."""
    if not pairs:
        raise InvalidInputError("the pairs file has no rows")
    check_split_name(split)
    doc_ids: dict[str, str] = {}
    query_ids: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for row, pair in enumerate(pairs, start=1):
        qid = query_ids.setdefault(pair.query.strip(), f"q{len(query_ids)}")
        passages = [t.strip() for t in (*pair.pos, *pair.neg)]
        if not all(passages):
            raise InvalidInputError(f"row {row} (query {pair.query[:60]!r}): an empty passage")
        for text in passages:
            doc_ids.setdefault(text, f"p{len(doc_ids)}")
        judged = qrels.setdefault(qid, {})
        for text in passages[: len(pair.pos)]:
            judged[doc_ids[text]] = 1
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for text, did in doc_ids.items():
            fh.write(json.dumps({"_id": did, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for text, qid in query_ids.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged in qrels.items():
            for did, grade in judged.items():
                fh.write(f"{qid}\t{did}\t{grade}\n")
    return {"documents": len(doc_ids), "queries": len(query_ids), "qrels": sum(len(j) for j in qrels.values())}
