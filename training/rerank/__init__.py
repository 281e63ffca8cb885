"""Rerankers: LLM yes/no rerankers (SFT or CL trained) and cross-encoders.

Inference goes through one interface, `Reranker` (see `base.py`), which the service and
eval use without knowing which kind of model scores the pairs:

    from training.rerank import load_reranker
    rr = load_reranker("smollm2")                # packaged SmolLM2-135M-Instruct GGUF
    rr.score("what is faiss?", ["Faiss is ...", "Paris is ..."])  # higher = more relevant
"""
from training.rerank.base import Reranker, detect_kind, load_reranker

__all__ = ["Reranker", "detect_kind", "load_reranker"]
