"""Build the demo index once: SciFact under DENSEKIT_DATA_DIR, else a download, else the
small corpus densekit carries (its own guide split into passages). Never fails for lack of
data or network."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from densekit.atomic import atomic_dir
from densekit.errors import DensekitError
from densekit.settings import Settings

log = logging.getLogger("densekit.demo")
GUIDE = Path(__file__).with_name("guide.md")


def carried_corpus(dest: Path) -> Path:
    """Write densekit's own guide as a BEIR corpus, one passage per section paragraph."""
    passages: list[dict[str, str]] = []
    title = "densekit"
    for block in GUIDE.read_text(encoding="utf-8").split("\n\n"):
        block = block.strip()
        if not block:
            continue
        if block.startswith("#"):
            title = block.lstrip("#").strip()
            continue
        passages.append({"_id": f"guide-{len(passages)}", "title": title, "text": " ".join(block.split())})
    with atomic_dir(dest) as tmp:
        (tmp / "corpus.jsonl").write_text("".join(json.dumps(p) + "\n" for p in passages), encoding="utf-8")
    return dest


def choose_data(out: Path) -> Path:
    s = Settings()
    local = s.data_dir / "scifact"
    if (local / "corpus.jsonl").is_file():
        return local
    try:
        from densekit.data.fetch import fetch_dataset

        return fetch_dataset("scifact", s.data_dir)
    except DensekitError as exc:
        log.warning("no SciFact (%s); using the corpus densekit carries", exc)
    return carried_corpus(out / "guide-corpus")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path(".demo"), help="demo folder (index goes to OUT/index)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    index_dir = args.out / "index"
    if (index_dir / "manifest.json").is_file():
        print(f"demo index already built: {index_dir}")
        return 0
    try:
        from densekit.data import load_corpus
        from densekit.encoder import Encoder
        from densekit.index.dense_index import build_from_corpus

        data = choose_data(args.out)
        print(f"building the demo index from {data} (a few minutes on a CPU)")
        s = Settings()
        with build_from_corpus(Encoder.from_settings(s), load_corpus(data)) as idx:
            idx.manifest.extra["source"] = str(data)
            idx.save(index_dir)
    except DensekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"demo index written: {index_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
