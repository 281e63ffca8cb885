"""Vectors, queries and exact ground truth of the index scale benchmark, kept on disk.

Layout of `<out>/data/`:
  real.npy           the real corpus vectors of every shared data set (all-MiniLM-L6-v2)
  queries.npy        evaluation queries: real queries sampled with a fixed seed
  train_queries.npy  real train-split queries (Distill-VQ's training queries), disjoint from the above
  mixture.npz        the Gaussian mixture fitted to real.npy (densekit.bench.synthetic_vectors)
  vectors.npy        real.npy's rows, then synthetic rows: the first n rows are the n-vector corpus
  gt-<n>.npy         top-10 rows of every evaluation query over the first n rows, by exact search
  data.json          counts, the recipe and the synthetic-vector sanity check

Large arrays are read in row chunks with plain file reads (no memory map), so a process's
resident memory counts only what it keeps, not the pages of a multi-gigabyte file it scanned.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from densekit.bench.synthetic_vectors import Mixture, calibrate_noise, fit_mixture, sample_blocks, sanity_check

SETS = ("scifact", "nfcorpus", "wikiqa", "nq-utd", "squad_subset")
TRAIN_QUERY_SETS = ("scifact", "nfcorpus", "squad_subset")  # the sets with a train split
EVAL_QUERIES = 1000
MAX_TRAIN_QUERIES = 2000
N_COMPONENTS = 128
SEED = 0
CHUNK = 100_000  # rows per read


def data_dir(out: Path) -> Path:
    return Path(out) / "data"


# ---- .npy files read in chunks --------------------------------------------------------------
def npy_shape(path: Path) -> tuple[tuple[int, ...], int]:
    """(shape, header length in bytes) of a float32 C-order .npy file."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        if fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected a C-order float32 array, got {dtype} fortran={fortran}")
        return shape, fh.tell()


def read_rows(path: Path, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a 2-d float32 .npy file, read into a fresh array."""
    (n, d), header = npy_shape(path)
    stop = min(stop, n)
    out = np.empty((max(stop - start, 0), d), dtype=np.float32)
    with open(path, "rb", buffering=0) as fh:
        fh.seek(header + start * d * 4)
        view = memoryview(out.reshape(-1).view(np.uint8))  # type: ignore[arg-type]
        got = 0
        while got < len(view):
            k = fh.readinto(view[got:])
            if not k:
                raise ValueError(f"{path}: file ends before row {stop}")
            got += k
    return out


def iter_chunks(path: Path, n: int, chunk: int = CHUNK) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, rows) of the first n rows, `chunk` rows at a time."""
    for start in range(0, n, chunk):
        yield start, read_rows(path, start, min(start + chunk, n))


def gather_rows(path: Path, rows: np.ndarray, n: int, chunk: int = CHUNK) -> np.ndarray:
    """The given rows (sorted, all < n), in order, by one sequential pass over the first n rows."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    (_, d), _ = npy_shape(path)
    out = np.empty((len(rows), d), dtype=np.float32)
    for start, block in iter_chunks(path, n, chunk):
        lo, hi = np.searchsorted(rows, [start, start + len(block)])
        out[lo:hi] = block[rows[lo:hi] - start]
    return out


def exact_topk(path: Path, n: int, queries: np.ndarray, k: int, chunk: int = CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of every query's exact top-k by inner product over the first n rows of `path`."""
    import faiss

    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_r = np.full((len(q), k), -1, dtype=np.int64)
    for start, block in iter_chunks(path, n, chunk):
        flat = faiss.IndexFlatIP(block.shape[1])
        flat.add(block)
        s, r = flat.search(q, min(k, len(block)))
        cand_s = np.hstack([best_s, s])
        cand_r = np.hstack([best_r, r + start])
        top = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(cand_s, top, axis=1)
        best_r = np.take_along_axis(cand_r, top, axis=1)
    return best_s, best_r


# ---- preparation steps ------------------------------------------------------------------------
def _query_split(folder: Path, split: str) -> list[str]:
    from densekit.data import list_splits, load_qrels

    return list(load_qrels(folder, split)) if split in list_splits(folder) else []


def prepare_real(source_dir: Path, out: Path, vectors_dir: Path, sets: tuple[str, ...] = SETS) -> dict:
    """Encode (or read from the embedding caches) every set's corpus and queries; write real.npy,
    queries.npy, train_queries.npy, the fitted mixture and its sanity check."""
    from densekit.bench.vectors import corpus_vectors, query_vectors
    from densekit.encoder import Encoder

    enc = Encoder("default", device="cpu")
    docs, train, pool = [], [], []
    for name in sets:
        folder = Path(source_dir) / name
        _, vecs, _ = corpus_vectors(enc, folder)
        docs.append(vecs)
        qids, qv = query_vectors(enc, folder, vectors_dir)
        pos = {q: i for i, q in enumerate(qids)}
        is_train = np.zeros(len(qids), dtype=bool)
        if name in TRAIN_QUERY_SETS:
            is_train[[pos[q] for q in _query_split(folder, "train") if q in pos]] = True
        train.append(qv[is_train])
        pool.append(qv[~is_train])
    rng = np.random.default_rng(SEED)
    real = np.ascontiguousarray(np.vstack(docs), dtype=np.float32)
    train_q, pool_q = np.vstack(train), np.vstack(pool)
    if len(train_q) > MAX_TRAIN_QUERIES:
        train_q = train_q[np.sort(rng.choice(len(train_q), MAX_TRAIN_QUERIES, replace=False))]
    eval_q = pool_q[np.sort(rng.choice(len(pool_q), min(EVAL_QUERIES, len(pool_q)), replace=False))]
    return prepare_from_arrays(out, real, eval_q, train_q, {"sets": list(sets)})


def prepare_from_arrays(
    out: Path, real: np.ndarray, eval_q: np.ndarray, train_q: np.ndarray, info: dict, n_components: int = N_COMPONENTS
) -> dict:
    """Write the real vectors and queries, fit the mixture and check it; the data.json content."""
    d = data_dir(out)
    d.mkdir(parents=True, exist_ok=True)
    for fname, arr in (("real.npy", real), ("queries.npy", eval_q), ("train_queries.npy", train_q)):
        _save_npy(d / fname, np.ascontiguousarray(arr, dtype=np.float32))
    mix = calibrate_noise(fit_mixture(real, n_components, seed=SEED), real, seed=SEED)
    mix.save(d / "mixture.npz")
    meta = {
        **info,
        "real_vectors": len(real),
        "dim": int(real.shape[1]),
        "eval_queries": len(eval_q),
        "train_queries": len(train_q),
        "mixture": {"n_components": n_components, "covariance": "diag", "seed": SEED, "noise_scale": mix.noise_scale},
        "sanity": sanity_check(real, eval_q, mix, seed=SEED),
    }
    _write_json(d / "data.json", meta)
    return meta


def vectors_ready(out: Path, n: int) -> bool:
    """Whether vectors.npy holds at least n rows drawn from the current mixture."""
    d = data_dir(out)
    stamp = d / "vectors.json"
    if not (stamp.is_file() and (d / "vectors.npy").is_file() and (d / "mixture.npz").is_file()):
        return False
    return json.loads(stamp.read_text())["mixture_sha256"] == sha256_file(d / "mixture.npz") and npy_shape(d / "vectors.npy")[0][0] >= n


def ensure_vectors(out: Path, n: int) -> Path:
    """vectors.npy with at least n rows (the real rows first, then synthetic ones); rewritten
    longer when it is shorter, with the same first rows (the draws are seeded per block)."""
    d = data_dir(out)
    path = d / "vectors.npy"
    stamp = d / "vectors.json"  # which mixture drew the synthetic rows: a refitted one redraws them
    mixture_sha = sha256_file(d / "mixture.npz")
    same_mixture = stamp.is_file() and json.loads(stamp.read_text())["mixture_sha256"] == mixture_sha
    if path.is_file() and same_mixture and npy_shape(path)[0][0] >= n:
        return path
    if not same_mixture:  # a longer file from the same mixture keeps its first rows, and their ground truth
        for old in d.glob("gt-*.npy"):
            old.unlink()
    real = np.load(d / "real.npy")
    mix = Mixture.load(d / "mixture.npz")
    total = max(n, len(real))
    tmp = d / "vectors.tmp.npy"
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(total, real.shape[1]))
    arr[: len(real)] = real
    at = len(real)
    for block, _ in sample_blocks(mix, total - len(real), seed=SEED):
        arr[at : at + len(block)] = block
        at += len(block)
    arr.flush()
    del arr
    tmp.replace(path)
    _write_json(stamp, {"rows": total, "mixture_sha256": mixture_sha})
    return path


def ensure_ground_truth(out: Path, n: int, k: int = 10) -> Path:
    """gt-<n>.npy: the exact top-k rows of every evaluation query over the first n vectors."""
    d = data_dir(out)
    path = d / f"gt-{n}.npy"
    if path.is_file():
        return path
    _, rows = exact_topk(d / "vectors.npy", n, np.load(d / "queries.npy"), k)
    _save_npy(path, rows)
    return path


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.npy")
    np.save(tmp, arr)
    tmp.replace(path)


def _write_json(path: Path, obj: dict) -> None:
    from densekit.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=1) + "\n")
