"""The service with exported models: /info and /metrics name each model's backend and
precision, a cross-encoder reranker runs under the backend its settings ask for, and an
index built by another runtime is served with a warning, or refused past the drift limit."""

from __future__ import annotations

import json
import logging
import shutil

import httpx
import pytest
from service_support import build_index, serve_in_thread

from densekit.errors import IndexMismatchError
from densekit.settings import Settings

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def onnx_int8_encoder_dir(tiny_st_model_dir, tmp_path_factory):
    from densekit.export import export_model

    out = tmp_path_factory.mktemp("exported") / "model"
    shutil.copytree(export_model(tiny_st_model_dir, "bi-encoder", "onnx", "int8", use_cache=False), out)
    return out


def _set_export_cosine(folder, cosine_min: float) -> None:
    path = folder / "densekit_export.json"
    meta = json.loads(path.read_text())
    meta["quality"] = {"cosine_min": cosine_min, "cosine_mean": cosine_min}
    path.write_text(json.dumps(meta))


def test_info_and_metrics_name_backend_and_precision_of_each_model(tiny_st_model_dir, tiny_ce_dir, onnx_int8_encoder_dir, tmp_path, caplog):
    from densekit.service.app import create_app
    from densekit.service.state import load_state

    index_dir = build_index(tiny_st_model_dir, tmp_path / "index")  # documents encoded by torch fp32
    _set_export_cosine(onnx_int8_encoder_dir, 0.999)
    settings = Settings(
        index_dir=index_dir,
        model=str(onnx_int8_encoder_dir),
        allow_updates=False,
        reranker=str(tiny_ce_dir),
        reranker_backend="onnx",
        reranker_precision="fp32",
        device="cpu",
    )
    with caplog.at_level(logging.WARNING):
        state = load_state(settings)
    assert "index built with torch/fp32, queries encoded with onnx/int8" in caplog.text
    with serve_in_thread(create_app(settings, state=state)) as url:
        info = httpx.get(f"{url}/info").json()
        metrics = httpx.get(f"{url}/metrics").text
        ranked = httpx.post(f"{url}/rerank", json={"query": "capital of France", "texts": ["Paris is in France", "dogs"]})
    assert info["runtime"] == {"encoder": {"backend": "onnx", "precision": "int8"}, "reranker": {"backend": "onnx", "precision": "fp32"}}
    assert 'densekit_model_runtime{backend="onnx",model="encoder",precision="int8"} 1.0' in metrics
    assert 'densekit_model_runtime{backend="onnx",model="reranker",precision="fp32"} 1.0' in metrics
    assert ranked.status_code == 200 and len(ranked.json()) == 2


def test_index_of_another_runtime_is_refused_past_the_drift_limit(tiny_st_model_dir, onnx_int8_encoder_dir, tmp_path):
    from densekit.service.state import load_state

    index_dir = build_index(tiny_st_model_dir, tmp_path / "index")
    _set_export_cosine(onnx_int8_encoder_dir, 0.9)
    with pytest.raises(IndexMismatchError, match="cosine drift of 0.1000"):
        load_state(Settings(index_dir=index_dir, model=str(onnx_int8_encoder_dir), allow_updates=False, device="cpu"))


def test_llm_reranker_refuses_an_onnx_backend():
    from densekit.errors import ConfigError
    from densekit.rerankers import load_reranker

    with pytest.raises(ConfigError, match="LLM reranker runs under torch"):
        load_reranker("smollm2", kind="llm", backend="onnx")
