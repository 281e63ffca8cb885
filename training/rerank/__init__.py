"""Training rerankers: LLM yes/no rerankers (SFT or CL objective) and cross-encoders.

What they are trained into is loaded for inference by `densekit.rerankers.load_reranker`.
"""
