"""Backend/precision resolution: validation, missing runtimes, bf16 on this CPU, exported
folders bringing their own runtime, cache keys and index manifests per runtime."""

from __future__ import annotations

import logging
import sys

import pytest

from densekit.backends import Runtime, check_runtime, cpu_has_bf16, require_backend, resolve_runtime
from densekit.errors import BackendUnavailableError, ConfigError, IndexMismatchError


@pytest.fixture(autouse=True)
def export_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DENSEKIT_CACHE_DIR", str(tmp_path / "cache"))


def test_check_runtime_accepts_supported_pairs_and_names_the_fault():
    assert check_runtime("onnx", "int8") == Runtime("onnx", "int8")
    assert Runtime().is_default and not Runtime("torch", "bf16").is_default
    with pytest.raises(ConfigError, match="densekit export --backend onnx --precision int8"):
        check_runtime("torch", "int8")
    with pytest.raises(ConfigError, match="bf16 runs under torch"):
        check_runtime("onnx", "bf16")
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        check_runtime("tensorrt", "fp32")


def test_bf16_needs_native_cpu_support():
    assert cpu_has_bf16({"avx2", "avx512_bf16"}) and cpu_has_bf16({"amx_bf16"})
    assert not cpu_has_bf16({"avx2", "avx512f"})


def test_torch_bf16_on_this_cpu(tiny_st_model_dir):
    from densekit.encoder import Encoder

    if not cpu_has_bf16():
        with pytest.raises(ConfigError, match="avx512_bf16 or AMX"):
            Encoder(str(tiny_st_model_dir), device="cpu", precision="bf16")
        return
    enc = Encoder(str(tiny_st_model_dir), device="cpu", precision="bf16")
    assert enc.runtime == Runtime("torch", "bf16")
    ref = Encoder(str(tiny_st_model_dir), device="cpu")
    assert (ref.encode(["hello world"]) * enc.encode(["hello world"])).sum() >= 0.99


def test_missing_backend_names_the_extra(tiny_st_model_dir, monkeypatch):
    from densekit.encoder import Encoder

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if the package were not installed
    with pytest.raises(BackendUnavailableError, match=r"densekit\[openvino\]"):
        require_backend("openvino")
    with pytest.raises(BackendUnavailableError, match="install the 'openvino' extra"):
        Encoder(str(tiny_st_model_dir), backend="openvino")


def test_exported_folder_brings_its_runtime_and_refuses_another(tiny_st_model_dir):
    pytest.importorskip("onnxruntime")
    from densekit.encoder import Encoder
    from densekit.export import export_model
    from densekit.settings import Settings

    folder = export_model(tiny_st_model_dir, "bi-encoder", "onnx", "int8")
    assert resolve_runtime(str(folder), None, None)[0] == Runtime("onnx", "int8")
    assert resolve_runtime(str(tiny_st_model_dir), None, None) == (Runtime(), None)
    with pytest.raises(ConfigError, match="onnx/int8 export"):
        Encoder(str(folder), backend="torch")
    # Settings left at their defaults do not override the folder's runtime.
    enc = Encoder.from_settings(Settings(model=str(folder)))
    assert enc.runtime == Runtime("onnx", "int8") and enc.info().backend == "onnx"


def test_plain_folder_with_onnx_backend_is_exported_on_the_fly(tiny_st_model_dir):
    pytest.importorskip("onnxruntime")
    from densekit.encoder import Encoder
    from densekit.settings import Settings

    enc = Encoder.from_settings(Settings(model=str(tiny_st_model_dir), backend="onnx"))
    assert enc.runtime == Runtime("onnx", "fp32")
    ref = Encoder(str(tiny_st_model_dir), device="cpu")
    assert (ref.encode(["hello world"]) * enc.encode(["hello world"])).sum() >= 0.999


def test_embedding_cache_keys_differ_per_backend_and_precision(tiny_st_model_dir):
    pytest.importorskip("onnxruntime")
    from densekit.encoder import Encoder
    from densekit.index.embedding_cache import cache_key

    texts = ["a", "b"]
    keys = {
        cache_key(Encoder(str(tiny_st_model_dir), device="cpu", backend=b, precision=p), texts)
        for b, p in (("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8"))
    }
    assert len(keys) == 3


def test_index_records_runtime_and_mismatch_warns_or_refuses(tiny_st_model_dir, caplog):
    pytest.importorskip("onnxruntime")
    from densekit.encoder import Encoder
    from densekit.index.dense_index import build_from_corpus
    from densekit.index.manifest import EncoderSpec, check_encoder_runtime

    corpus = {"d1": {"title": "", "text": "hello world"}, "d2": {"title": "", "text": "dense vectors"}}
    enc = Encoder(str(tiny_st_model_dir), device="cpu", backend="onnx", precision="int8")
    with build_from_corpus(enc, corpus, progress=False) as idx:
        assert (idx.manifest.encoder.backend, idx.manifest.encoder.precision) == ("onnx", "int8")
    old = EncoderSpec.model_validate({"name": "m", "dim": 32})  # written before runtimes were recorded
    assert (old.backend, old.precision) == ("torch", "fp32")
    check_encoder_runtime(old, "torch", "fp32")
    with caplog.at_level(logging.WARNING):
        check_encoder_runtime(old, "onnx", "int8", drift=0.001)
    assert "index built with torch/fp32, queries encoded with onnx/int8" in caplog.text
    with pytest.raises(IndexMismatchError, match="cosine drift of 0.0500"):
        check_encoder_runtime(old, "onnx", "int8", drift=0.05)
