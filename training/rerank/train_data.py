"""Training groups for rerankers: one query, its positives, and mined negatives.

Negatives follow the paper's recipe (arXiv 2510.14824): the dense retriever's top-k for the
query minus every judged positive (drawn at random, seeded), mixed with random corpus
documents. The mined groups are written as pairs JSONL ({query, pos, neg, qid, pos_ids,
neg_ids}) next to the run, so the SFT and CL runs can share exactly the same negatives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from densekit.data import load_beir
from densekit.data.beir import document_text
from densekit.data.pairs import TrainingPair, load_pairs
from densekit.training.rerank.config import RerankerRunConfig


@dataclass
class RerankGroup:
    query: str
    pos: list[str]
    neg: list[str]
    qid: str | None = None

    def sample(self, step: int, num_neg: int, rng: random.Random) -> tuple[str, list[str]]:
        """One positive (cycling through the query's positives) and `num_neg` negatives
        (a seeded draw; repeated cyclically when the query has fewer)."""
        pos = self.pos[step % len(self.pos)]
        negs = rng.sample(self.neg, min(num_neg, len(self.neg)))
        while len(negs) < num_neg:
            negs.append(self.neg[len(negs) % len(self.neg)])
        return pos, negs


def mine_groups(cfg: RerankerRunConfig, data_folder: Path, progress: bool = True):
    """Groups from the BEIR training split, negatives mined with the dense retriever."""
    from densekit.encoder import Encoder
    from densekit.models import resolve_encoder_name
    from densekit.training.mining import MiningParams, mine_hard_negatives
    from densekit.training.pairs_data import pairs_from_beir

    ds = load_beir(data_folder, cfg.data.beir_split)
    pairs = pairs_from_beir(ds, min_grade=cfg.data.min_grade, max_queries=cfg.data.max_queries, seed=cfg.seed)
    neg = cfg.negatives
    if neg.hard > 0:
        enc = Encoder.from_settings(model=resolve_encoder_name(neg.retriever), device=cfg.train.device)
        # Cosine scores lie in [-1, 1], so margin=-2 turns the bi-encoder miner's
        # "too close to the positive" filter off: a reranker's negatives are the retriever's top-k minus judged positives.
        params = MiningParams(rank_start=0, rank_end=neg.top_k, margin=-2.0, num_negatives=neg.hard, sampling="random", seed=cfg.seed)
        pairs, _stats = mine_hard_negatives(enc, ds, pairs, params, judged=ds.qrels, progress=progress)
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


def groups_from_pairs(pairs) -> list[RerankGroup]:
    return [RerankGroup(query=p.query, pos=list(p.pos), neg=list(p.neg), qid=getattr(p, "qid", None)) for p in pairs if p.pos and p.neg]


def load_groups(
    cfg: RerankerRunConfig, out_dir: Path, resolve_data, progress: bool = True, write: bool = True
) -> tuple[list[RerankGroup], Path | None]:
    """All training groups of a run; mined ones are saved to `out_dir/mined.jsonl` when
    `write` (under DDP every process mines the same groups, rank 0 alone writes them)."""
    from densekit.training.mining import read_mined, write_mined

    pairs: list[TrainingPair] = []
    mined_path = None
    if cfg.data.beir:
        if cfg.negatives.reuse:
            pairs.extend(read_mined(cfg.negatives.reuse))
        else:
            mined = mine_groups(cfg, resolve_data(cfg.data.beir), progress=progress)
            mined_path = write_mined(mined, out_dir / "mined.jsonl") if write else None
            pairs.extend(mined)
    for f in cfg.data.pairs:
        pairs.extend(load_pairs(f))
    return groups_from_pairs(pairs), mined_path
