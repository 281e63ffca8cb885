"""Datasets: BEIR folders and training-pair JSONL."""

from densekit.data.beir import BeirDataset, list_splits, load_beir, load_corpus, load_qrels, load_queries
from densekit.data.pairs import TrainingPair, load_pairs

__all__ = [
    "BeirDataset",
    "TrainingPair",
    "list_splits",
    "load_beir",
    "load_corpus",
    "load_pairs",
    "load_qrels",
    "load_queries",
]
