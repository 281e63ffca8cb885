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
    from densekit.index.dense_index import build_from_corpus

    corpus = load_corpus(write_corpus(out.parent / f"{out.name}-data", docs))
    idx = build_from_corpus(Encoder(str(model_dir), device="cpu"), corpus, progress=False)
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
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tokenizer_src)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        num_labels=1,
    )
    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def synthetic_docs(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    import random

    rng = random.Random(seed)
    words = "dense retrieval vector index query document faiss embedding model search rank protein cell gene effect study".split()
    return [(f"s{i}", f"title {i}", " ".join(rng.choice(words) for _ in range(rng.randint(5, 30)))) for i in range(n)]


class ServerProcess:
    """`densekit serve` as a real process on 127.0.0.1 (uvicorn), for load and crash tests."""

    def __init__(self, *args: str, log_path: Path | None = None):
        import subprocess
        import sys

        from conftest import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "densekit.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "warning",
            *args,
        ]
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log)

    def wait_ready(self, timeout: float = 120) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server not ready")

    def stop(self, kill: bool = False, timeout: float = 60) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        return self.proc.wait(timeout)
