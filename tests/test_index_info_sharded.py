"""`densekit index info` on a sharded index folder: the sharded manifest's summary (kind, shards
with their documents and bytes, trained quantiser checksum, totals, BM25 part), as JSON and
as --summary lines, read without loading the shards; a missing shard is shown, not hidden."""

from __future__ import annotations

import json
import shutil

from test_sharded_index import write_synthetic
from typer.testing import CliRunner

from densekit.cli.main import app
from densekit.index.sharded_build import build_sharded
from densekit.index.sharded_info import human_bytes

runner = CliRunner()


def two_shards(tmp_path):
    emb, _, _, _ = write_synthetic(tmp_path, 60)
    manifest = build_sharded(emb, tmp_path / "sharded", 2, kind="flat")
    return tmp_path / "sharded", manifest


def test_info_json_of_a_sharded_folder(tmp_path):
    folder, manifest = two_shards(tmp_path)
    r = runner.invoke(app, ["index", "info", str(folder)])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)
    assert got["manifest"]["kind"] == "flat" and got["manifest"]["trained_sha256"] == manifest.trained_sha256
    assert [s["name"] for s in got["shards"]] == ["shard-00000", "shard-00001"]
    counts = [s["doc_count"] for s in got["shards"]]
    assert counts == [e.doc_count for e in manifest.shards] and sum(counts) == got["total_docs"] == 60 and min(counts) > 0
    on_disk = [sum(p.stat().st_size for p in (folder / s["name"]).rglob("*") if p.is_file()) for s in got["shards"]]
    assert [s["bytes"] for s in got["shards"]] == on_disk and got["total_bytes"] == sum(on_disk)
    assert got["lexical"] == "none" and all(s["lexical"] is False for s in got["shards"]) and got["missing_shards"] == []


def test_info_summary_lines_of_a_sharded_folder(tmp_path):
    folder, manifest = two_shards(tmp_path)
    r = runner.invoke(app, ["index", "info", str(folder), "--summary"])
    assert r.exit_code == 0, r.output
    lines = dict((line[:28].strip(), line[28:]) for line in r.stdout.splitlines())
    assert lines["kind"] == "flat (sharded)" and lines["shards"].startswith("2 ") and lines["documents"] == "60"
    assert lines["trained quantiser sha256"] == manifest.trained_sha256 and lines["lexical (BM25)"] == "none"
    first = manifest.shards[0]
    assert lines["shard-00000"].startswith(f"{first.doc_count} documents, ") and "bytes" in lines["shard-00000"]

    shutil.rmtree(folder / "shard-00001")
    r = runner.invoke(app, ["index", "info", str(folder), "--summary"])
    assert r.exit_code == 0, r.output
    assert "MISSING" in r.stdout.splitlines()[-1]
    assert json.loads(runner.invoke(app, ["index", "info", str(folder)]).stdout)["missing_shards"] == ["shard-00001"]


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 1023, 1536, 5 * 2**20)] == ["0 B", "1023 B", "1.5 KiB", "5.0 MiB"]
