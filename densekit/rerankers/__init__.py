"""Reranker inference: LLM yes/no rerankers and cross-encoders behind one interface.

The service, eval and training all score (query, document) pairs through `Reranker`
(see `base.py`) without knowing which kind of model is behind it:

    from densekit.rerankers import load_reranker
    rr = load_reranker("smollm2")                # packaged SmolLM2-135M-Instruct GGUF
    rr.score("what is faiss?", ["Faiss is ...", "Paris is ..."])  # higher = more relevant

Training these models lives in `densekit.training.rerank`.
"""

from densekit.rerankers.base import Reranker, detect_kind
from densekit.rerankers.loading import load_reranker, load_reranker_from_settings

__all__ = ["Reranker", "detect_kind", "load_reranker", "load_reranker_from_settings"]
