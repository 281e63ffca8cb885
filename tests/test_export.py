"""`densekit export`: ONNX / OpenVINO exports of the tiny models, their agreement with torch
fp32, the export cache, and the quality guard (library and CLI)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from export_fixtures import break_graph, near_duplicate_beir
from typer.testing import CliRunner

from densekit.backends import EXPORT_METADATA, read_export_metadata
from densekit.errors import ExportQualityError

SENTENCES = [
    "what is the capital of France?",
    "Paris is the capital and largest city of France.",
    "dense retrieval encodes queries and documents into vectors",
    "a",
    "The mitochondria is the powerhouse of the cell, producing ATP through oxidative phosphorylation in most eukaryotes.",
]
# (backend, precision, static calibration?, least cosine to torch fp32)
CASES = [
    ("onnx", "fp32", False, 0.999),
    ("onnx", "int8", False, 0.99),
    ("onnx", "int8", True, 0.99),
    ("openvino", "fp32", False, 0.999),
    ("openvino", "int8", False, 0.99),
    ("openvino", "int8", True, 0.99),
]


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEKIT_CACHE_DIR", str(tmp_path / "cache"))


def _needs(backend: str) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    if backend == "openvino":
        pytest.importorskip("openvino")


@pytest.mark.parametrize("backend,precision,static,least", CASES, ids=[f"{b}-{p}{'-static' if s else ''}" for b, p, s, _ in CASES])
def test_export_round_trip_agrees_with_torch_fp32(tiny_st_model_dir, backend, precision, static, least):
    _needs(backend)
    from densekit.encoder import Encoder
    from densekit.export import export_model

    folder = export_model(tiny_st_model_dir, "bi-encoder", backend, precision, calibration=SENTENCES * 4 if static else None)
    meta = read_export_metadata(folder)
    assert meta is not None and (meta.backend, meta.precision) == (backend, precision)
    assert meta.quantization == ({"fp32": None, "int8": "static" if static else "dynamic"}[precision])
    ref = Encoder(str(tiny_st_model_dir), device="cpu")
    exp = Encoder(str(folder))  # the folder names its own runtime
    assert (exp.runtime.backend, exp.runtime.precision) == (backend, precision)
    cos = (ref.encode(SENTENCES) * exp.encode(SENTENCES)).sum(axis=1)
    assert cos.min() >= least, cos
    # Queries and documents go through the same graph, with sentence-transformers' own pooling.
    assert np.allclose(np.linalg.norm(exp.encode_documents(SENTENCES), axis=1), 1.0, atol=1e-4)


def test_export_is_cached_by_content(tiny_st_model_dir):
    _needs("onnx")
    from densekit.export import export_model

    first = export_model(tiny_st_model_dir, "bi-encoder", "onnx", "int8")
    stamp = (first / EXPORT_METADATA).stat().st_mtime_ns
    assert export_model(tiny_st_model_dir, "bi-encoder", "onnx", "int8") == first
    assert (first / EXPORT_METADATA).stat().st_mtime_ns == stamp
    assert export_model(tiny_st_model_dir, "bi-encoder", "onnx", "fp32") != first
    assert export_model(tiny_st_model_dir, "bi-encoder", "onnx", "int8", calibration=SENTENCES) != first


def test_cross_encoder_export_scores_like_torch(tiny_ce_dir):
    _needs("onnx")
    from densekit.export import export_model
    from densekit.rerankers.cross_encoder import CrossEncoderReranker

    ref = CrossEncoderReranker.load(str(tiny_ce_dir), device="cpu")
    docs = SENTENCES[1:]
    want = np.array(ref.score(SENTENCES[0], docs))
    for precision, tol in (("fp32", 1e-4), ("int8", 2e-2)):
        folder = export_model(tiny_ce_dir, "cross-encoder", "onnx", precision)
        exp = CrossEncoderReranker.load(str(folder))
        assert (exp.runtime.backend, exp.runtime.precision) == ("onnx", precision)
        assert np.abs(np.array(exp.score(SENTENCES[0], docs)) - want).max() <= tol


def test_mean_head_cross_encoder_exports_its_encoder_and_keeps_the_head(tiny_st_model_dir, tmp_path):
    """densekit's own `head: mean` cross-encoders score with sentence-transformers modules after
    a bare encoder (no `logits`): the graph replaces the encoder, the head stays in torch."""
    _needs("onnx")
    from densekit.export import export_model
    from densekit.rerankers.cross_encoder import CrossEncoderReranker
    from densekit.training.rerank.cross_trainer import _base_cross_encoder

    _base_cross_encoder(str(tiny_st_model_dir), "mean", 64, "cpu").save_pretrained(str(tmp_path / "ce-mean"))
    ref = CrossEncoderReranker.load(str(tmp_path / "ce-mean"), device="cpu")
    docs = SENTENCES[1:]
    want = np.array(ref.score(SENTENCES[0], docs))
    exp = CrossEncoderReranker.load(str(export_model(tmp_path / "ce-mean", "cross-encoder", "onnx", "fp32")))
    assert exp.runtime.backend == "onnx"
    assert np.abs(np.array(exp.score(SENTENCES[0], docs)) - want).max() <= 1e-4


def test_guard_refuses_a_broken_export_and_force_overrides(tiny_st_model_dir, tmp_path):
    _needs("onnx")
    from densekit.eval.export_guard import check_bi_encoder_export
    from densekit.export import export_model

    data = near_duplicate_beir(tmp_path / "dups")
    good = export_model(tiny_st_model_dir, "bi-encoder", "onnx", "fp32")
    ok = check_bi_encoder_export(tiny_st_model_dir, good, data)
    assert ok.passed and ok.ndcg_source > 0.9 and abs(ok.ndcg_drop) <= 0.005 and ok.cosine_min >= 0.999
    break_graph(good)
    with pytest.raises(ExportQualityError, match="nDCG@10") as err:
        check_bi_encoder_export(tiny_st_model_dir, good, data)
    assert err.value.ndcg_drop > 0.005
    forced = check_bi_encoder_export(tiny_st_model_dir, good, data, force=True)
    assert forced.forced and not forced.passed and forced.ndcg_drop > 0.005


def test_cli_export_writes_checked_model_and_guard_exits_2(tiny_st_model_dir, tmp_path):
    _needs("onnx")
    from densekit.cli.main import app
    from densekit.export import export_model

    runner = CliRunner()
    data = near_duplicate_beir(tmp_path / "dups")
    out = tmp_path / "exported"
    args = ["export", "--model", str(tiny_st_model_dir), "--backend", "onnx", "--precision", "fp32", "--data", str(data), "--out", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / EXPORT_METADATA).read_text())
    assert meta["backend"] == "onnx" and meta["quality"]["passed"] and meta["quality"]["ndcg_source"] > 0.9
    assert meta["source"] == str(tiny_st_model_dir)

    # A broken export in the cache (what a ruinous quantiser would leave) is refused.
    break_graph(export_model(tiny_st_model_dir, "bi-encoder", "onnx", "fp32"))
    refused_out = tmp_path / "refused"
    res = runner.invoke(app, [*args[:-1], str(refused_out)])
    assert isinstance(res.exception, ExportQualityError) and "nDCG@10" in str(res.exception)
    assert not refused_out.exists()
    res = runner.invoke(app, [*args[:-1], str(refused_out), "--force"])
    assert res.exit_code == 0, res.output
    quality = json.loads((refused_out / EXPORT_METADATA).read_text())["quality"]
    assert quality["forced"] and not quality["passed"]


def test_cli_export_exit_code_2_names_the_drop(tiny_st_model_dir, tmp_path, monkeypatch):
    _needs("onnx")
    import subprocess
    import sys

    from densekit.export import export_model

    data = near_duplicate_beir(tmp_path / "dups")
    break_graph(export_model(tiny_st_model_dir, "bi-encoder", "onnx", "fp32"))
    cmd = [sys.executable, "-P", "-m", "densekit.cli.main", "export", "--model", str(tiny_st_model_dir), "--backend", "onnx"]
    res = subprocess.run([*cmd, "--data", str(data), "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stderr
    assert "loses" in res.stderr and "nDCG@10" in res.stderr
