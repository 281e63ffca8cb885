"""The multi-dataset report: suite.json (every number), report.md (a table per dataset, the
average over datasets, paired tests, calibration, plots) and a long per-query CSV."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import math
from pathlib import Path
from typing import Any

from densekit.atomic import write_json_atomic, write_text_atomic
from densekit.eval.cell import calibration_dict, safe_name
from densekit.eval.report import HEADLINE
from densekit.eval.significance import compare_paired


def _clean(v: Any) -> Any:
    """JSON has no NaN: write null."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def average_metrics(cells: dict[str, dict[str, Any]], config: str) -> tuple[dict[str, float], int]:
    """Unweighted mean over the datasets a configuration ran on (each dataset counts once, as
    BEIR and MTEB average)."""
    rows = [cells[d][config].metrics for d in cells if config in cells[d]]
    if not rows:
        return {}, 0
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    avg = {}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r[k], (int, float)) and not math.isnan(r[k])]
        avg[k] = float(sum(vals) / len(vals)) if len(vals) == len(rows) else math.nan
    return avg, len(rows)


def per_query_long_csv(cells: dict[str, dict[str, Any]]) -> str:
    cols = sorted({k for d in cells.values() for c in d.values() for row in c.per_query.values() for k in row})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "config", "qid", *cols])
    for dname, by_cfg in cells.items():
        for cname, cell in by_cfg.items():
            for qid in sorted(cell.per_query):
                row = cell.per_query[qid]
                w.writerow([dname, cname, qid, *(f"{row.get(c, float('nan')):.6f}" for c in cols)])
    return buf.getvalue()


def significance_tests(cells, names: list[str], metric: str) -> dict[str, dict[str, dict]]:
    """Each configuration against the first one, per dataset, on per-query `metric`; a reranked
    configuration's RRF fusion of both stages is tested too, as "<name> (RRF)"."""
    out: dict[str, dict[str, dict]] = {}
    if len(names) < 2:
        return out
    base = names[0]
    for dname, by_cfg in cells.items():
        if base not in by_cfg:
            continue
        a = {q: v[metric] for q, v in by_cfg[base].per_query.items() if metric in v}
        for cname in names[1:]:
            if cname not in by_cfg:
                continue
            cell = by_cfg[cname]
            variants = [(cname, cell.per_query)]
            if cell.fused is not None:
                variants.append((f"{cname} (RRF)", cell.fused.per_query_reranked))
            for label, per_query in variants:
                b = {q: v[metric] for q, v in per_query.items() if metric in v}
                if a and b:
                    out.setdefault(dname, {})[label] = compare_paired(a, b, metric).to_dict()
    return out


def _plots(out: Path, cells, suite, qrels_of: dict[str, dict]) -> dict[str, dict[str, Any]]:
    from densekit.eval.plots import plot_calibration, plot_recall, plot_roc

    written: dict[str, dict[str, Any]] = {}
    pdir = out / "plots"
    for dname, by_cfg in cells.items():
        if not by_cfg:
            continue
        d = safe_name(dname)
        entry: dict[str, Any] = {}
        rocs = {c: (*cell.roc, cell.metrics.get("auc_global", math.nan)) for c, cell in by_cfg.items() if cell.roc is not None}
        entry["roc"] = str(plot_roc(rocs, pdir / f"roc_{d}.png", f"{dname}: ROC over pooled pairs (global AUC)").relative_to(out))
        recs = {c: cell.recall_curve for c, cell in by_cfg.items() if cell.recall_curve is not None}
        entry["recall"] = str(plot_recall(recs, pdir / f"recall_{d}.png", f"{dname}: mean Recall@k").relative_to(out))
        entry["calibration"] = {}
        from densekit.eval.calibration import top_k_pairs
        from densekit.eval.curves import pooled_scores

        for c, cell in by_cfg.items():
            p, n = pooled_scores(cell.pairs)
            tp, tn = top_k_pairs(qrels_of[dname], cell.run, suite.calibration_depth)
            panels = [
                (f"global AUC pairs (top-{suite.auc_negatives} non-relevant per query)", p, n, cell.calibration.threshold),
                (
                    f"each query's top {suite.calibration_depth} hit(s)",
                    tp,
                    tn,
                    cell.calibration_top.threshold if cell.calibration_top else None,
                ),
            ]
            path = plot_calibration(
                panels, pdir / f"calibration_{d}_{safe_name(c)}.png", f"{dname} / {c}: score distributions", suite.precision_target
            )
            entry["calibration"][c] = str(path.relative_to(out))
        written[dname] = entry
    return written


def _public_run_config(c) -> dict[str, Any]:
    """A configuration as reports show it: no API key, no reranker settings without a reranker."""
    d = c.model_dump(mode="json", exclude_none=True)
    if "api_key" in d:
        d["api_key"] = "***"
    if c.reranker is None:
        d.pop("rerank_top_n", None)
    return d


def _public_config(suite, exclude_none: bool = False) -> dict[str, Any]:
    d = suite.model_dump(mode="json", exclude_none=exclude_none)
    d["configurations"] = [_public_run_config(c) for c in suite.configurations]
    return d


def write_suite_report(
    out: Path, suite, named, cells, counts: dict[str, dict], total_s: float, qrels_of: dict[str, dict]
) -> dict[str, Any]:
    import yaml

    out.mkdir(parents=True, exist_ok=True)
    names = [n for n, _ in named]
    sig = significance_tests(cells, names, suite.significance_metric)
    plots = _plots(out, cells, suite, qrels_of) if suite.plots else {}
    averages = {}
    for n in names:
        avg, k = average_metrics(cells, n)
        if k:
            averages[n] = {"datasets": k, "metrics": avg}

    summary = {
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "total_s": round(total_s, 3),
        "config": _public_config(suite),
        "configurations": {n: _public_run_config(c) for n, c in named},
        "datasets": {
            dname: {
                **counts.get(dname, {}),
                "results": {
                    cname: {
                        "metrics": cell.metrics,
                        "first_stage": cell.first_stage,
                        "rrf": cell.fused.reranked if cell.fused is not None else None,
                        "calibration": calibration_dict(cell, suite.calibration_depth),
                        "info": {k: v for k, v in cell.info.items() if k != "timings_s"},
                        "timings_s": {k: round(v, 3) for k, v in cell.timings.items()},
                        "run_dir": f"runs/{safe_name(dname)}/{safe_name(cname)}",
                    }
                    for cname, cell in by_cfg.items()
                },
            }
            for dname, by_cfg in cells.items()
        },
        "average": averages,
        "significance": {"metric": suite.significance_metric, "baseline": names[0], "tests": sig},
        "plots": plots,
    }
    write_json_atomic(out / "suite.json", _clean(summary))
    write_text_atomic(out / "per_query.csv", per_query_long_csv(cells))
    write_text_atomic(out / "config.yaml", yaml.safe_dump({**_public_config(suite, exclude_none=True), "out": str(out)}, sort_keys=False))
    write_text_atomic(out / "report.md", markdown_suite(summary, names))
    return summary


def markdown_suite(summary: dict[str, Any], names: list[str]) -> str:
    datasets = summary["datasets"]
    lines = ["# densekit evaluation suite", "", f"- **created**: {summary['created_at']} ({summary['total_s']:.0f} s)"]
    for n in names:
        lines.append(f"- **{n}**: {summary['configurations'][n]}")
    # Overview: nDCG@10 per dataset and the average.
    lines += [
        "",
        "## Overview: nDCG@10",
        "",
        "| configuration | " + " | ".join(datasets) + " | average |",
        "|---|" + "---|" * (len(datasets) + 1),
    ]
    for n in names:
        cells = [_fmt(datasets[d]["results"][n]["metrics"].get("ndcg@10")) if n in datasets[d]["results"] else "-" for d in datasets]
        avg = summary["average"].get(n, {}).get("metrics", {}).get("ndcg@10")
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {_fmt(avg)} |")
    # One table per dataset.
    for dname, d in datasets.items():
        res = d["results"]
        lines += ["", f"## {dname} ({d.get('split')}: {d.get('documents')} documents, {d.get('queries')} queries)", ""]
        lines += _table(["configuration", *HEADLINE], [[n, *(_fmt(res[n]["metrics"].get(k)) for k in HEADLINE)] for n in names if n in res])
        staged = [n for n in names if n in res and res[n].get("first_stage")]
        if staged:
            lines += [
                "",
                "Reranked configurations, both stages on the same candidates (each judged query's first-stage "
                "top rerank_top_n; eval/rerank.py): the first stage, and the RRF fusion of both stages:",
                "",
            ]
            rows = []
            for n in staged:
                rows.append([f"{n} (first stage)", *(_fmt(res[n]["first_stage"].get(k)) for k in HEADLINE)])
                if res[n].get("rrf"):
                    rows.append([f"{n} (RRF)", *(_fmt(res[n]["rrf"].get(k)) for k in HEADLINE)])
            lines += _table(["configuration", *HEADLINE], rows)
        present = [n for n in names if n in res]
        lines += _all_metrics("all metrics", {n: res[n]["metrics"] for n in present})
        tests = summary["significance"]["tests"].get(dname, {})
        if tests:
            base = summary["significance"]["baseline"]
            lines += ["", f"Paired tests on per-query {summary['significance']['metric']} against **{base}**:", ""]
            lines += ["| configuration | B - A | Cohen's d | W/T/L | p (randomisation) | p (t-test) |", "|---|---|---|---|---|---|"]
            for n, t in tests.items():
                d_ = "-" if t["cohens_d"] is None else f"{t['cohens_d']:.3f}"
                lines.append(
                    f"| {n} | {t['mean_diff']:+.4f} | {d_} | {t['wins']}/{t['ties']}/{t['losses']} | {t['p_randomisation']:.4g} | {t['p_ttest']:.4g} |"
                )
        depth = summary["config"]["calibration_depth"]
        lines += [
            "",
            f"Calibration: the lowest score keeping precision >= {summary['config']['precision_target']} (recall = share of relevant pairs kept):",
            "",
        ]
        lines += [
            "| configuration | pairs | threshold | precision | recall | relevant mean | non-relevant mean |",
            "|---|---|---|---|---|---|---|",
        ]
        for n in present:
            for kind, label in (("auc_pairs", "global AUC pairs"), (f"top{depth}", f"top {depth} hit(s)")):
                c = res[n]["calibration"].get(kind)
                if c:
                    lines.append(
                        f"| {n} | {label} | {_fmt(c['threshold'])} | {_fmt(c['precision'])} | {_fmt(c['recall'])} | {_fmt(c['pos_mean'])} | {_fmt(c['neg_mean'])} |"
                    )
        p = summary.get("plots", {}).get(dname)
        if p:
            lines += ["", f"![ROC {dname}]({p['roc']}) ![Recall@k {dname}]({p['recall']})"]
            lines += [" ".join(f"![calibration {dname} {n}]({path})" for n, path in p["calibration"].items())]
    # The average over datasets.
    averages = {n: summary["average"][n] for n in names if summary["average"].get(n)}
    lines += ["", "## Average over datasets", ""]
    lines += _table(
        ["configuration", "datasets", *HEADLINE],
        [[n, str(a["datasets"]), *(_fmt(a["metrics"].get(k)) for k in HEADLINE)] for n, a in averages.items()],
    )
    if any(a.get("metrics") for a in averages.values()):
        lines += _all_metrics("all averaged metrics", {n: a["metrics"] for n, a in averages.items()})
    lines += [
        "",
        "Per-run folders (run.trec, metrics.json, per_query.csv, report.md): `runs/<dataset>/<configuration>/`; per-query values of every run: `per_query.csv`.",
    ]
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def _all_metrics(summary_label: str, metrics_of: dict[str, dict[str, float]]) -> list[str]:
    """A collapsed table of every metric (rows) of every configuration (columns)."""
    keys = sorted({k for m in metrics_of.values() for k in m})
    rows = [[k, *(_fmt(m.get(k)) for m in metrics_of.values())] for k in keys]
    return ["", f"<details><summary>{summary_label}</summary>", "", *_table(["metric", *metrics_of], rows), "", "</details>"]
