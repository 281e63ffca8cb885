"""Index scale benchmark: every index kind at growing corpus sizes (build time, bytes/vector,
resident memory, queries/s, recall@10 against exact search).

Vectors: every real corpus vector of the shared data sets, topped up with synthetic vectors
from a Gaussian mixture fitted to them (densekit.bench.synthetic_vectors); queries are real.
Each (kind, n) cell runs in a fresh process (densekit.bench.scale_cell) holding the CPU lock,
when one is given, for that cell only; rows are appended to results.jsonl as each cell ends,
so an interrupted run resumes with the cells it had not finished.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from densekit.bench import scale_data
from densekit.bench.vectors import DEFAULT_VECTORS_DIR
from densekit.errors import InvalidInputError

DEFAULT_OUT = Path("runs/bench-scale")
RESULTS = "results.jsonl"
LOCK_ENV = "DENSEKIT_CPU_LOCK"
KIND_ORDER = ("flat", "ivf", "ivfpq", "opq-ivfpq", "hnsw", "distilled")
LABELS = {"ivfpq": "ivfpq 16B", "opq-ivfpq": "opq-ivfpq 16B", "distilled": "distilled 16B"}


@contextlib.contextmanager
def cpu_lock(path: str | Path | None) -> Iterator[None]:
    """Hold an exclusive flock on `path` (none: no lock) for the block."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def default_lock() -> str | None:
    return os.environ.get(LOCK_ENV) or None


def read_results(out: Path) -> list[dict]:
    path = Path(out) / RESULTS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_result(out: Path, row: dict) -> None:
    """Add one row to results.jsonl, rewriting the file atomically (a crash keeps every finished row)."""
    from densekit.atomic import write_text_atomic

    path = Path(out) / RESULTS
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    write_text_atomic(path, old + json.dumps(row) + "\n")


def finished(out: Path) -> set[tuple[str, int]]:
    return {(r["kind"], int(r["n"])) for r in read_results(out) if "error" not in r}


def prepare(out: Path, ns: list[int], data_dir: Path, vectors_dir: Path = DEFAULT_VECTORS_DIR, lock: str | None = None) -> None:
    """Real vectors, mixture, evaluation queries, the corpus of max(ns) rows and every n's ground truth (each step under the lock)."""
    d = scale_data.data_dir(out)
    if not (d / "data.json").is_file():
        with cpu_lock(lock):
            _log("encoding / loading real vectors, fitting the mixture")
            scale_data.prepare_real(data_dir, out, vectors_dir)
    if not scale_data.vectors_ready(out, max(ns)):
        with cpu_lock(lock):
            _log(f"corpus of {max(ns)} vectors")
            scale_data.ensure_vectors(out, max(ns))
    for n in ns:
        if not (d / f"gt-{n}.npy").is_file():
            with cpu_lock(lock):
                _log(f"exact ground truth at n={n}")
                scale_data.ensure_ground_truth(out, n)


def run_cell_process(out: Path, kind: str, n: int, timeout_s: float | None = None) -> dict:
    """Measure one cell in a fresh interpreter; the row, or an error row when it failed."""
    cmd = [sys.executable, "-m", "densekit.bench.scale_cell", str(out), kind, str(n)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        return {"kind": kind, "n": n, "error": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"kind": kind, "n": n, "error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
    row = json.loads(lines[-1])
    row["cell_wall_s"] = round(time.perf_counter() - t0, 1)
    return row


def run(
    out: Path,
    ns: list[int],
    kinds: list[str],
    data_dir: Path,
    vectors_dir: Path = DEFAULT_VECTORS_DIR,
    lock: str | None = None,
    until: dt.datetime | None = None,
    cell_timeout_s: float | None = None,
) -> list[dict]:
    """Measure every (kind, n) cell not in results.jsonl yet, smallest n first; no cell starts after `until`."""
    bad = [k for k in kinds if k not in KIND_ORDER]
    if bad:
        raise InvalidInputError(f"unknown index kind {bad[0]!r}: choose from {', '.join(KIND_ORDER)}")
    if not ns or min(ns) < 1:
        raise InvalidInputError("--n: give at least one positive corpus size")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ns = sorted(set(ns))
    # The distilled cell starts from the opq-ivfpq cell's trained index: run that one first.
    if "distilled" in kinds and "opq-ivfpq" in kinds and kinds.index("distilled") < kinds.index("opq-ivfpq"):
        kinds = [k for k in kinds if k != "distilled"] + ["distilled"]
    prepare(out, ns, data_dir, vectors_dir, lock)
    rows: list[dict] = []
    for n in ns:
        for kind in kinds:
            if (kind, n) in finished(out):
                _log(f"{kind} n={n}: done already")
                continue
            if until is not None and dt.datetime.now(dt.timezone.utc) >= until:
                _log(f"past {until:%H:%M} UTC: {kind} n={n} and later cells not started")
                return rows
            with cpu_lock(lock):
                _log(f"{kind} n={n}: building")
                row = run_cell_process(out, kind, n, cell_timeout_s)
            append_result(out, row)
            rows.append(row)
            _log(json.dumps({k: v for k, v in row.items() if k not in ("stderr", "epoch_loss")}))
    return rows


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- report -----------------------------------------------------------------------------------
def scaling_exponent(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(value) against log(n): cost ~ n^slope."""
    pts = [(math.log(n), math.log(v)) for n, v in points if v and v > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx


def _sp(sp: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sp.items()) or "exact"


def _mb(x: float) -> str:
    return f"{x / 1024:.2f} GB" if x >= 1024 else f"{x:.0f} MB"


def report(out: Path = DEFAULT_OUT) -> str:
    """Markdown tables per n (the default operating point), the search sweep and the fitted
    scaling exponents; also written to out/report.md."""
    from densekit.atomic import write_text_atomic

    rows = read_results(out)
    ok = [r for r in rows if "error" not in r]
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    ok.sort(key=lambda r: (r["n"], order.get(r["kind"], 9)))
    lines: list[str] = []
    meta_path = scale_data.data_dir(out) / "data.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        s = meta["sanity"]
        lines += [
            f"Real vectors: {meta['real_vectors']} ({', '.join(meta['sets'])}); {meta['eval_queries']} evaluation queries, "
            f"{meta['train_queries']} Distill-VQ training queries. Synthetic check (percentiles {s['percentiles']}):",
            "",
            "| statistic | real docs | synthetic docs |",
            "|---|---|---|",
            f"| query top-1 cosine | {s['query_top1_real']} | {s['query_top1_synthetic']} |",
            f"| doc nearest-neighbour cosine | {s['doc_nn_real']} | {s['doc_nn_synthetic']} |",
            f"| random doc pair cosine | {s['random_pair_real']} | {s['random_pair_synthetic']} |",
            "",
        ]
    for n in sorted({r["n"] for r in ok}):
        lines += [
            f"**n = {n:,}**",
            "",
            "| index | search | recall@10 | QPS batch 1 | QPS batch 256 | train s | add s | bytes/vec (code / file) | peak RSS build | RSS after build |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in (r for r in ok if r["n"] == n):
            p = r["points"][0]
            label = LABELS.get(r["kind"], r["kind"])
            if "nlist" in r["build_params"]:
                label += f" (nlist {r['build_params']['nlist']})"
            lines.append(
                f"| {label} | {_sp(p['search_params'])} | {p['recall@10']:.3f} | {p['qps_1']:,.0f} | {p['qps_256']:,.0f} "
                f"| {r['train_s']:.1f} | {r['add_s']:.1f} | {r['code_bytes_per_vector']:g} / {r['index_bytes_per_vector']:g} "
                f"| {_mb(r['peak_rss_build_mb'])} | {_mb(r['rss_after_build_mb'])} |"
            )
        lines.append("")
    sweep = [(r, p) for r in ok for p in r["points"][1:]]
    if sweep:
        lines += [
            "Other search settings (same indexes):",
            "",
            "| index | n | search | recall@10 | QPS batch 1 | QPS batch 256 |",
            "|---|---|---|---|---|---|",
        ]
        for r, p in sweep:
            lines.append(
                f"| {LABELS.get(r['kind'], r['kind'])} | {r['n']:,} | {_sp(p['search_params'])} | {p['recall@10']:.3f} "
                f"| {p['qps_1']:,.0f} | {p['qps_256']:,.0f} |"
            )
        lines.append("")
    lines += [
        "Scaling exponents b in cost ~ n^b (least squares over the measured n):",
        "",
        "| index | n measured | build time | RSS after build | file bytes | QPS batch 1 (default search) | QPS batch 1 (nprobe 16) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KIND_ORDER:
        rs = [r for r in ok if r["kind"] == kind]
        if len(rs) < 2:
            continue

        def fit(get, rs=rs) -> str:
            b = scaling_exponent([(r["n"], get(r)) for r in rs])
            return "-" if b is None else f"{b:.2f}"

        def fixed_np16(r) -> float | None:
            return next((p["qps_1"] for p in r["points"] if p["search_params"].get("nprobe") == 16), None)

        lines.append(
            f"| {LABELS.get(kind, kind)} | {', '.join(format(r['n'], ',') for r in rs)} | {fit(lambda r: r['build_s'])} "
            f"| {fit(lambda r: r['rss_after_build_mb'])} | {fit(lambda r: r['index_bytes_per_vector'] * r['n'])} "
            f"| {fit(lambda r: r['points'][0]['qps_1'])} | {fit(fixed_np16)} |"
        )
    failed = [r for r in rows if "error" in r and (r["kind"], r["n"]) not in {(x["kind"], x["n"]) for x in ok}]
    if failed:
        lines += ["", "Cells that did not finish: " + "; ".join(f"{r['kind']} n={r['n']:,} ({r['error']})" for r in failed)]
    text = "\n".join(lines)
    write_text_atomic(Path(out) / "report.md", text + "\n")
    return text
