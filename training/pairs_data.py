"""Training examples for bi-encoders: BEIR train qrels and/or {query, pos, neg} JSONL.

Both sources become `TrainingPair`s (one per query, all its positives and negatives), and
those become a `datasets.Dataset` with the columns sentence-transformers' losses expect:
`anchor`, `positive`, `negative_1` .. `negative_H`, one row per (query, positive).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from densekit.data import load_beir
from densekit.data.beir import BeirDataset, document_text
from densekit.data.pairs import TrainingPair, load_pairs

if TYPE_CHECKING:
    from densekit.training.row_keys import RowKeys


def pairs_from_beir(dataset: BeirDataset, min_grade: int = 1, max_queries: int | None = None, seed: int = 0) -> list[BeirPair]:
    """One pair per query with a judged positive (grade >= min_grade); document ids are
    kept in `pos_ids` so mining can exclude every judged positive."""
    qids = sorted(q for q, judged in dataset.qrels.items() if any(g >= min_grade and d in dataset.corpus for d, g in judged.items()))
    if max_queries is not None and max_queries < len(qids):
        qids = sorted(random.Random(seed).sample(qids, max_queries))
    pairs = []
    for qid in qids:
        pos_ids = sorted(d for d, g in dataset.qrels[qid].items() if g >= min_grade and d in dataset.corpus)
        pair = BeirPair(query=dataset.queries[qid], pos=[document_text(dataset.corpus[d]) for d in pos_ids], qid=qid, pos_ids=pos_ids)
        pairs.append(pair)
    return pairs


@dataclass
class BeirPair(TrainingPair):
    """A TrainingPair that remembers which corpus documents its texts came from."""

    pos_ids: list[str] = field(default_factory=list)
    neg_ids: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        row = super().to_json()
        row["pos_ids"] = self.pos_ids
        row["neg_ids"] = self.neg_ids
        return row


@dataclass
class ExampleStats:
    queries: int = 0
    rows: int = 0
    rows_with_reused_negatives: int = 0
    queries_skipped_no_negatives: int = 0
    by_source: dict[str, int] = field(default_factory=dict)


def build_rows(
    pairs: list[TrainingPair], num_negatives: int, seed: int = 0, keys: RowKeys | None = None, source: int = 0
) -> tuple[dict[str, list], ExampleStats]:
    """Columns {anchor, positive, negative_1..H}: one row per (query, positive).

    A query's negatives are dealt out round-robin over its rows so each row gets H distinct
    ones where the query has enough (reused cyclically otherwise); a query with no negative
    at all cannot fill the columns and is skipped (counted in the stats). With `keys`, a
    `label` column holds each row's integer keys ([source, query, positive, negatives...]) for
    the false-negative mask."""
    rng = random.Random(seed)
    cols: dict[str, list] = {"anchor": [], "positive": []}
    for h in range(1, num_negatives + 1):
        cols[f"negative_{h}"] = []
    if keys is not None:
        cols["label"] = []
    stats = ExampleStats()
    for pair in pairs:
        negs = list(dict.fromkeys(n for n in pair.neg if n not in pair.pos))
        if num_negatives and not negs:
            stats.queries_skipped_no_negatives += 1
            continue
        stats.queries += 1
        rng.shuffle(negs)
        for r, pos in enumerate(pair.pos):
            cols["anchor"].append(pair.query)
            cols["positive"].append(pos)
            if num_negatives and (r + 1) * num_negatives > len(negs):
                stats.rows_with_reused_negatives += 1
            row_negs = [negs[(r * num_negatives + h) % len(negs)] for h in range(num_negatives)]
            for h, neg in enumerate(row_negs):
                cols[f"negative_{h + 1}"].append(neg)
            if keys is not None:
                cols["label"].append(keys.row(source, pair.query, [pos, *row_negs]))
            stats.rows += 1
    return cols, stats


def to_dataset(cols: dict[str, list[str]]):
    from datasets import Dataset

    return Dataset.from_dict(cols)


def load_pair_files(paths: Sequence[str | Path]) -> list[TrainingPair]:
    out: list[TrainingPair] = []
    for p in paths:
        out.extend(load_pairs(Path(p).expanduser()))
    return out


def load_beir_train(folder: str | Path, split: str = "train") -> BeirDataset:
    return load_beir(folder, split)
