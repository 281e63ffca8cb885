"""The densekit CLI: help on every command, eval writes its report, bad input exits 2
with the file and line named (no stack trace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from densekit.cli.main import app

runner = CliRunner()
DENSEKIT = [sys.executable, "-m", "densekit.cli.main"]


@pytest.mark.parametrize("args", [[], ["data"], ["index"], ["eval"], ["train"], ["serve"], ["index", "build"], ["data", "fetch"]])
def test_help_everywhere(args):
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_eval_writes_report(tiny_beir, tiny_st_model_dir, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["eval", "--data", str(tiny_beir), "--split", "test", "--model", str(tiny_st_model_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("ndcg@10", "ndcg@100", "recall@10", "recall@100", "mrr@10", "map@100", "auc_global", "auc_per_query"):
        assert 0.0 <= metrics["metrics"][key] <= 1.0
    assert metrics["dataset"] == "tiny" and metrics["split"] == "test"
    assert metrics["counts"] == {"documents": 6, "queries": 3, "qrels": 4}
    assert {"encode_queries_s", "search_s"} <= set(metrics["timings_s"])
    run_lines = (out / "run.trec").read_text().splitlines()
    assert len(run_lines) == 3 * 6  # top_k is capped by the corpus size
    assert run_lines[0].split()[1] == "Q0"
    assert "ndcg@10" in (out / "report.md").read_text()


def test_index_build_then_eval_with_index(tiny_beir, tiny_st_model_dir, tmp_path):
    ix = tmp_path / "ix"
    r = runner.invoke(app, ["index", "build", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--out", str(ix)])
    assert r.exit_code == 0, r.output
    assert (ix / "manifest.json").is_file() and (ix / "index.faiss").is_file() and (ix / "docstore.sqlite").is_file()
    info = runner.invoke(app, ["index", "info", str(ix)])
    assert json.loads(info.stdout)["doc_count"] == 6
    out1, out2 = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, ["eval", "--data", str(tiny_beir), "--index", str(ix), "--out", str(out1)]).exit_code == 0
    assert runner.invoke(app, ["eval", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--out", str(out2)]).exit_code == 0
    m1 = json.loads((out1 / "metrics.json").read_text())["metrics"]
    m2 = json.loads((out2 / "metrics.json").read_text())["metrics"]
    assert m1["ndcg@10"] == pytest.approx(m2["ndcg@10"], abs=1e-6)


def test_data_info_and_fetch_from(tiny_beir, tmp_path):
    r = runner.invoke(app, ["data", "info", str(tiny_beir)])
    assert json.loads(r.stdout)["splits"]["test"]["queries"] == 3
    r = runner.invoke(app, ["data", "fetch", "tiny2", "--from", str(tiny_beir), "--data-dir", str(tmp_path / "root")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "root" / "tiny2" / "qrels" / "test.tsv").is_file()


def test_bad_file_gives_clear_error_and_exit_2(tiny_beir, tmp_path):
    bad = tmp_path / "bad"
    import shutil

    shutil.copytree(tiny_beir, bad)
    with (bad / "qrels" / "test.tsv").open("a") as fh:
        fh.write("q1\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([*DENSEKIT, "data", "info", str(bad)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2
    assert f"{bad / 'qrels' / 'test.tsv'}:6" in p.stderr.replace("\n", "")
    assert "Traceback" not in p.stderr


def test_unknown_dataset_name(tmp_path):
    env = {**os.environ, "DENSEKIT_DATA_DIR": str(tmp_path)}
    p = subprocess.run([*DENSEKIT, "data", "info", "nosuchset"], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "nosuchset" in p.stderr and "Traceback" not in p.stderr


# ---- densekit serve: flags generated from the settings ---------------------------------------
def test_every_setting_has_a_serve_flag_with_its_description():
    import re

    from densekit.cli.serve_cmd import flag_name
    from densekit.settings import Settings

    result = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").split())
    for field, info in Settings.model_fields.items():
        assert re.search(rf"{flag_name(field)}(?![\w-])", text), f"no flag for setting {field}"
        assert info.description and " ".join(info.description.split())[:40] in text, f"no help for {field}"
    for old in ("--index", "--api-key", "--cors-origin", "--read-only", "--log-text"):  # documented spellings
        assert re.search(rf"{old}(?![\w-])", text), old


def test_serve_flags_reach_the_apps_settings(tiny_st_model_dir, monkeypatch):
    import httpx
    from service_support import ServerProcess

    monkeypatch.setenv("DENSEKIT_MAX_TOP_K", "5")  # a flag wins over the environment
    monkeypatch.setenv("DENSEKIT_MAX_QUEUE", "33")  # the environment still counts where no flag is given
    server = ServerProcess(
        "--model",
        str(tiny_st_model_dir),
        "--device",
        "cpu",
        "--max-top-k",
        "77",
        "--snapshot-interval-s",
        "7.5",
        "--batch-size",
        "5",
        "--dtype",
        "bfloat16",
        "--torch-threads",
        "1",
        "--log-text",
    )
    try:
        server.wait_ready()
        info = httpx.get(server.url + "/info", timeout=10).json()
    finally:
        server.stop()
    limits = info["limits"]
    assert (limits["max_top_k"], limits["max_queue"], limits["snapshot_interval_s"], limits["batch_size"]) == (77, 33, 7.5, 5)
    assert "bfloat16" in info["backend"]


def test_serve_with_a_mistyped_index_path_creates_nothing(tmp_path):
    p = subprocess.run(
        [*DENSEKIT, "serve", "--index", str(tmp_path / "indx"), "--port", "1"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr
    assert list(tmp_path.iterdir()) == []
