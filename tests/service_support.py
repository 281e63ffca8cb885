"""Helpers for the service tests: a tiny index, a fake reranker, an app over them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


def build_index(model_dir: Path, out: Path, docs=DOCS, lexical: bool = False) -> Path:
    """An index folder of `docs`; with `lexical`, its BM25 part too."""
    from densekit.data import load_corpus
    from densekit.encoder import Encoder
    from densekit.index.dense_index import build_from_corpus

    corpus = load_corpus(write_corpus(out.parent / f"{out.name}-data", docs))
    idx = build_from_corpus(Encoder(str(model_dir), device="cpu"), corpus, progress=False, lexical=lexical)
    idx.save(out)
    return out


def make_state(settings, encoder, reranker=None, read_only: bool = False):
    """A loaded ServiceState over settings.index_dir, sharing an already loaded encoder."""
    from densekit.index.dense_index import load_index
    from densekit.index.live import LiveIndex
    from densekit.service.state import ServiceState

    state = ServiceState(settings, encoder=encoder, reranker=reranker)
    if settings.index_dir is not None:
        if read_only:
            state.index = load_index(settings.index_dir)
        else:
            state.live = LiveIndex.open(settings.index_dir, settings.wal_dir)
            state.index = state.live.index
    return state


def tiny_cross_encoder(out: Path, tokenizer_src: str) -> Path:
    """A random 2-layer BERT sequence classifier with one label: a real cross-encoder that
    `load_reranker` loads like any hub model, small enough for tests."""
    from conftest import save_tiny_model, tiny_bert_config
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_src)
    return save_tiny_model(BertForSequenceClassification, tiny_bert_config(tok, num_labels=1), tok, out)


def synthetic_docs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    import random

    rng = random.Random(seed)
    words = "dense retrieval vector index query document faiss embedding model search rank protein cell gene effect study".split()
    return [(f"s{i}", f"title {i}", " ".join(rng.choice(words) for _ in range(rng.randint(5, 30)))) for i in range(n)]


@contextmanager
def serve_in_thread(app, start_timeout: float = 60) -> Iterator[str]:
    """`app` served by uvicorn in a thread of this process, on a free port of 127.0.0.1 (real
    sockets); yields its base URL and stops the server on exit."""
    import time

    import uvicorn

    from densekit.bench.servers import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


class ServerProcess:
    """`densekit serve` as a real process on 127.0.0.1 (uvicorn), for load and crash tests."""

    def __init__(self, *args: str, log_path: Path | None = None):
        import subprocess

        from densekit.bench.servers import free_port, open_log, serve_command

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open_log(log_path)
        self.proc = subprocess.Popen(serve_command(self.port, *args), stdout=subprocess.DEVNULL, stderr=self._log)

    def wait_ready(self, timeout: float = 120) -> None:
        from densekit.bench.servers import wait_ready

        wait_ready(self.url, self.proc, timeout=timeout)

    def stop(self, kill: bool = False, timeout: float = 60) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        return self.proc.wait(timeout)
