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


@app.command("build")
def build(
    data: str = typer.Option(..., "--data", help="BEIR folder (or name under DENSEKIT_DATA_DIR) whose corpus.jsonl is indexed"),
    out: Path = typer.Option(..., "--out", help="index folder to write (atomically replaced)"),
    model: str = typer.Option(None, "--model", help="bi-encoder, hub name or path (default: DENSEKIT_MODEL)"),
    kind: str = typer.Option("flat", "--kind", help="index kind"),
    param: list[str] = typer.Option(None, "--param", help="build parameter KEY=VALUE (repeatable)"),
    search_param: list[str] = typer.Option(None, "--search-param", help="default search parameter KEY=VALUE stored in the manifest (repeatable)"),
    device: str = typer.Option(None, "--device", help="auto, cpu, cuda (default: DENSEKIT_DEVICE)"),
    batch_size: int = typer.Option(None, "--batch-size", help="encoding batch size"),
) -> None:
    """Encode a corpus and write an index folder: manifest.json, index.faiss, docstore.sqlite."""
    from densekit.encoder import Encoder
    from index.dense_index import build_from_corpus

    s = settings()
    folder = resolve_data(data)
    corpus = load_corpus(folder)
    enc = Encoder(model or s.model, device=device or s.device, batch_size=batch_size or s.batch_size, dtype=s.dtype)
    t0 = time.perf_counter()
    idx = build_from_corpus(enc, corpus, kind=kind, build_params=_parse_params(param, "--param"), search_params=_parse_params(search_param, "--search-param"))
    idx.manifest.extra["source"] = str(folder)
    idx.manifest.extra["total_build_s"] = round(time.perf_counter() - t0, 3)
    idx.save(out)
    console.print(f"index written: {out} ({len(idx)} documents, kind={kind}, {time.perf_counter() - t0:.1f}s)")


@app.command("info")
def info(index_dir: Path = typer.Argument(..., help="index folder")) -> None:
    """Print the manifest (kind, encoder, parameters, bytes per vector, build time) as JSON."""
    from index.dense_index import load_index

    idx = load_index(index_dir)
    typer.echo(json.dumps(idx.manifest.model_dump(mode="json"), indent=2))
