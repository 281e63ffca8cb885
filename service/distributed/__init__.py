"""Serving a sharded index on Ray Serve: one deployment per shard, an encoder and an optional
reranker deployment, and the single-process server's own FastAPI app as the ingress.

Only `wire` is importable without Ray (the app reads `RemoteModel` from it); every other module
here imports Ray and is loaded only by `densekit serve --engine ray`.
"""
