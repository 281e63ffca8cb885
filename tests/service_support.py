"""Helpers for the service tests: a tiny index, a fake reranker, an app over them."""
from __future__ import annotations

import json
import threading
from pathlib import Path

DOCS = [
    ("d1", "Cats", "Cats are small domesticated carnivorous mammals."),
    ("d2", "Dogs", "Dogs are domesticated descendants of wolves."),
    ("d3", "Paris", "Paris is the capital and largest city of France."),
    ("d4", "Python", "Python is a high-level programming language."),
    ("d5", "Faiss", "Faiss is a library for efficient similarity search of dense vectors."),
    ("d6", "Rome", "Rome is the capital city of Italy."),
]


class FakeReranker:
    """Scores a document by the share of query words it contains (a probability in [0, 1]).
    `gate`, when set, blocks scoring until released (to hold the model thread busy)."""

    kind = "cross-encoder"
    max_length = 512

    def __init__(self, name: str = "fake-reranker"):
        self.name = name
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.calls: list[tuple[str, int]] = []

    def score(self, query: str, documents: list[str], batch_size: int | None = None) -> list[float]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        self.calls.append((query, len(documents)))
        q = set(query.lower().split())
        return [len(q & set(d.lower().replace(".", " ").split())) / max(1, len(q)) for d in documents]

    def count_tokens(self, query: str, documents: list[str]) -> list[int]:
        return [len(query.split()) + len(d.split()) + 3 for d in documents]


def write_corpus(folder: Path, docs=DOCS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, t, x in docs))
    return folder


def build_index(model_dir: Path, out: Path, docs=DOCS) -> Path:
    from densekit.data import load_corpus
    from densekit.encoder import Encoder
    from index.dense_index import build_from_corpus

    corpus = load_corpus(write_corpus(out.parent / f"{out.name}-data", docs))
    idx = build_from_corpus(Encoder(str(model_dir), device="cpu"), corpus, progress=False)
    idx.save(out)
    return out


def make_state(settings, encoder, reranker=None, read_only: bool = False):
    """A loaded ServiceState over settings.index_dir, sharing an already loaded encoder."""
    from index.dense_index import load_index
    from index.live import LiveIndex
    from service.state import ServiceState

    state = ServiceState(settings, encoder=encoder, reranker=reranker)
    if settings.index_dir is not None:
        if read_only:
            state.index = load_index(settings.index_dir)
        else:
            state.live = LiveIndex.open(settings.index_dir, settings.wal_dir)
            state.index = state.live.index
    return state
