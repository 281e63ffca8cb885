"""`densekit encode`: a corpus into embedding shards plus a manifest, in this process or on Ray."""

from __future__ import annotations

from pathlib import Path

import typer

from densekit.cli.common import console, resolve_data, settings


def corpus_path(data: str) -> Path:
    """A corpus file (.jsonl, .parquet) as it is; otherwise a folder or a dataset name under DENSEKIT_DATA_DIR."""
    p = Path(data).expanduser()
    return p if p.is_file() else resolve_data(data)


def encode(
    data: str = typer.Option(
        ..., "--data", help="BEIR folder or dataset name, a corpus .jsonl, or a .parquet file/folder (columns _id or id, title, text)"
    ),
    out: Path = typer.Option(
        ..., "--out", help="embeddings folder to write (shards + embeddings.json); complete shards already there are kept"
    ),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data actor pool; needs densekit[ray])"),
    address: str = typer.Option(
        None, "--address", help="--engine ray: cluster address (HOST:PORT, ray://HOST:PORT, auto; default: a local cluster)"
    ),
    actors: int = typer.Option(1, "--actors", min=1, help="--engine ray: encoder actors, one model each"),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0.0, help="--engine ray: GPUs each actor reserves (0: CPU)"),
    cpus_per_actor: float = typer.Option(
        1.0, "--cpus-per-actor", min=0.01, help="--engine ray: CPUs each actor reserves, which is also its torch thread count"
    ),
    shard_size: int = typer.Option(10_000, "--shard-size", min=1, help="rows per embedding shard (the unit a re-run skips or redoes)"),
    dtype: str = typer.Option("float32", "--dtype", help="stored vector type: float32 or float16 (half the bytes)"),
    model: str = typer.Option(None, "--model", help="bi-encoder, hub name or path (default: DENSEKIT_MODEL)"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda (default: DENSEKIT_DEVICE)"),
    batch_size: int = typer.Option(None, "--batch-size", help="encoding batch size"),
    backend: str = typer.Option(None, "--backend", help="torch, onnx or openvino (default: DENSEKIT_BACKEND, or an exported model's own)"),
    precision: str = typer.Option(None, "--precision", help="fp32, bf16 or int8 (default: DENSEKIT_PRECISION, or an exported model's own)"),
    connect_timeout: float = typer.Option(15.0, "--connect-timeout", min=0.1, help="--engine ray: seconds to wait for --address to answer"),
) -> None:
    """Encode a corpus into embedding shards (ids + vectors) and a manifest; re-running skips complete shards."""
    from densekit.encoder import explicit_runtime
    from densekit.index.embedding_encode import EncodeOptions, RayOptions, encode_corpus_to_shards

    s = settings()
    runtime = explicit_runtime(s)
    options = EncodeOptions(
        model=model or s.model,
        device=device or s.device,
        batch_size=batch_size or s.batch_size,
        dtype=s.dtype,
        backend=backend or runtime.get("backend"),
        precision=precision or runtime.get("precision"),
    )
    res = encode_corpus_to_shards(
        corpus_path(data),
        out,
        options,
        engine=engine,
        shard_size=shard_size,
        dtype=dtype,
        ray=RayOptions(
            address=address, actors=actors, gpus_per_actor=gpus_per_actor, connect_timeout_s=connect_timeout, cpus_per_actor=cpus_per_actor
        ),
    )
    m = res.manifest
    rate = f", {res.encoded_rows / res.encode_s:.0f} rows/s" if res.encode_s > 0 and res.encoded_rows else ""
    console.print(
        f"embeddings written: {out} ({m.rows} rows in {len(m.shards)} shards, dim {m.dim}, {m.dtype}; "
        f"encoded {len(res.encoded_shards)} shards / {res.encoded_rows} rows in {res.encode_s:.1f}s{rate}, "
        f"{len(res.skipped_shards)} shards already complete)"
    )
