"""`densekit bench`: every sub-command documents every flag, and the benchmark functions
measure what they claim on small inputs (seconds, no model)."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from densekit.cli.main import app
from densekit.errors import InvalidInputError

runner = CliRunner()


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    for name, cmd in group.commands.items():
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, (*path, name))


BENCH = typer.main.get_command(app).commands["bench"]
ALL_COMMANDS = list(_commands(BENCH))


def test_bench_has_the_five_benchmarks():
    assert {"index", "service", "load", "rerank", "gpu"} <= set(BENCH.commands)
    result = runner.invoke(app, ["bench", "--help"])
    assert result.exit_code == 0, result.output
    for name in ("index", "service", "load", "rerank", "gpu"):
        assert name in result.output


@pytest.mark.parametrize("path", [p for p, _ in ALL_COMMANDS], ids=" ".join)
def test_every_bench_command_has_help_for_every_flag(path):
    cmd = dict(ALL_COMMANDS)[path]
    result = runner.invoke(app, ["bench", *path, "--help"])
    assert result.exit_code == 0, result.output
    assert cmd.help, f"{' '.join(path)} has no description"
    undocumented = [p.name for p in cmd.params if not getattr(p, "help", None)]
    assert not undocumented, f"densekit bench {' '.join(path)}: no help for {undocumented}"


def _tiny_set(n_docs=600, n_queries=24, dim=32, seed=0):
    from densekit.bench.index import BenchSet

    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n_docs, dim)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    # Each query sits near one document, which is its relevant one.
    targets = rng.choice(n_docs, n_queries, replace=False)
    queries = docs[targets] + 0.1 * rng.standard_normal((n_queries, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = [f"d{i}" for i in range(n_docs)]
    qids = [f"q{i}" for i in range(n_queries)]
    qrels = {q: {ids[t]: 1} for q, t in zip(qids, targets)}
    return BenchSet("tiny", ids, docs, qids, np.ascontiguousarray(queries), queries[:0], qrels, nlist=8)


def test_index_benchmark_reports_recall_qps_and_ndcg_per_setting(tmp_path):
    from densekit.bench.index import IndexSetting, benchmark_indexes, report

    data = _tiny_set()
    settings = [
        IndexSetting("flat", "flat", {}),
        IndexSetting("hnsw M8", "hnsw", {"hnsw_m": 8, "ef_construction": 40}),
        IndexSetting("ivf8", "ivf", {"nlist": 8}),
    ]
    rows = benchmark_indexes(data, settings, repeats=1)
    by_label = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r)
    assert set(by_label) == {"flat", "hnsw M8", "ivf8"}
    assert len(by_label["hnsw M8"]) == 5 and len(by_label["ivf8"]) == 3  # efSearch sweep; nprobe <= nlist
    for r in rows:
        assert 0.0 <= r["recall@10_vs_flat"] <= 1.0
        assert r["qps_single"] > 0 and r["qps_batched"] > 0 and r["build_s"] >= 0
        assert r["bytes_per_vector"] > 0
    assert by_label["flat"][0]["recall@10_vs_flat"] == 1.0
    # Searching all 8 lists is exact.
    assert by_label["ivf8"][-1]["search_params"] == {"nprobe": 8} and by_label["ivf8"][-1]["recall@10_vs_flat"] == 1.0
    assert by_label["flat"][0]["ndcg@10"] > 0.9  # each query's document is its nearest neighbour

    meta = {"dataset": "tiny", "docs": 600, "eval_queries": 24, "train_queries": 0, "nlist": 8, "date": "today"}
    meta["distill"] = {"lr_codebooks": 1e-3, "epochs": 1}
    (tmp_path / "results-tiny.json").write_text(json.dumps({"meta": meta, "rows": rows}))
    text = report(tmp_path, plot=None)
    table = [line for line in text.splitlines() if line.startswith("| ") and "bytes/vec" not in line]
    # Main table: exact search and the operating point only (efSearch 64; nprobe 16, which 8 lists never reach).
    assert [(cells[0], cells[2]) for cells in (line.split(" | ") for line in table)][:2] == [
        ("| flat", "exact"),
        ("| hnsw M8", "ef_search=64"),
    ]
    assert "| ivf8 | " not in text
    assert (tmp_path / "report.md").read_text().strip() == text.strip()


def test_index_benchmark_closes_each_index_before_building_the_next(tmp_path, monkeypatch):
    import tempfile

    from densekit.bench.index import IndexSetting, benchmark_indexes
    from densekit.index.dense_index import DenseIndex

    # In-memory indexes keep their document store in a temporary folder until closed.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stores_alive_at_build = []
    real_build = DenseIndex.build

    def counting_build(cls, *args, **kwargs):
        stores_alive_at_build.append(len(list(tmp_path.glob("densekit-docstore-*"))))
        return real_build(*args, **kwargs)

    monkeypatch.setattr(DenseIndex, "build", classmethod(counting_build))
    settings = [IndexSetting("flat", "flat", {}), IndexSetting("ivf8", "ivf", {"nlist": 8}), IndexSetting("flat again", "flat", {})]
    rows = benchmark_indexes(_tiny_set(), settings, repeats=1)
    assert {r["label"] for r in rows} == {"flat", "ivf8", "flat again"}
    assert stores_alive_at_build == [0, 0, 0]
    assert not list(tmp_path.glob("densekit-docstore-*"))


def test_distill_overrides_parse_numbers_and_reject_junk():
    from densekit.bench.index import DISTILL, parse_distill_overrides

    out = parse_distill_overrides(["lr_codebooks=0.01", "lr_schedule=cosine", "epochs=3"])
    assert out["lr_codebooks"] == 0.01 and out["lr_schedule"] == "cosine" and out["epochs"] == 3
    assert out["temperature"] == DISTILL["temperature"]
    with pytest.raises(InvalidInputError):
        parse_distill_overrides(["no-equals-sign"])


def test_load_refuses_non_loopback_targets_and_bad_mixes():
    from densekit.bench.load import LoadOptions, parse_mix, run_load

    with pytest.raises(InvalidInputError, match="loopback"):
        run_load(LoadOptions(url="http://example.com:80"))
    with pytest.raises(InvalidInputError, match="--url or --spawn"):
        run_load(LoadOptions())
    assert parse_mix("search=3,embed=1") == {"search": "3", "embed": "1"}
    for bad in ("search", "searches=1", "embed=x"):
        with pytest.raises(InvalidInputError):
            parse_mix(bad)


def test_load_command_refuses_a_non_loopback_target():
    result = runner.invoke(app, ["bench", "load", "--url", "http://10.1.2.3:80"])
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidInputError)


def test_gpu_compare_checks_ndcg_agreement(tmp_path):
    gpu, cpu = tmp_path / "gpu.json", tmp_path / "cpu.json"
    gpu.write_text(json.dumps({"metrics": {"ndcg@10": 0.6451}}))
    cpu.write_text(json.dumps({"metrics": {"ndcg@10": 0.6440}}))
    ok = runner.invoke(app, ["bench", "gpu", "compare", str(gpu), str(cpu)])
    assert ok.exit_code == 0, ok.output
    line = ok.output.strip().splitlines()[-1]
    assert line.startswith("compare ") and json.loads(line.split(" ", 1)[1])["ok"] is True
    bad = runner.invoke(app, ["bench", "gpu", "compare", str(gpu), str(cpu), "--tol", "0.0005"])
    assert bad.exit_code == 4
    assert json.loads(bad.output.strip().splitlines()[-1].split(" ", 1)[1])["abs_delta"] == pytest.approx(0.0011)


@pytest.mark.parametrize("server_s", [None, 1, 5, 75])
def test_load_client_drops_idle_connections_before_the_server_does(server_s):
    # Equal expiries race: the client reuses a connection in the instant the server closes it,
    # and the load run counts a transport failure the server did not cause.
    from densekit.bench.load import SERVER_KEEPALIVE_DEFAULT_S, client_keepalive_expiry

    info = None if server_s is None else {"limits": {"keep_alive_timeout_s": server_s}}
    expiry = client_keepalive_expiry(info)
    assert 0 < expiry < (server_s or SERVER_KEEPALIVE_DEFAULT_S)
