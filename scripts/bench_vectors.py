"""Corpus and query vectors for the index benchmarks, encoded once and cached.

Corpus vectors go through index.dense_index.encode_corpus (the shared embedding cache);
query vectors are cached here under runs/bench-indexes/vectors/ since the shared cache holds
documents only. Run under the CPU lock:

    flock /tmp/densekit-cpu.lock .venv/bin/python scripts/bench_vectors.py scifact nfcorpus wikiqa nq-utd squad_subset
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VEC_DIR = ROOT / "runs" / "bench-indexes" / "vectors"


def data_dir() -> Path:
    return Path(os.environ.get("DENSEKIT_DATA_DIR", ROOT.parent / "shared" / "data"))


def corpus_vectors(encoder, name: str) -> tuple[list[str], np.ndarray, dict]:
    from densekit.data import load_corpus
    from densekit.index.dense_index import encode_corpus

    corpus = load_corpus(data_dir() / name)
    ids = list(corpus.keys())
    return ids, encode_corpus(encoder, corpus, ids, progress=True), corpus


def query_vectors(encoder, name: str) -> tuple[list[str], np.ndarray]:
    """All queries of the data set (every split), in file order."""
    from densekit.data import load_queries

    queries = load_queries(data_dir() / name)
    qids = list(queries.keys())
    path = VEC_DIR / f"{name}.queries.npz"
    if path.is_file():
        z = np.load(path, allow_pickle=False)
        if list(z["ids"]) == qids:
            return qids, z["vectors"]
    vecs = encoder.encode_queries([queries[q] for q in qids], progress=True)
    VEC_DIR.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(qids), vectors=vecs)
    tmp.replace(path)
    return qids, vecs


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("names", nargs="+")
    ap.add_argument("--no-queries", action="store_true")
    args = ap.parse_args(argv)
    from densekit.encoder import Encoder

    enc = Encoder("default", device="cpu")
    for name in args.names:
        t0 = time.perf_counter()
        ids, v, _ = corpus_vectors(enc, name)
        if not args.no_queries:
            query_vectors(enc, name)
        print(f"{name}: {len(ids)} docs, {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
