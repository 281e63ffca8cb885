"""densekit: dense retrieval and reranking, from training to serving to evaluation."""

__version__ = "0.1.0"
