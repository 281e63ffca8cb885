"""Dev queries for a reranker run's learning curve: chosen once, never trained on.

Per training dataset (`eval.dev`):

- a BEIR dataset whose folder has qrels for `eval.dev.split` (NFCorpus ships `dev`) draws
  its dev queries there; any of them that is also a training query leaves the training set;
- another BEIR dataset holds a seeded draw of its training queries out (taken out before
  negatives are mined, so the dev queries never reach the trainer);
- a pairs-only dataset (WikiQA's `train_pairs.jsonl`) holds a seeded draw of its pairs
  out; each such query is reranked over its own candidates (its positives and negatives).

The first stage is the run's dense retriever (`negatives.retriever`): its top `top_n` of
the corpus for a BEIR query, its order of the query's own candidates for a pairs query.
The draw depends only on the run's seed and the dataset's label, so an SFT and a CL run of
one seed measure the same queries.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from densekit.data import load_beir
from densekit.data.beir import BeirDataset
from densekit.data.pairs import TrainingPair
from densekit.errors import ConfigError
from densekit.runs import Run
from densekit.training.rerank.config import DevConfig


@dataclass
class DevSet:
    """One dataset's dev queries, their judgements, and the documents to rerank."""

    name: str
    dataset: BeirDataset  # the dev queries and qrels; the corpus (or the held-out pairs' candidates)
    source: str  # where the queries came from, for the run's notes
    candidates: dict[str, list[str]] | None = None  # pairs datasets: each query's own documents
    first_stage: Run = field(default_factory=dict)


def _draw(label: str, candidates: list[str], dev: DevConfig, seed: int, held_out_of_training: bool) -> list[str]:
    k = dev.size(len(candidates))
    if held_out_of_training and k >= len(candidates):
        raise ConfigError(
            "eval.dev",
            f"dataset '{label}' has {len(candidates)} training queries: holding {k} out for dev leaves none to train on",
        )
    return sorted(random.Random(f"{seed}:dev:{label}").sample(sorted(candidates), k))


def beir_dev(label: str, folder: Path, train: BeirDataset, min_grade: int, dev: DevConfig, seed: int) -> tuple[DevSet, set[str]]:
    """(dev set, training query ids to leave out) of one BEIR dataset."""
    if dev.split is not None and dev.split != train.split and (folder / "qrels" / f"{dev.split}.tsv").is_file():
        ds = load_beir(folder, dev.split, corpus=train.corpus)
        candidates = [q for q, j in ds.qrels.items() if q in ds.queries and any(g > 0 and d in ds.corpus for d, g in j.items())]
        qids = _draw(label, candidates, dev, seed, held_out_of_training=False)
        source = f"qrels split '{dev.split}'"
    else:
        ds = train
        candidates = [q for q, j in ds.qrels.items() if q in ds.queries and any(g >= min_grade and d in ds.corpus for d, g in j.items())]
        qids = _draw(label, candidates, dev, seed, held_out_of_training=True)
        source = f"held out of '{train.split}'"
    dataset = BeirDataset(
        name=label,
        folder=folder,
        split=ds.split,
        corpus=train.corpus,
        queries={q: ds.queries[q] for q in qids},
        qrels={q: dict(ds.qrels[q]) for q in qids},
    )
    held = set(qids) & set(train.qrels)  # a dev query is never a training query
    return DevSet(label, dataset, source), held


def pairs_dev(label: str, pairs: list[TrainingPair], dev: DevConfig, seed: int) -> tuple[DevSet, list[TrainingPair]]:
    """(dev set, the pairs left to train on) of a pairs-only dataset."""
    usable = [i for i, p in enumerate(pairs) if p.pos and p.neg]
    picked = [int(i) for i in _draw(label, [str(i) for i in usable], dev, seed, held_out_of_training=True)]
    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    candidates: dict[str, list[str]] = {}
    for i in picked:
        p = pairs[i]
        qid = f"q{i}"
        queries[qid] = p.query
        docs = [(f"{qid}-p{j}", text, 1) for j, text in enumerate(p.pos)] + [(f"{qid}-n{j}", text, 0) for j, text in enumerate(p.neg)]
        for doc_id, text, _ in docs:
            corpus[doc_id] = {"title": "", "text": text}
        qrels[qid] = {doc_id: grade for doc_id, _, grade in docs}
        candidates[qid] = [doc_id for doc_id, _, _ in docs]
    dev_queries = set(queries.values())
    rest = [p for p in pairs if p.query not in dev_queries]
    dataset = BeirDataset(name=label, folder=Path("."), split="dev", corpus=corpus, queries=queries, qrels=qrels)
    return DevSet(label, dataset, "held-out pairs (their own candidates)", candidates), rest


def retrieve_first_stage(dev: DevSet, encoder, top_n: int) -> None:
    """Fill `dev.first_stage` with the dense retriever's ranking of each dev query's documents."""
    import numpy as np

    from densekit.data.beir import document_text

    qids = list(dev.dataset.queries)
    if dev.candidates is None:
        from densekit.eval.evaluate import retrieve
        from densekit.index.dense_index import build_from_corpus

        with build_from_corpus(encoder, dev.dataset.corpus, progress=False) as idx:
            # +1: the protocol drops a document whose id is the query's before the cut
            dev.first_stage, _, _ = retrieve(idx, encoder, dev.dataset.queries, top_k=top_n + 1)
        return
    qvecs = np.asarray(encoder.encode_queries([dev.dataset.queries[q] for q in qids]))
    for qid, qv in zip(qids, qvecs):
        ids = dev.candidates[qid]
        dvecs = np.asarray(encoder.encode_documents([document_text(dev.dataset.corpus[d]) for d in ids]))
        dev.first_stage[qid] = {d: float(s) for d, s in zip(ids, dvecs @ qv)}
