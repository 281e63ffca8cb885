"""`densekit index`: build and inspect index folders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from densekit.cli.common import console, resolve_data, settings
from densekit.data import load_corpus

app = typer.Typer(help="Build and inspect faiss index folders.", no_args_is_help=True)


def _parse_params(pairs: list[str] | None, flag: str) -> dict:
    from densekit.errors import ConfigError

    out: dict = {}
    for item in pairs or []:
        if "=" not in item:
            raise ConfigError(flag, f"expected KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


KIND_HELP = "index kind: flat, ivf, ivfpq, opq-ivfpq, hnsw, distilled (distilled: Distill-VQ with pseudo-queries; see `densekit train distill-index` for full control)"


@app.command("build")
def build(
    data: str = typer.Option(
        None,
        "--data",
        help="BEIR folder (or name under DENSEKIT_DATA_DIR) whose corpus.jsonl is indexed; with --from-embeddings, where the documents' texts are (default: the corpus the embeddings record)",
    ),
    out: Path = typer.Option(..., "--out", help="index folder to write (atomically replaced)"),
    model: str = typer.Option(None, "--model", help="bi-encoder, hub name or path (default: DENSEKIT_MODEL)"),
    kind: str = typer.Option("flat", "--kind", help=KIND_HELP),
    nlist: int = typer.Option(None, "--nlist", help="IVF kinds: number of inverted lists (default ~4*sqrt(n))"),
    pq_m: int = typer.Option(None, "--pq-m", help="PQ kinds: sub-quantisers; with 8-bit codes = bytes per vector (default 16)"),
    pq_nbits: int = typer.Option(None, "--pq-nbits", help="PQ kinds: bits per sub-quantiser code (default 8)"),
    opq_niter: int = typer.Option(None, "--opq-niter", help="opq-ivfpq/distilled: OPQ iterations (default 25)"),
    hnsw_m: int = typer.Option(None, "--hnsw-m", help="hnsw: graph degree M (default 32)"),
    ef_construction: int = typer.Option(None, "--ef-construction", help="hnsw: efConstruction (default 80)"),
    train_size: int = typer.Option(None, "--train-size", help="IVF/PQ kinds: vectors sampled to train the quantisers (default all)"),
    nprobe: int = typer.Option(None, "--nprobe", help="IVF kinds: default lists probed per query, stored in the manifest"),
    ef_search: int = typer.Option(None, "--ef-search", help="hnsw: default efSearch, stored in the manifest"),
    param: list[str] = typer.Option(None, "--param", help="any build parameter KEY=VALUE (repeatable; see index/faiss_kinds.py)"),
    search_param: list[str] = typer.Option(
        None, "--search-param", help="default search parameter KEY=VALUE stored in the manifest (repeatable)"
    ),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda (default: DENSEKIT_DEVICE)"),
    batch_size: int = typer.Option(None, "--batch-size", help="encoding batch size"),
    backend: str = typer.Option(None, "--backend", help="torch, onnx or openvino (default: DENSEKIT_BACKEND, or an exported model's own)"),
    precision: str = typer.Option(None, "--precision", help="fp32, bf16 or int8 (default: DENSEKIT_PRECISION, or an exported model's own)"),
    from_embeddings: Path = typer.Option(
        None, "--from-embeddings", help="build a sharded index from an embeddings folder written by `densekit encode` (no encoding)"
    ),
    shards: int = typer.Option(
        1, "--shards", min=1, help="with --from-embeddings: number of index shards (documents go to crc32(id) % shards)"
    ),
    engine: str = typer.Option(
        "local", "--engine", help="with --from-embeddings: local (shards one after another) or ray (parallel Ray tasks)"
    ),
    address: str = typer.Option(
        None, "--address", help="--engine ray: Ray cluster address (HOST:PORT, ray://HOST:PORT, auto; default: a local cluster)"
    ),
    lexical: bool = typer.Option(
        False, "--lexical", help="also build the BM25 part (bm25s, English stemming and stop-words) for lexical and hybrid search"
    ),
    mode: str = typer.Option(
        None,
        "--mode",
        help="default search mode stored in the index: dense, lexical or hybrid (default: hybrid with --lexical, else dense)",
    ),
    fusion: str = typer.Option(
        None, "--fusion", help="hybrid fusion stored in the index: rrf (default) or convex (see `densekit tune fusion`)"
    ),
    alpha: float = typer.Option(None, "--alpha", min=0.0, max=1.0, help="convex fusion: weight of the dense scores (default 0.5)"),
) -> None:
    """Encode a corpus and write an index folder: manifest.json, index.faiss, docstore.sqlite
    (and lexical/, the BM25 part, with --lexical)."""
    from densekit.encoder import Encoder
    from densekit.index import faiss_kinds
    from densekit.index.dense_index import build_from_corpus

    explicit = {
        "nlist": nlist,
        "pq_m": pq_m,
        "pq_nbits": pq_nbits,
        "opq_niter": opq_niter,
        "hnsw_m": hnsw_m,
        "ef_construction": ef_construction,
        "train_size": train_size,
    }
    build_params = {**_parse_params(param, "--param"), **{k: v for k, v in explicit.items() if v is not None}}
    search_params = {
        **_parse_params(search_param, "--search-param"),
        **{k: v for k, v in {"nprobe": nprobe, "ef_search": ef_search}.items() if v is not None},
    }
    # Check every parameter before the (slow) corpus encoding.
    faiss_kinds.parse_build_params(kind, build_params)
    faiss_kinds.parse_search_params(kind, search_params)
    if from_embeddings is not None:
        from densekit.cli.sharded_cmd import build_from_embeddings

        if lexical:
            raise typer.BadParameter("a sharded index has no BM25 part yet", param_hint="--lexical")
        build_from_embeddings(from_embeddings, out, shards, kind, build_params, search_params, engine, address, data)
        return
    if data is None:
        raise typer.BadParameter("give --data (a corpus to encode and index) or --from-embeddings", param_hint="--data")
    search_defaults = _search_defaults(lexical, mode, fusion, alpha)
    s = settings()
    folder = resolve_data(data)
    if kind == "distilled":
        if lexical:
            raise typer.BadParameter("a distilled index is written by Distill-VQ without a BM25 part", param_hint="--lexical")
        _build_distilled(folder, out, model or s.model, build_params, search_params, device or s.device)
        return
    corpus = load_corpus(folder)
    enc = Encoder.from_settings(s, model=model, device=device, batch_size=batch_size, backend=backend, precision=precision)
    t0 = time.perf_counter()
    with build_from_corpus(enc, corpus, kind=kind, build_params=build_params, search_params=search_params, lexical=lexical) as idx:
        idx.manifest.search_mode, idx.manifest.fusion = search_defaults
        idx.manifest.extra["source"] = str(folder)
        idx.manifest.extra["total_build_s"] = round(time.perf_counter() - t0, 3)
        idx.save(out)
        n_docs = len(idx)
    m = idx.manifest
    console.print(
        f"index written: {out} ({n_docs} documents, kind={kind}, {m.faiss_description}, "
        f"{m.bytes_per_vector:g} B/vector, faiss build {m.build_time_s:.1f}s, total {time.perf_counter() - t0:.1f}s)"
    )


def _search_defaults(lexical: bool, mode: str | None, fusion: str | None, alpha: float | None):
    """(default search mode, fusion settings) an index build stores; ConfigError before any work
    when they ask for a lexical part the build does not make."""
    from pydantic import ValidationError

    from densekit.errors import ConfigError
    from densekit.fusion import SEARCH_MODES, FusionSettings

    mode = mode or ("hybrid" if lexical else "dense")
    if mode not in SEARCH_MODES:
        raise ConfigError("--mode", f"{mode!r} is not one of {', '.join(SEARCH_MODES)}")
    if mode != "dense" and not lexical:
        raise ConfigError("--mode", f"{mode} search needs the BM25 part: add --lexical")
    try:
        settings = FusionSettings(**{k: v for k, v in {"method": fusion, "alpha": alpha}.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError("--fusion", exc.errors()[0]["msg"]) from None
    return mode, settings


def _build_distilled(folder: Path, out: Path, model: str, build_params: dict, search_params: dict, device: str) -> None:
    """`--kind distilled` without a config: Distill-VQ on document-title pseudo-queries."""
    from densekit.training.distill_vq_config import DistillVQConfig
    from densekit.training.distill_vq_run import run_distill

    index_cfg = {k: build_params[k] for k in ("nlist", "pq_m", "pq_nbits", "opq_niter", "train_size") if k in build_params}
    if "nprobe" in search_params:
        index_cfg["nprobe"] = search_params["nprobe"]
    if build_params.get("opq") is False:
        index_cfg["start_kind"] = "ivfpq"
    cfg = DistillVQConfig(
        data=str(folder), out=str(out), model=model, device=device, queries={"source": "titles", "max_queries": 20000}, index=index_cfg
    )
    res = run_distill(cfg, lambda d: Path(d), device=device)
    console.print(
        f"distilled index written: {res.index_dir} ({res.n_docs} documents, {res.n_queries} title pseudo-queries, {res.history['steps']} steps)"
    )


@app.command("info")
def info(
    index_dir: Path = typer.Argument(..., help="index folder, or a sharded index folder"),
    summary: bool = typer.Option(False, "--summary", help="aligned text lines instead of the manifest JSON"),
) -> None:
    """The manifest as JSON: kind, faiss structure, bytes_per_vector (codes) and
    extra.index_bytes_per_vector (whole index), build_time_s, build and search params. For a
    sharded folder: its manifest (kind, trained quantiser checksum, shards), each shard's
    documents, bytes and BM25 part, and the totals, read from the manifests without loading a shard."""
    from densekit.index.dense_index import load_index
    from densekit.index.sharded_manifest import is_sharded

    if is_sharded(index_dir):
        _sharded_info(index_dir, summary)
        return
    with load_index(index_dir) as idx:
        m = idx.manifest
    if not summary:
        typer.echo(json.dumps(m.model_dump(mode="json"), indent=2))
        return
    rows = [
        ("kind", m.kind),
        ("faiss", m.faiss_description),
        ("documents", m.doc_count),
        ("encoder", f"{m.encoder.name} (dim {m.encoder.dim}, {m.encoder.similarity})"),
        ("bytes/vector (codes)", m.bytes_per_vector),
        ("bytes/vector (whole index)", m.extra.get("index_bytes_per_vector")),
        ("build time s", m.build_time_s),
        ("build params", json.dumps(m.build_params)),
        ("search params", json.dumps(m.search_params)),
        ("lexical (BM25)", f"{m.lexical.method}, k1={m.lexical.k1}, b={m.lexical.b}, stemmer={m.lexical.stemmer}" if m.lexical else "none"),
        ("search mode", f"{m.search_mode} (fusion {m.fusion.method}{f', alpha={m.fusion.alpha}' if m.fusion.method == 'convex' else ''})"),
        ("created", m.created_at),
    ]
    for k, v in rows:
        typer.echo(f"{k:<28}{v}")


def _sharded_info(index_dir: Path, summary: bool) -> None:
    from densekit.index.sharded_info import read_sharded_info, summary_rows

    shown = read_sharded_info(index_dir)
    if not summary:
        typer.echo(json.dumps(shown.model_dump(mode="json"), indent=2))
        return
    for k, v in summary_rows(shown):
        typer.echo(f"{k:<28}{v}")
