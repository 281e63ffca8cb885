"""`densekit index build --from-embeddings`: a sharded index from embedding shards."""

from __future__ import annotations

from pathlib import Path

from densekit.cli.common import console
from densekit.cli.encode_cmd import corpus_path


def build_from_embeddings(
    embeddings: Path,
    out: Path,
    shards: int,
    kind: str,
    build_params: dict,
    search_params: dict,
    engine: str,
    address: str | None,
    data: str | None,
) -> None:
    from densekit.index.sharded_build import build_sharded

    m = build_sharded(
        embeddings,
        out,
        shards,
        kind=kind,
        build_params=build_params,
        search_params=search_params,
        corpus=corpus_path(data) if data else None,
        engine=engine,
        address=address,
    )
    counts = ", ".join(str(s.doc_count) for s in m.shards)
    console.print(
        f"sharded index written: {out} ({m.doc_count} documents in {len(m.shards)} shards [{counts}], kind={kind}, "
        f"{m.faiss_description}, trained {m.trained_sha256[:12]}, {m.build_time_s:.1f}s)"
    )
