"""`densekit eval compare`: load the per-query values of two runs and test their difference.

A run is given as any of:
- a report folder written by `densekit eval` (its `per_query.csv`), or one run folder of a
  multi-dataset report (`OUT/runs/<dataset>/<config>`);
- a per-query CSV (`qid` column plus one column per metric);
- a TREC run file, scored against `qrels` (a qrels TSV or a BEIR folder and split).

`compare_global_auc` adds the paired bootstrap of the global ROC-AUC difference
(eval/significance.py); it reads the runs themselves (a TREC run file, or a report folder's
run.trec) and the qrels. Positives are scored from the run files: a relevant document
outside a run sits below that query's lowest retrieved score (eval/auc.py), negatives are
each query's top `auc_negatives` retrieved non-relevant documents.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from densekit.errors import DataFormatError, DatasetNotFoundError, InvalidInputError
from densekit.eval.significance import AucBootstrap, PairedTest, bootstrap_global_auc, compare_paired

PerQuery = dict[str, dict[str, float]]


def read_per_query_csv(path: str | Path) -> PerQuery:
    path = Path(path)
    out: PerQuery = {}
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(path, 1, "empty file, expected a header 'qid,<metric>,...'") from None
        if "qid" not in header:
            raise DataFormatError(path, 1, f"no 'qid' column in header {header}")
        qcol = header.index("qid")
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataFormatError(path, lineno, f"expected {len(header)} columns, got {len(row)}")
            values = {}
            for name, cell in zip(header, row):
                if name == "qid" or name in ("dataset", "config"):
                    continue
                try:
                    values[name] = float(cell)
                except ValueError:
                    raise DataFormatError(path, lineno, f"column '{name}' is not a number: {cell!r}") from None
            out[row[qcol]] = values
    return out


def load_qrels(qrels: str | Path, split: str = "test") -> dict[str, dict[str, int]]:
    """A BEIR folder (its qrels/<split>.tsv), a BEIR qrels TSV (`query-id corpus-id score`,
    header optional) or a TREC qrels file (`qid 0 docid grade`)."""
    from densekit.data import load_qrels as load_beir_qrels

    p = Path(qrels)
    if p.is_dir():
        return load_beir_qrels(p, split)
    if not p.is_file():
        raise DatasetNotFoundError(f"qrels not found: {p}")
    out: dict[str, dict[str, int]] = {}
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts or (lineno == 1 and parts[0] == "query-id"):
                continue
            if len(parts) == 3:
                qid, did, raw = parts
            elif len(parts) == 4:
                qid, _, did, raw = parts
            else:
                raise DataFormatError(p, lineno, f"expected 'qid docid grade' or 'qid 0 docid grade', got {len(parts)} columns")
            try:
                out.setdefault(qid, {})[did] = int(raw)
            except ValueError:
                raise DataFormatError(p, lineno, f"grade must be an integer, got {raw!r}") from None
    return out


def load_per_query(source: str | Path, qrels: str | Path | None = None, split: str = "test", auc_negatives: int = 500) -> PerQuery:
    """Per-query metric values of one run (see the module docstring for the forms)."""
    p = Path(source)
    if p.is_dir():
        if (p / "suite.json").is_file():
            raise InvalidInputError(f"{p} is a multi-dataset report: pass one of its runs, e.g. {p}/runs/<dataset>/<config>")
        csv_path = p / "per_query.csv"
        if not csv_path.is_file():
            raise DatasetNotFoundError(f"{p} has no per_query.csv (not a densekit eval report folder)")
        return read_per_query_csv(csv_path)
    if not p.is_file():
        raise DatasetNotFoundError(f"run not found: {p}")
    if p.suffix.lower() == ".csv":
        return read_per_query_csv(p)
    if qrels is None:
        raise InvalidInputError(f"{p} looks like a TREC run file: pass --qrels (a qrels TSV or BEIR folder) to score it")
    from densekit.eval.evaluate import score_run
    from densekit.eval.trec import read_positive_scores, read_run

    _, per_query = score_run(load_qrels(qrels, split), read_run(p), read_positive_scores(p), auc_negatives=auc_negatives)
    return per_query


def compare_runs(a: PerQuery, b: PerQuery, metrics: list[str], n_permutations: int = 10_000, seed: int = 42) -> list[PairedTest]:
    results = []
    for m in metrics:
        va = {q: v[m] for q, v in a.items() if m in v and not math.isnan(v[m])}
        vb = {q: v[m] for q, v in b.items() if m in v and not math.isnan(v[m])}
        if not va or not vb:
            known = sorted({k for v in a.values() for k in v})
            raise InvalidInputError(f"metric '{m}' not found in both runs; known: {', '.join(known)}")
        results.append(compare_paired(va, vb, m, n_permutations, seed))
    return results


def run_file(source: str | Path) -> Path:
    """The TREC run of a run given as a report folder or a run file."""
    p = Path(source)
    if p.is_dir():
        if not (p / "run.trec").is_file():
            raise DatasetNotFoundError(f"{p} has no run.trec (not a densekit eval report folder)")
        return p / "run.trec"
    if not p.is_file():
        raise DatasetNotFoundError(f"run not found: {p}")
    if p.suffix.lower() == ".csv":
        raise InvalidInputError(f"{p} holds per-query values, not a run: the global AUC needs the run file or its report folder")
    return p


def compare_global_auc(
    run_a: str | Path,
    run_b: str | Path,
    qrels: str | Path,
    split: str = "test",
    resamples: int = 1000,
    seed: int = 0,
    auc_negatives: int = 500,
) -> AucBootstrap:
    """Paired bootstrap over queries of the two runs' global ROC-AUC difference (B - A); a run
    with exact positive scores beside it (eval/trec.py) uses them, as its report did."""
    from densekit.eval.auc import collect_pairs
    from densekit.eval.trec import read_positive_scores, read_run

    judged = load_qrels(qrels, split)
    files = [run_file(r) for r in (run_a, run_b)]
    pairs = [collect_pairs(judged, read_run(f), read_positive_scores(f), auc_negatives) for f in files]
    return bootstrap_global_auc(pairs[0], pairs[1], resamples, seed)


def markdown_auc_bootstrap(b: AucBootstrap) -> str:
    return (
        f"Global ROC-AUC, paired bootstrap over {b.n_queries} queries ({b.resamples} resamples, seed {b.seed}):\n\n"
        "| A | B | B - A | 95% CI | P(B - A <= 0) |\n|---|---|---|---|---|\n"
        f"| {b.auc_a:.4f} | {b.auc_b:.4f} | {b.diff:+.4f} | [{b.ci95_low:+.4f}, {b.ci95_high:+.4f}] | {b.p_diff_le_0:.3f} |\n"
    )


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}" if abs(v) >= 1e-4 or v == 0 else f"{v:.2e}"
    return str(v)


def markdown_comparison(tests: list[PairedTest], name_a: str, name_b: str, alpha: float = 0.05) -> str:
    lines = [
        f"# densekit eval compare: A = {name_a}, B = {name_b}",
        "",
        f"Paired tests over the queries both runs scored; differences are B - A. `*` marks p < {alpha} in both tests.",
        "",
        "| metric | n | A | B | B - A | rel. | 95% CI | Cohen's d | W/T/L | p (randomisation) | p (t-test) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        sig = "*" if max(t.p_randomisation, t.p_ttest) < alpha else ""
        rel = f"{100 * t.relative_diff:+.1f}%" if t.relative_diff is not None else "-"
        ci = f"[{_fmt(t.ci95_low)}, {_fmt(t.ci95_high)}]" if t.ci95_low is not None else "-"
        perm = f"{_fmt(t.p_randomisation)} ({'exact' if t.exact else f'{t.n_permutations} perms'})"
        lines.append(
            f"| {t.metric}{sig} | {t.n_queries} | {_fmt(t.mean_a)} | {_fmt(t.mean_b)} | {t.mean_diff:+.4f} | {rel} | {ci} | "
            f"{_fmt(t.cohens_d, 3)} | {t.wins}/{t.ties}/{t.losses} | {perm} | {_fmt(t.p_ttest)} |"
        )
    return "\n".join(lines) + "\n"
