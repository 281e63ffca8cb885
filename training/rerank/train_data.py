"""Training groups for rerankers: one query, its positives, and mined negatives.

Negatives follow the paper's recipe (arXiv 2510.14824): the dense retriever's top-k for the
query minus every judged positive (drawn at random, seeded), mixed with random corpus
documents. The mined groups are written as pairs JSONL ({query, pos, neg, qid, pos_ids,
neg_ids}) next to the run, so the SFT and CL runs can share exactly the same negatives.

A pooled run (`data.datasets`) does this for each dataset on its own corpus and tags every
group with its dataset, so the trainers can draw each batch from one dataset; the mined
groups go to one file per dataset (`mined-NAME.jsonl`). When the run has a dev split
(`eval.dev`), its queries are taken out of the training queries before mining
(`dev_split.py`), so no dev query is ever trained on.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from densekit.data import load_beir
from densekit.data.beir import BeirDataset, document_text
from densekit.data.pairs import TrainingPair, load_pairs
from densekit.training.dataset_sources import DatasetSource, check_source_paths
from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.rerank.dev_split import DevSet, beir_dev, pairs_dev


@dataclass
class RerankGroup:
    query: str
    pos: list[str]
    neg: list[str]
    qid: str | None = None
    dataset: str | None = None  # the training dataset's label (pooled runs draw each batch from one)

    def sample(self, step: int, num_neg: int, rng: random.Random) -> tuple[str, list[str]]:
        """One positive (cycling through the query's positives) and `num_neg` negatives
        (a seeded draw; repeated cyclically when the query has fewer)."""
        pos = self.pos[step % len(self.pos)]
        negs = rng.sample(self.neg, min(num_neg, len(self.neg)))
        while len(negs) < num_neg:
            negs.append(self.neg[len(negs) % len(self.neg)])
        return pos, negs


@dataclass
class TrainingData:
    """Everything a run trains and measures its learning curve on."""

    groups: list[RerankGroup]
    mined: dict[str, Path] = field(default_factory=dict)  # dataset label -> mined groups written by this run
    dev: list[DevSet] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)  # per dataset: training queries, dev queries and where from


class _Retriever:
    """The first-stage bi-encoder, loaded on first use and shared by every dataset."""

    def __init__(self, cfg: RerankerRunConfig):
        self.cfg = cfg
        self.encoder: Any = None

    def get(self):
        if self.encoder is None:
            from densekit.encoder import Encoder
            from densekit.models import resolve_encoder_name

            self.encoder = Encoder.from_settings(model=resolve_encoder_name(self.cfg.negatives.retriever), device=self.cfg.train.device)
        return self.encoder


def mine_split(cfg: RerankerRunConfig, ds: BeirDataset, src: DatasetSource, retriever: _Retriever, progress: bool = True):
    """Groups from one BEIR training split, negatives mined with the dense retriever."""
    from densekit.training.mining import MiningParams, mine_hard_negatives
    from densekit.training.pairs_data import pairs_from_beir

    pairs = pairs_from_beir(ds, min_grade=src.min_grade, max_queries=src.max_queries, seed=cfg.seed)
    neg = cfg.negatives
    if neg.hard > 0:
        # Cosine scores lie in [-1, 1], so margin=-2 turns the bi-encoder miner's
        # "too close to the positive" filter off: a reranker's negatives are the retriever's top-k minus judged positives.
        params = MiningParams(rank_start=0, rank_end=neg.top_k, margin=-2.0, num_negatives=neg.hard, sampling="random", seed=cfg.seed)
        pairs, _stats = mine_hard_negatives(retriever.get(), ds, pairs, params, judged=ds.qrels, progress=progress)
    rng = random.Random(cfg.seed + 1)
    doc_ids = list(ds.corpus)
    for p in pairs:
        judged = {d for d, g in ds.qrels.get(p.qid or "", {}).items() if g > 0}
        taken = set(p.neg_ids) | judged
        extra: list[str] = []
        while len(extra) < neg.random:
            d = rng.choice(doc_ids)
            if d not in taken:
                taken.add(d)
                extra.append(d)
        p.neg_ids = list(p.neg_ids) + extra
        p.neg = list(p.neg) + [document_text(ds.corpus[d]) for d in extra]
    return pairs


def mine_groups(cfg: RerankerRunConfig, data_folder: Path, progress: bool = True):
    """Groups from the single-source run's BEIR training split (`data.beir`)."""
    (_, src), *_ = cfg.data.sources()
    return mine_split(cfg, load_beir(data_folder, src.beir_split), src, _Retriever(cfg), progress)


def groups_from_pairs(pairs, dataset: str | None = None) -> list[RerankGroup]:
    return [
        RerankGroup(query=p.query, pos=list(p.pos), neg=list(p.neg), qid=getattr(p, "qid", None), dataset=dataset)
        for p in pairs
        if p.pos and p.neg
    ]


def _without(ds: BeirDataset, held: set[str]) -> BeirDataset:
    return replace(ds, qrels={q: j for q, j in ds.qrels.items() if q not in held}) if held else ds


def _source_data(
    cfg: RerankerRunConfig,
    prefix: str,
    src: DatasetSource,
    paths: dict[str, Path],
    retriever: _Retriever,
    mined_path: Path,
    progress: bool,
    write: bool,
) -> tuple[list[TrainingPair], DevSet | None, dict[str, Any], bool]:
    """One dataset's training pairs (BEIR part mined or reused, then its pairs files), its dev
    set, notes, and whether `mined_path` was written."""
    from densekit.training.mining import read_mined, write_mined

    label = src.label()
    dev_cfg = cfg.eval.dev
    pairs: list[TrainingPair] = []
    dev: DevSet | None = None
    notes: dict[str, Any] = {}
    wrote = False
    if src.beir:
        folder = paths[f"{prefix}.beir"]
        ds = load_beir(folder, src.beir_split)
        held: set[str] = set()
        if dev_cfg is not None:
            dev, held = beir_dev(label, folder, ds, src.min_grade, dev_cfg, cfg.seed)
        reuse = src.mined or cfg.negatives.reuse
        if reuse:
            beir_pairs = [p for p in read_mined(reuse) if getattr(p, "qid", None) not in held]
            notes["mined"] = str(reuse)
        else:
            beir_pairs = mine_split(cfg, _without(ds, held), src, retriever, progress)
            if write:
                write_mined(beir_pairs, mined_path)
                wrote = True
        pairs.extend(beir_pairs)
    extra: list[TrainingPair] = []
    for i in range(len(src.pairs)):
        extra.extend(load_pairs(paths[f"{prefix}.pairs.{i}"]))
    if extra and dev_cfg is not None and dev is None:
        dev, extra = pairs_dev(label, extra, dev_cfg, cfg.seed)
    pairs.extend(extra)
    if dev is not None:
        notes["dev"] = {"queries": len(dev.dataset.queries), "from": dev.source}
    return pairs, dev, notes, wrote


def load_training_data(
    cfg: RerankerRunConfig, out_dir: Path, resolve_data: Callable[[str], Path], progress: bool = True, write: bool = True
) -> TrainingData:
    """Every dataset's training groups (tagged with the dataset), dev sets when `eval.dev` is
    set (their first stage retrieved), and the mined files written when `write` (under DDP
    every process mines the same groups, rank 0 alone writes them)."""
    from densekit.eval.cell import safe_name

    paths = check_source_paths(cfg.data, resolve_data)
    retriever = _Retriever(cfg)
    pooled = bool(cfg.data.datasets)
    data = TrainingData(groups=[])
    for prefix, src in cfg.data.sources():
        label = src.label()
        mined_path = out_dir / (f"mined-{safe_name(label)}.jsonl" if pooled else "mined.jsonl")
        pairs, dev, notes, wrote = _source_data(cfg, prefix, src, paths, retriever, mined_path, progress, write)
        groups = groups_from_pairs(pairs, dataset=label)
        if pooled and not groups:
            from densekit.errors import ConfigError

            raise ConfigError(prefix, f"dataset '{label}' gives no training group (no query with both a positive and a negative)")
        data.groups.extend(groups)
        if wrote:
            data.mined[label] = mined_path
        if dev is not None:
            data.dev.append(dev)
        data.notes[label] = {"training_queries": len(groups), **notes}
    if data.dev:
        from densekit.training.rerank.dev_split import retrieve_first_stage

        for dev in data.dev:
            retrieve_first_stage(dev, retriever.get(), cfg.eval.dev.top_n if cfg.eval.dev else 20)
    return data


def load_groups(
    cfg: RerankerRunConfig, out_dir: Path, resolve_data, progress: bool = True, write: bool = True
) -> tuple[list[RerankGroup], Path | None]:
    """All training groups of a run and the (first) mined file it wrote; see `load_training_data`."""
    data = load_training_data(cfg, out_dir, resolve_data, progress=progress, write=write)
    return data.groups, next(iter(data.mined.values()), None)
