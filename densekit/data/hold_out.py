"""A dev split carved out of a training split, so that a choice made after training (an
interpolation weight, a fusion weight) is made on queries no model trained on.

SciFact has only train and test; WikiQA has only training pairs. Choosing on the training
queries themselves favours the fine-tuned model and the dense side of a hybrid (they have
seen those queries), so a fraction of the training queries is set aside first:

- a BEIR folder: `qrels/<split>.tsv` is split by query id into the kept rows (same name) and
  the held-out rows (`qrels/<as_split>.tsv`); corpus, queries and every other split are copied
  unchanged, so the folder also evaluates on its test split as the original does;
- a pairs file: its rows are split by query text into `train_pairs.jsonl` (kept) and a BEIR
  folder made from the held-out rows (as `densekit data from-pairs` makes one), split `as_split`.

The held-out queries are a seeded random sample of the sorted query ids (or texts), so the
same source, fraction and seed give the same split on every machine. `hold_out.json` records
the source, the settings and the held-out queries.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from densekit.atomic import atomic_dir
from densekit.data.folders import check_split_name
from densekit.data.pairs import TrainingPair
from densekit.data.pairs_to_beir import write_beir_files
from densekit.errors import DataFormatError, InvalidInputError

RECORD_FILE = "hold_out.json"
KEPT_PAIRS_FILE = "train_pairs.jsonl"


def choose_held_out(keys: Sequence[str], fraction: float, seed: int) -> set[str]:
    """round(fraction * n) of the distinct keys, drawn with `seed` from their sorted order."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"fraction must be between 0 and 1 (exclusive), got {fraction}")
    distinct = sorted(set(keys))
    n_held = round(fraction * len(distinct))
    if n_held < 1 or n_held >= len(distinct):
        raise InvalidInputError(
            f"holding out {fraction} of {len(distinct)} queries leaves {n_held} held out and {len(distinct) - n_held} kept: both must be at least 1"
        )
    order = np.random.default_rng(seed).permutation(len(distinct))
    return {distinct[i] for i in order[:n_held]}


def _read_qrels_rows(path: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """(header line or None, [(query id, line)]) of a qrels TSV, lines kept verbatim."""
    header: str | None = None
    rows: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if lineno == 1 and fields[0] == "query-id":
                header = line
                continue
            if len(fields) < 3:
                raise DataFormatError(path, lineno, "expected 'query-id<TAB>corpus-id<TAB>score'")
            rows.append((fields[0], line if line.endswith("\n") else line + "\n"))
    return header, rows


def _check_out(out: Path, sources: list[Path]) -> None:
    """`out` is replaced whole: refuse a folder that holds a source, or that is not an earlier hold-out."""
    target = out.resolve()
    for src in sources:
        resolved = src.resolve()
        if resolved == target or resolved.is_relative_to(target) or target.is_relative_to(resolved):
            raise InvalidInputError(f"write the new folder apart from {src} (neither inside it nor around it)")
    if out.exists() and not (out / RECORD_FILE).is_file():
        raise InvalidInputError(f"{out} exists and is not an earlier hold-out (no {RECORD_FILE}): it would be replaced; name a new folder")


def hold_out_beir(
    source: str | Path, out: str | Path, split: str = "train", as_split: str = "dev", fraction: float = 0.2, seed: int = 0
) -> dict[str, object]:
    """Write `out/`, a copy of BEIR folder `source` whose `split` lost the held-out queries to
    `as_split`; atomic. Returns the record written to hold_out.json."""
    source, out = Path(source), Path(out)
    check_split_name(split, "split")
    check_split_name(as_split, "the held-out split")
    if split == as_split:
        raise InvalidInputError(f"the held-out split needs a name other than '{split}'")
    qrels_dir = source / "qrels"
    src_file = qrels_dir / f"{split}.tsv"
    if not src_file.is_file():
        have = sorted(p.stem for p in qrels_dir.glob("*.tsv"))
        raise InvalidInputError(f"{source} has no '{split}' split (its splits: {', '.join(have) or 'none'})")
    if (qrels_dir / f"{as_split}.tsv").exists():
        raise InvalidInputError(f"{source} already has a '{as_split}' split: name the held-out split otherwise (--as)")
    _check_out(out, [source])
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (source / name).is_file():
            raise InvalidInputError(f"{source} is not a BEIR folder: no {name}")
    header, rows = _read_qrels_rows(src_file)
    held = choose_held_out([qid for qid, _ in rows], fraction, seed)
    with atomic_dir(out) as tmp:
        for name in ("corpus.jsonl", "queries.jsonl"):
            shutil.copyfile(source / name, tmp / name)
        (tmp / "qrels").mkdir()
        for other in qrels_dir.glob("*.tsv"):
            if other.name != src_file.name:
                shutil.copyfile(other, tmp / "qrels" / other.name)
        for name, keep in ((split, False), (as_split, True)):
            with open(tmp / "qrels" / f"{name}.tsv", "w", encoding="utf-8") as fh:
                fh.write(header or "query-id\tcorpus-id\tscore\n")
                fh.writelines(line for qid, line in rows if (qid in held) == keep)
        record = {
            "source": str(source),
            "split": split,
            "held_out_split": as_split,
            "fraction": fraction,
            "seed": seed,
            "kept_queries": len({qid for qid, _ in rows} - held),
            "held_out_queries": sorted(held),
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def hold_out_pairs(
    pairs: list[TrainingPair], source: str | Path, out: str | Path, as_split: str = "dev", fraction: float = 0.2, seed: int = 0
) -> dict[str, object]:
    """Write `out/train_pairs.jsonl` (rows of the kept queries) and a BEIR folder of the held-out
    rows in `out/` (split `as_split`); atomic. Returns the record written to hold_out.json."""
    check_split_name(as_split, "the held-out split")
    _check_out(Path(out), [Path(source)])
    if not pairs:
        raise InvalidInputError(f"{source} has no rows")
    held = choose_held_out([p.query.strip() for p in pairs], fraction, seed)
    kept_rows = [p for p in pairs if p.query.strip() not in held]
    held_rows = [p for p in pairs if p.query.strip() in held]
    with atomic_dir(out) as tmp:
        counts = write_beir_files(held_rows, tmp, as_split)
        with open(tmp / KEPT_PAIRS_FILE, "w", encoding="utf-8") as fh:
            for p in kept_rows:
                row: dict[str, object] = {"query": p.query, "pos": p.pos, "neg": p.neg}
                if p.qid is not None:
                    row["qid"] = p.qid
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        record = {
            "source": str(source),
            "held_out_split": as_split,
            "fraction": fraction,
            "seed": seed,
            "kept_rows": len(kept_rows),
            "kept_queries": len({p.query.strip() for p in kept_rows}),
            "held_out_rows": len(held_rows),
            "held_out_queries": sorted(held),
            "held_out_beir": counts,
        }
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return record
