"""LLM yes/no reranker: left padding, truncation, kind detection, on a tiny random Llama.

The tokenizer is SmolLM2's (read from the packaged GGUF, offline); the model is a 2-layer
random Llama built from a config, so these tests run in seconds and still exercise the real
chat template, padding and truncation code.
"""

from __future__ import annotations

import json

import pytest

from densekit.errors import ConfigError, ModelLoadError


@pytest.fixture(scope="session")
def tiny_llm(tiny_llm_dir):
    from densekit.rerankers import load_reranker

    return load_reranker(str(tiny_llm_dir), device="cpu", max_length=160)


DOCS = [
    "Short one.",
    "A much longer document about dense retrieval, product quantisation and inverted files, " * 3,
    "Medium length text on cats and dogs and their owners.",
    "x",
]


def test_kind_is_detected_from_config(tiny_llm_dir, tiny_llm):
    from densekit.rerankers import Reranker, detect_kind

    assert detect_kind(str(tiny_llm_dir)) == "llm"
    assert tiny_llm.kind == "llm"
    assert isinstance(tiny_llm, Reranker)


def test_padded_batch_scores_equal_single_scores(tiny_llm):
    q = "what is dense retrieval?"
    alone = [tiny_llm.score(q, [d])[0] for d in DOCS]
    batched = tiny_llm.score(q, DOCS, batch_size=len(DOCS))
    assert len(set(tiny_llm.count_tokens(q, DOCS))) > 1  # the batch really needs padding
    assert batched == pytest.approx(alone, abs=1e-5)
    # the raw logits agree too, not only the squashed score
    z_alone = tiny_llm.logits(q, DOCS[1:2])
    z_batch = tiny_llm.logits(q, DOCS, batch_size=4)[1:2]
    assert z_batch[0].tolist() == pytest.approx(z_alone[0].tolist(), rel=1e-4, abs=1e-5)


def test_scores_keep_input_order(tiny_llm):
    q = "cats"
    forward = tiny_llm.score(q, DOCS, batch_size=2)
    backward = tiny_llm.score(q, DOCS[::-1], batch_size=3)
    assert forward == pytest.approx(backward[::-1], abs=1e-5)
    assert all(0.0 <= s <= 1.0 for s in forward)


def test_truncation_cuts_the_document_never_the_end(tiny_llm):
    p = tiny_llm.prompt
    long_doc = "retrieval " * 500
    ids = p.encode("what is dense retrieval?", long_doc)
    assert len(ids) == tiny_llm.max_length
    assert ids[-len(p.parts.tail) :] == p.parts.tail
    assert ids[: len(p.parts.head)] == p.parts.head
    text = tiny_llm.tokenizer.decode(ids)
    assert "what is dense retrieval?" in text
    assert text.rstrip().endswith("assistant")  # the answer slot is intact
    # a long query is cut too, but the prompt's end still survives
    ids2 = p.encode("why " * 1000, long_doc)
    assert len(ids2) == tiny_llm.max_length and ids2[-len(p.parts.tail) :] == p.parts.tail
    # a short pair is not padded or cut
    short = p.encode("q", "d")
    assert len(short) < tiny_llm.max_length
    assert tiny_llm.count_tokens("what is dense retrieval?", [long_doc, "d"]) == [len(ids), len(p.encode("what is dense retrieval?", "d"))]


def test_truncated_long_document_scores_like_its_prefix(tiny_llm):
    # what the model sees for an over-long document is exactly the kept prefix
    p = tiny_llm.prompt
    doc = " ".join(f"w{i}" for i in range(400))
    ids = p.encode("q", doc)
    n_doc = (
        len(ids)
        - len(p.parts.head)
        - len(p.parts.mid)
        - len(p.parts.tail)
        - len(tiny_llm.tokenizer("q", add_special_tokens=False)["input_ids"])
    )
    assert 0 < n_doc < len(tiny_llm.tokenizer(doc, add_special_tokens=False)["input_ids"])


def test_too_small_max_length_is_a_config_error(tiny_llm_dir):
    from densekit.rerankers import load_reranker

    with pytest.raises(ConfigError) as e:
        load_reranker(str(tiny_llm_dir), device="cpu", max_length=32)
    assert e.value.field == "max_length"


def test_bad_arguments_are_typed_errors(tmp_path, tiny_llm_dir):
    from densekit.rerankers import load_reranker

    with pytest.raises(ConfigError):
        load_reranker(str(tiny_llm_dir), kind="bert")
    with pytest.raises(ModelLoadError):
        load_reranker(str(tmp_path / "nope"))
    with pytest.raises(ModelLoadError):
        load_reranker(str(tmp_path / "missing.gguf"))
    (tmp_path / "weird").mkdir()
    (tmp_path / "weird" / "config.json").write_text(json.dumps({"architectures": ["BertModel"]}))
    with pytest.raises(ModelLoadError, match="kind"):
        load_reranker(str(tmp_path / "weird"))


def test_cross_encoder_kind_and_batch_consistency(tmp_path, minilm_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from densekit.rerankers import detect_kind, load_reranker

    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=1
    )
    torch.manual_seed(0)
    d = tmp_path / "tiny-ce"
    BertForSequenceClassification(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    assert detect_kind(str(d)) == "cross-encoder"
    rr = load_reranker(str(d), device="cpu", max_length=64)
    assert rr.kind == "cross-encoder"
    alone = [rr.score("q", [x])[0] for x in DOCS]
    assert rr.score("q", DOCS, batch_size=3) == pytest.approx(alone, abs=1e-5)
    assert max(rr.count_tokens("q", DOCS)) <= 64
    assert rr.score("q", []) == []
    assert rr.score_pairs([("q", x) for x in DOCS]) == pytest.approx(alone, abs=1e-5)


def test_score_pairs_matches_per_query_scores(tiny_llm):
    pairs = [("cats", DOCS[0]), ("what is dense retrieval?", DOCS[1]), ("cats", DOCS[2])]
    merged = tiny_llm.score_pairs(pairs, batch_size=3)
    single = [tiny_llm.score(q, [d])[0] for q, d in pairs]
    assert merged == pytest.approx(single, abs=1e-5)
    assert tiny_llm.score_pairs([]) == []


def test_shared_query_prefix_gives_the_whole_prompts_logits(tiny_llm):
    # logits() runs the query's prefix once; score_pairs() runs every whole prompt: they must agree
    q = "what is dense retrieval?"
    p = tiny_llm.prompt
    prefix, suffixes = p.split_many(q, DOCS)
    assert [prefix + s for s in suffixes] == p.encode_many(q, DOCS) == [p.encode(q, d) for d in DOCS]
    shared = tiny_llm.logits(q, DOCS, batch_size=3)
    whole = tiny_llm._logits_of(p.encode_many(q, DOCS), batch_size=1)
    assert shared.shape == (len(DOCS), 2)
    assert shared.flatten().tolist() == pytest.approx(whole.flatten().tolist(), rel=1e-4, abs=1e-5)
    assert tiny_llm.score(q, DOCS, batch_size=4) == pytest.approx(tiny_llm.score_pairs([(q, d) for d in DOCS]), abs=1e-5)


def test_throughput_bench_times_the_llm_with_and_without_the_shared_prefix(tiny_beir, tiny_llm_dir):
    from densekit.bench.rerank import ThroughputOptions, rerank_throughput

    rows = list(rerank_throughput(ThroughputOptions(tiny_beir, llm=[str(tiny_llm_dir)], pairs=4, repeats=2, batch_size=2)))
    assert [r["query_prefix"] for r in rows] == ["shared", "per document"]
    for r in rows:
        assert r["pairs"] == 4 and len(r["times_s"]) == 2 and r["pairs_per_s"] > 0
