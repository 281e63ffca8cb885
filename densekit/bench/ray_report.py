"""The Ray benchmarks' result files (densekit.bench.ray_encode, densekit.bench.fanout) in one
folder, summarised as the BENCHMARKS.md tables. A file's kind is read from its fields."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from densekit.bench import fanout, ray_encode


def kind_of(cell: dict) -> str:
    """'encode', 'cluster_start' or 'fanout'; 'unknown' for any other JSON."""
    if "engine" in cell and "docs_per_s" in cell:
        return "encode"
    if "init_s" in cell and "first_batch_after_init_s" in cell:
        return "cluster_start"
    if "server" in cell and "sequential" in cell:
        return "fanout"
    return "unknown"


def read_cells(folder: str | Path) -> dict[str, list[dict]]:
    """The folder's result files (*.json, sorted by name) by kind."""
    out: dict[str, list[dict]] = {"encode": [], "cluster_start": [], "fanout": []}
    for path in sorted(Path(folder).glob("*.json")):
        cell = json.loads(path.read_text())
        if isinstance(cell, dict) and (k := kind_of(cell)) in out:
            out[k].append(cell)
    return out


def cluster_start_table(cells: list[dict]) -> str:
    lines = [
        "| runs | ray.init s (median) | first task s | first actor-pool batch after init s | cluster start to first batch s |",
        "|---|---|---|---|---|",
    ]
    if cells:

        def med(key: str) -> str:
            return f"{statistics.median(c[key] for c in cells):.1f}"

        lines.append(
            f"| {len(cells)} | {med('init_s')} | {med('first_task_s')} | {med('first_batch_after_init_s')} | {med('first_batch_total_s')} |"
        )
    return "\n".join(lines) + "\n"


def report(folder: str | Path) -> dict:
    """{"markdown": the tables, "encode": ..., "fanout": ...} for the cells found."""
    cells = read_cells(folder)
    parts: list[str] = []
    out: dict = {}
    if cells["encode"]:
        out["encode"] = ray_encode.summarise_encode(cells["encode"])
        parts.append(f"Encoding, {out['encode']['docs']} documents:\n\n" + ray_encode.markdown_table(out["encode"]))
    if cells["cluster_start"]:
        out["cluster_start"] = cells["cluster_start"]
        parts.append("Cluster start:\n\n" + cluster_start_table(cells["cluster_start"]))
    if cells["fanout"]:
        out["fanout"] = fanout.summarise_fanout(cells["fanout"])
        parts.append("/search fan-out:\n\n" + fanout.markdown_table(out["fanout"]))
    out["markdown"] = "\n".join(parts)
    return out
