"""`densekit data`: fetch BEIR sets and inspect data folders."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from densekit.cli.common import console, resolve_data, settings
from densekit.data import list_splits, load_beir
from densekit.data.fetch import fetch_dataset
from densekit.errors import InvalidInputError

app = typer.Typer(help="Fetch and inspect BEIR datasets.", no_args_is_help=True)


@app.command("fetch")
def fetch(
    name: str = typer.Argument(..., help="BEIR dataset name, e.g. scifact, nfcorpus"),
    from_dir: Path = typer.Option(None, "--from", help="copy this local BEIR folder instead of downloading"),
    data_dir: Path = typer.Option(None, "--data-dir", help="destination root (default: DENSEKIT_DATA_DIR)"),
    force: bool = typer.Option(False, "--force", help="replace an existing copy"),
) -> None:
    """Download a BEIR dataset with beir's own helper (needs network), or copy a local folder."""
    root = data_dir or settings().data_dir
    dest = fetch_dataset(name, root, from_dir=from_dir, force=force)
    console.print(f"dataset ready: {dest}")


@app.command("info")
def info(
    data: str = typer.Argument(..., help="dataset folder or name under DENSEKIT_DATA_DIR"),
    split: str = typer.Option(None, help="only this split (default: every split)"),
) -> None:
    """Print document, query and qrels counts for each split as JSON."""
    folder = resolve_data(data)
    splits = [split] if split else list_splits(folder)
    corpus = None
    out = {}
    for s in splits:
        ds = load_beir(folder, s, corpus=corpus)
        corpus = ds.corpus
        out[s] = ds.counts
    typer.echo(json.dumps({"dataset": folder.name, "folder": str(folder), "splits": out}, indent=2))


@app.command("from-pairs")
def from_pairs(
    pairs: Path = typer.Argument(..., help="training pairs JSONL: {query, pos: [...], neg: [...]} per line"),
    out: Path = typer.Option(..., "--out", help="BEIR folder to write (replaced atomically if it exists)"),
    split: str = typer.Option("train", "--split", help="name of the qrels split written (train or dev)"),
) -> None:
    """Turn a pairs file into a BEIR folder (its passages pooled as the corpus, positives as
    qrels), so that a dataset with only pairs has a split to tune fusion or choose a model on."""
    from densekit.data import load_pairs
    from densekit.data.pairs_to_beir import pairs_to_beir

    counts = pairs_to_beir(load_pairs(pairs), out, split)
    console.print(f"written {out}: {counts['documents']} documents, {counts['queries']} queries, {counts['qrels']} qrels ({split})")


@app.command("hold-out")
def hold_out(
    source: str = typer.Argument(..., help="BEIR folder (or name under DENSEKIT_DATA_DIR), or a training-pairs JSONL file"),
    out: Path = typer.Option(..., "--out", help="folder to write (replaced atomically if it exists)"),
    split: str = typer.Option("train", "--split", help="BEIR source: the split whose queries are divided"),
    as_split: str = typer.Option("dev", "--as", help="name of the held-out split"),
    fraction: float = typer.Option(0.2, "--fraction", help="share of the queries held out"),
    seed: int = typer.Option(0, "--seed", help="seed of the draw"),
) -> None:
    """Set a seeded fraction of a training split's queries aside as a dev split that no model
    trains on (the rest keeps the split's name), to choose weights on after training. A pairs
    file gives OUT/train_pairs.jsonl (kept rows) and a BEIR folder of the held-out rows."""
    from densekit.data.hold_out import KEPT_PAIRS_FILE, hold_out_beir, hold_out_pairs

    as_file = Path(source).expanduser()
    if as_file.is_file():
        from densekit.data import load_pairs

        if split != "train":
            raise InvalidInputError(f"--split is for a BEIR folder; a pairs file ({as_file}) is divided whole")
        record = hold_out_pairs(load_pairs(as_file), as_file, out, as_split, fraction, seed)
        console.print(
            f"written {out}: {record['kept_queries']} queries kept ({out / KEPT_PAIRS_FILE}), "
            f"{len(record['held_out_queries'])} held out as '{as_split}'"  # type: ignore[arg-type]
        )
        return
    record = hold_out_beir(resolve_data(source), out, split, as_split, fraction, seed)
    console.print(
        f"written {out}: '{split}' keeps {record['kept_queries']} queries, {len(record['held_out_queries'])} held out as '{as_split}'"  # type: ignore[arg-type]
    )
