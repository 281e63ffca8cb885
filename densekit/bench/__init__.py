"""Benchmarks shipped with densekit: `densekit bench index|service|load|rerank|gpu`.

Each module holds one benchmark as functions that return plain dicts (the JSON the
command prints or writes); densekit/cli/bench_cmd.py only parses flags. Heavy imports
(torch, faiss, matplotlib) stay inside the functions so `densekit --help` stays fast.
"""
