"""Markdown table of base vs fine-tuned metrics from `densekit train biencoder` run folders.

Usage: .venv/bin/python benchmarks/biencoder_table.py runs/ft-scifact-infonce runs/ft-scifact-mw
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEYS = ("ndcg@10", "recall@100", "mrr@10", "auc_global", "auc_per_query")


def main(folders: list[str]) -> None:
    rows = []
    base = None
    for f in folders:
        s = json.loads((Path(f) / "summary.json").read_text())
        if base is None and s.get("before"):
            base = ("base (" + s["config"]["model"] + ")", s["before"], None)
        t = s["train"]
        rows.append((f"{s['config']['loss']['name']} ({Path(f).name})", s["after"], t))
    print("| model | " + " | ".join(KEYS) + " | steps | train s | s/step |")
    print("|---|" + "---|" * (len(KEYS) + 3))
    for name, m, t in ([base] if base else []) + rows:
        cells = [f"{m[k]:.4f}" for k in KEYS]
        tcells = [str(t["steps"]), f"{t['seconds']:.0f}", f"{t['seconds_per_step']:.2f}"] if t else ["-", "-", "-"]
        print(f"| {name} | " + " | ".join(cells + tcells) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
