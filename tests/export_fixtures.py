"""Helpers of the export tests: a BEIR folder any model ranks well, and a broken export."""

from __future__ import annotations

import json
from pathlib import Path

DOCS = {
    "d1": "Paris is the capital and largest city of France on the river Seine",
    "d2": "Dogs were domesticated from grey wolves by hunter gatherers long ago",
    "d3": "Faiss is a library for efficient similarity search over dense vectors",
    "d4": "The mitochondria produce most of the chemical energy of the cell",
    "d5": "Volcanoes erupt when magma rises through cracks in the earth crust",
    "d6": "Photosynthesis turns sunlight water and carbon dioxide into sugar",
}


def near_duplicate_beir(folder: Path) -> Path:
    """Each query is its document minus the last word: even a random-weights encoder ranks its
    document first (nDCG@10 near 1), so a broken export shows as a clear drop."""
    folder.mkdir(parents=True)
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in DOCS.items()))
    queries = {f"q{d}": t.rsplit(" ", 1)[0] for d, t in DOCS.items()}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{d}\t{d}\t1\n" for d in DOCS))
    return folder


def break_graph(folder: Path) -> None:
    """Overwrite the word-embedding table of an ONNX export with one constant, as a quantiser
    with ruinous calibration would: every token then looks alike."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    meta = json.loads((folder / "densekit_export.json").read_text())
    path = folder / meta["file_name"]
    model = onnx.load(str(path))
    table = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if len(t.dims) == 2 else 0)
    arr = numpy_helper.to_array(table)
    table.CopyFrom(numpy_helper.from_array(np.full_like(arr, 0.01), table.name))
    onnx.save(model, str(path))
