"""The Ray benchmarks' own arithmetic and files: overhead and fan-out cost from result cells,
the answer check of the fan-out bench, the corpus slice and query set they read, the report
over a folder of results; and (slow) one local and one Ray encoding run on a real corpus."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from densekit.bench import fanout, ray_encode, ray_report
from densekit.cli.main import app
from densekit.errors import InvalidInputError


def encode_cell(engine: str, rate: float, actors: int | None = None, cpus: float | None = None, docs: int = 1000, threads: int = 2):
    return {
        "engine": engine,
        "actors": actors,
        "cpus_per_actor": cpus,
        "docs": docs,
        "docs_per_s": rate,
        "docs_per_s_encoding": rate * 1.1,
        "wall_s": docs / rate,
        "torch_threads": threads,
    }


def fanout_cell(server: str, shards: int, p50: float, rps: float, encode_ms: float = 10.0, equal: bool = True):
    return {
        "server": server,
        "shards": shards,
        "check": {"equal": equal},
        "sequential": {
            "latency": {"p50_ms": p50, "p99_ms": p50 * 2, "n": 300},
            "latency_minus_encode_p50_ms": p50 - encode_ms,
            "server_stage_median_ms": {"x-encode-time": encode_ms, "x-search-time": 1.0},
        },
        "concurrent": {"clients": 8, "throughput_rps": rps, "latency": {"p50_ms": p50 * 4, "p99_ms": p50 * 8}},
    }


def test_overhead_is_extra_wall_time_in_percent():
    assert ray_encode.overhead_pct(10.0, 10.0) == 0.0
    assert ray_encode.overhead_pct(10.0, 8.0) == pytest.approx(25.0)  # 8 docs/s takes 1.25x as long
    assert ray_encode.overhead_pct(10.0, 12.5) == pytest.approx(-20.0)
    with pytest.raises(InvalidInputError):
        ray_encode.overhead_pct(0.0, 1.0)


def test_encode_summary_medians_and_goal():
    cells = [
        encode_cell("local", 10.0),
        encode_cell("ray", 9.5, 1, 2),
        encode_cell("local", 12.0),
        encode_cell("ray", 9.7, 1, 2),
        encode_cell("local", 11.0),
        encode_cell("ray", 8.0, 2, 1, threads=1),
        encode_cell("ray", 8.5, 2, 1, threads=1),
    ]
    s = ray_encode.summarise_encode(cells)
    assert s["docs"] == 1000 and set(s["configs"]) == {"local", "ray, 1 actor x 2 CPU", "ray, 2 actors x 1 CPU"}
    assert s["configs"]["local"]["docs_per_s_median"] == 11.0 and "overhead_pct" not in s["configs"]["local"]
    one = s["configs"]["ray, 1 actor x 2 CPU"]
    assert one["docs_per_s_median"] == 9.6 and one["overhead_pct"] == pytest.approx(14.6, abs=0.05)
    assert one["within_goal"] is False and one["runs"] == 2 and one["docs_per_s"] == [9.5, 9.7]
    assert s["configs"]["ray, 2 actors x 1 CPU"]["torch_threads"] == [1]
    table = ray_encode.markdown_table(s)
    assert table.count("\n") == 2 + 3 and "| ray, 1 actor x 2 CPU | 2 | 2 | 9.5, 9.7 | 9.6 |" in table and "+14.6 %" in table


def test_paired_overhead_compares_each_ray_run_with_its_nearest_local_run():
    # The machine slows down by half between the rounds; each round's ratio is 12 % or 0 %.
    def at(cell, minute):
        return {**cell, "started": f"2026-12-07 21:{minute:02d}:00 UTC"}

    cells = [
        at(encode_cell("local", 11.2), 0),
        at(encode_cell("ray", 10.0, 2, 1), 3),
        at(encode_cell("ray", 5.0, 2, 1), 30),
        at(encode_cell("local", 5.6), 33),
        at(encode_cell("ray", 6.0, 2, 1), 38),
        at(encode_cell("local", 6.0), 40),
    ]
    summary = ray_encode.summarise_encode(cells)
    row = summary["configs"]["ray, 2 actors x 1 CPU"]
    assert row["overhead_pct_pairs"] == [12.0, 12.0, 0.0] and row["overhead_pct_paired"] == 12.0
    assert row["overhead_pct"] == 0.0  # the ratio of medians (6.0 / 6.0) would be within the goal
    assert row["within_goal"] is False  # the paired figure decides
    assert "+12.0 % (+12.0, +12.0, +0.0)" in ray_encode.markdown_table(summary)
    assert (
        "overhead_pct_paired"
        not in ray_encode.summarise_encode([encode_cell("local", 9.0), encode_cell("ray", 9.0, 1, 2)])["configs"]["ray, 1 actor x 2 CPU"]
    )


def test_encode_summary_refuses_cells_it_cannot_compare():
    with pytest.raises(InvalidInputError, match="local"):
        ray_encode.summarise_encode([encode_cell("ray", 9.0, 1, 2)])
    with pytest.raises(InvalidInputError, match="corpus sizes"):
        ray_encode.summarise_encode([encode_cell("local", 9.0), encode_cell("ray", 9.0, 1, 2, docs=500)])


def test_corpus_head_is_the_first_documents_in_order(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "title": f"t{i}", "text": f"x {i}"}) + "\n" for i in range(10)))
    head = ray_encode.corpus_head(corpus, 4, tmp_path / "work")
    rows = [json.loads(line) for line in head.read_text().splitlines()]
    assert [r["_id"] for r in rows] == ["d0", "d1", "d2", "d3"] and rows[2]["text"] == "x 2"
    with pytest.raises(InvalidInputError, match="only 10"):
        ray_encode.corpus_head(corpus, 11, tmp_path / "work")


def test_tree_cpu_seconds_counts_children_waited_for():
    before = ray_encode.tree_cpu_seconds(os.getpid())
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    subprocess.run([sys.executable, "-c", burn], check=True)
    assert ray_encode.tree_cpu_seconds(os.getpid()) - before >= 0.25


def test_compare_hits_names_every_difference():
    want = [[("a", 0.9), ("b", 0.8)], [("c", 0.7)]]
    assert fanout.compare_hits(want, [[("a", 0.90001), ("b", 0.8)], [("c", 0.7)]], atol=1e-4) == []
    problems = fanout.compare_hits(want, [[("b", 0.9), ("a", 0.8)], [("c", 0.71)]], atol=1e-4)
    assert len(problems) == 2 and problems[0].startswith("query 0: ids") and "scores differ" in problems[1]
    assert fanout.compare_hits(want, want[:1], atol=1e-4) == ["1 answers for 2 queries"]


def test_fanout_summary_cost_is_p50_over_the_single_process():
    cells = [
        fanout_cell("single", 1, 20.0, 50.0),
        fanout_cell("ray", 1, 26.0, 30.0),
        fanout_cell("ray", 4, 31.0, 20.0),
        fanout_cell("ray", 4, 33.0, 22.0),
        fanout_cell("single", 4, 21.0, 48.0),
    ]
    s = fanout.summarise_fanout(cells)
    rows = s["configs"]
    assert rows["single process, 1 shard"]["fanout_cost_p50_ms"] == 0.0
    assert rows["Ray Serve, 1 shard"]["fanout_cost_p50_ms"] == 6.0
    assert rows["Ray Serve, 4 shards"]["fanout_cost_p50_ms"] == 12.0 and rows["Ray Serve, 4 shards"]["throughput_rps"] == 21.0
    assert rows["Ray Serve, 4 shards"]["seq_minus_encode_p50_ms"] == 22.0 and rows["single process, 4 shards"]["runs"] == 1
    table = fanout.markdown_table(s)
    assert "| Ray Serve, 4 shards | 2 | yes | 32.0 |" in table and "| +12.0 |" in table
    with pytest.raises(InvalidInputError):
        fanout.summarise_fanout([fanout_cell("ray", 2, 30.0, 10.0)])
    assert "| NO |" in fanout.markdown_table(fanout.summarise_fanout([fanout_cell("single", 1, 20.0, 50.0, equal=False)]))


def test_test_split_queries_and_server_commands(tiny_beir):
    assert fanout.queries_of_test_split(tiny_beir, 2) == ["what is the capital of France", "library for vector similarity search"]
    opts = fanout.FanoutCellOptions(index="ix", reference="ix", data=str(tiny_beir), out="o.json", server="ray", replica_cpus=0.5)
    cmd = fanout.server_command(opts, 8123)
    assert cmd[cmd.index("--engine") + 1] == "ray" and cmd[cmd.index("--replica-cpus") + 1] == "0.5" and "--read-only" in cmd
    single = fanout.server_command(fanout.FanoutCellOptions(index="ix", reference="ix", data="d", out="o.json"), 8123)
    assert "--engine" not in single and single[single.index("--index") + 1] == "ix"


def test_report_reads_a_folder_of_results(tmp_path):
    cells = {
        "encode-1.json": encode_cell("local", 10.0),
        "encode-2.json": encode_cell("ray", 9.0, 2, 1),
        "start-1.json": {"init_s": 4.0, "first_task_s": 5.0, "first_batch_after_init_s": 9.0, "first_batch_total_s": 13.0},
        "fanout-1.json": fanout_cell("single", 1, 20.0, 50.0),
        "fanout-2.json": fanout_cell("ray", 2, 28.0, 30.0),
        "notes.json": {"something": "else"},
    }
    for name, cell in cells.items():
        (tmp_path / name).write_text(json.dumps(cell))
    got = ray_report.read_cells(tmp_path)
    assert {k: len(v) for k, v in got.items()} == {"encode": 2, "cluster_start": 1, "fanout": 2}
    result = CliRunner().invoke(app, ["bench", "ray", "report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "+11.1 %" in result.output and "| 1 | 4.0 | 5.0 | 9.0 | 13.0 |" in result.output and "| +8.0 |" in result.output
    as_json = json.loads(CliRunner().invoke(app, ["bench", "ray", "report", str(tmp_path), "--json"]).output)
    assert as_json["fanout"]["configs"]["Ray Serve, 2 shards"]["fanout_cost_p50_ms"] == 8.0


@pytest.mark.slow
def test_encode_cells_local_and_ray_on_real_documents(data_dir, minilm_path, ray_cluster, tmp_path):
    common = dict(data=str(data_dir / "scifact"), docs=24, work_dir=str(tmp_path / "work"), batch_size=8)
    local = ray_encode.run_encode_cell(ray_encode.EncodeCellOptions(out=str(tmp_path / "local.json"), **common))
    on_ray = ray_encode.run_encode_cell(
        ray_encode.EncodeCellOptions(out=str(tmp_path / "ray.json"), engine="ray", actors=1, cpus_per_actor=2, settle_s=0, **common)
    )
    assert local["docs_per_s"] > 0 and on_ray["docs_per_s"] > 0
    # an actor reserving 2 CPUs encodes with 2 torch threads; the outputs were removed
    assert on_ray["torch_threads"] == 2 and on_ray["omp_num_threads"] == "2"
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["corpus-scifact-24.jsonl"]
    summary = ray_encode.summarise_encode(ray_encode.load_cells([tmp_path / "local.json", tmp_path / "ray.json"]))
    assert "ray, 1 actor x 2 CPU" in summary["configs"]
