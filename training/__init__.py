"""Training: bi-encoders, rerankers and distilled indexes (see each subpackage)."""
