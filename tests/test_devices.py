"""Device, precision and faiss placement choices, with CUDA absent and (mocked) present.

No GPU exists on the CI machine: torch.cuda and faiss's GPU entry points are replaced by
fakes that record what densekit asked of them.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from densekit import devices
from densekit.errors import ConfigError
from densekit.index import gpu


# ---- fakes ---------------------------------------------------------------------------------
@pytest.fixture()
def no_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture()
def fake_cuda(monkeypatch):
    """Two visible CUDA devices; bf16 support switchable through the returned dict."""
    import torch

    caps = {"bf16": True, "count": 2}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: caps["count"])
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: caps["bf16"])
    return caps


class _Vec(list):
    def push_back(self, x):
        self.append(x)


def _fake_faiss(n_gpus: int, fail: Exception | None = None) -> types.ModuleType:
    """A stand-in for a GPU build of faiss that records clone calls."""
    m = types.ModuleType("faiss")
    m.calls = []

    class StandardGpuResources:
        pass

    class GpuClonerOptions:
        useFloat16 = False

    class GpuMultipleClonerOptions(GpuClonerOptions):
        shard = False

    class GpuIndexFlat:
        def __init__(self, where):
            self.where = where

    class IndexHNSWFlat:  # what faiss's cloner returns for a type without a GPU version
        pass

    def _clone(index, where):
        return IndexHNSWFlat() if index == "hnsw" else GpuIndexFlat(where)

    def index_cpu_to_gpu(res, ordinal, index, co=None):
        if fail:
            raise fail
        m.calls.append(("single", ordinal, index, co))
        return _clone(index, ordinal)

    def index_cpu_to_gpu_multiple(vres, vdev, index, co=None):
        if fail:
            raise fail
        m.calls.append(("multiple", list(vdev), index, co))
        return _clone(index, tuple(vdev))

    m.get_num_gpus = lambda: n_gpus
    m.StandardGpuResources = StandardGpuResources
    m.GpuClonerOptions = GpuClonerOptions
    m.GpuMultipleClonerOptions = GpuMultipleClonerOptions
    m.GpuResourcesVector = _Vec
    m.Int32Vector = _Vec
    m.index_cpu_to_gpu = index_cpu_to_gpu
    m.index_cpu_to_gpu_multiple = index_cpu_to_gpu_multiple
    return m


# ---- device -------------------------------------------------------------------------------
def test_auto_device_is_cpu_without_cuda(no_cuda):
    assert devices.resolve_device(None) == "cpu"
    assert devices.resolve_device("auto") == "cpu"
    assert devices.resolve_device("cpu") == "cpu"


def test_explicit_cuda_without_cuda_names_the_setting(no_cuda):
    with pytest.raises(ConfigError) as e:
        devices.resolve_device("cuda")
    assert e.value.field == "device"


def test_auto_device_is_cuda_when_present(fake_cuda):
    assert devices.resolve_device("auto") == "cuda"
    assert devices.resolve_device("cuda:1") == "cuda:1"


def test_cuda_ordinal_past_visible_devices_is_rejected(fake_cuda):
    with pytest.raises(ConfigError, match="2 CUDA device"):
        devices.resolve_device("cuda:2")


@pytest.mark.parametrize("bad", ["gpu0", "cuda:x", "tpu"])
def test_unknown_device_is_rejected(fake_cuda, bad):
    with pytest.raises(ConfigError):
        devices.resolve_device(bad)


# ---- dtype --------------------------------------------------------------------------------
def test_cpu_runs_float32(no_cuda):
    assert devices.resolve_dtype("cpu") == "float32"
    assert devices.resolve_dtype("cpu", "auto", model={"anything": 1}) == "float32"


def test_explicit_dtype_wins_everywhere(fake_cuda):
    assert devices.resolve_dtype("cpu", "bfloat16") == "bfloat16"
    assert devices.resolve_dtype("cuda", "float32") == "float32"


def test_unknown_dtype_names_the_setting():
    with pytest.raises(ConfigError) as e:
        devices.resolve_dtype("cpu", "fp8")
    assert e.value.field == "dtype"


def _config_dir(tmp_path, **cfg):
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def test_cuda_encoder_checkpoint_runs_float16(fake_cuda, tmp_path):
    # MiniLM/BERT checkpoints are float32: float16 keeps more mantissa than bfloat16.
    folder = _config_dir(tmp_path, model_type="bert", torch_dtype="float32")
    assert devices.resolve_dtype("cuda", None, model=folder) == "float16"
    assert devices.resolve_dtype("cuda:1", "auto", model=folder) == "float16"


def test_cuda_unknown_model_gets_bf16_or_fp16(fake_cuda, tmp_path):
    # Nothing readable about the model (hub name, no config): bf16 cannot overflow.
    assert devices.resolve_dtype("cuda", "auto") == "bfloat16"
    assert devices.resolve_dtype("cuda", "auto", model=tmp_path / "not-downloaded") == "bfloat16"
    fake_cuda["bf16"] = False
    assert devices.resolve_dtype("cuda", "auto") == "float16"


def test_cuda_bf16_checkpoint_keeps_bf16_where_supported(fake_cuda, tmp_path):
    folder = _config_dir(tmp_path, model_type="qwen3", dtype="bfloat16")
    assert devices.resolve_dtype("cuda", "auto", model=folder) == "bfloat16"
    fake_cuda["bf16"] = False
    assert devices.resolve_dtype("cuda", "auto", model=folder) == "float16"


def test_fp16_overflow_prone_architecture_avoids_float16(fake_cuda, tmp_path):
    folder = _config_dir(tmp_path, model_type="t5", torch_dtype="float32")
    assert devices.resolve_dtype("cuda", "auto", model=folder) == "bfloat16"
    fake_cuda["bf16"] = False
    assert devices.resolve_dtype("cuda", "auto", model=folder) == "float32"


def test_precision_hints_from_a_loaded_model():
    import torch
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=32, hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    wrapper = torch.nn.Sequential(BertModel(cfg))  # the shape of a SentenceTransformer
    dtype, model_type = devices.model_precision_hints(wrapper)
    assert model_type == "bert"
    assert dtype in (None, "float32")


def test_precision_hints_of_a_sentence_transformer_folder(tmp_path):
    # sentence-transformers folders may keep the transformers config one level down.
    sub = tmp_path / "0_Transformer"
    sub.mkdir()
    (sub / "config.json").write_text(json.dumps({"model_type": "qwen2", "torch_dtype": "bfloat16"}))
    assert devices.model_precision_hints(tmp_path) == ("bfloat16", "qwen2")
    assert devices.model_precision_hints(tmp_path / "missing") == (None, None)


def test_torch_dtype_maps_names():
    import torch

    assert devices.torch_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ConfigError):
        devices.torch_dtype("half")


# ---- faiss placement ----------------------------------------------------------------------
def test_installed_cpu_faiss_stays_on_cpu(no_cuda):
    import faiss

    idx = faiss.IndexFlatIP(4)
    if gpu.faiss_gpu_available():  # pragma: no cover - only on a GPU host
        pytest.skip("this faiss has GPU support")
    assert gpu.resolve_faiss_device("auto", "cpu") == "cpu"
    assert gpu.place_index(idx, "auto", "cpu") is None
    with pytest.raises(ConfigError) as e:
        gpu.resolve_faiss_device("gpu", "cpu")
    assert e.value.field == "faiss_device"


def test_unknown_faiss_device_names_the_setting():
    with pytest.raises(ConfigError) as e:
        gpu.resolve_faiss_device("tpu", "cpu")
    assert e.value.field == "faiss_device"


def test_auto_follows_the_models_device(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", _fake_faiss(1))
    assert gpu.resolve_faiss_device("auto", "cuda") == "gpu"
    assert gpu.resolve_faiss_device("auto", "cpu") == "cpu"  # models on CPU: keep faiss there
    assert gpu.resolve_faiss_device("cpu", "cuda") == "cpu"  # explicit override
    assert gpu.resolve_faiss_device("gpu", "cpu") == "gpu"


def test_cuda_moves_index_to_every_gpu_replicated(monkeypatch):
    fake = _fake_faiss(2)
    monkeypatch.setitem(sys.modules, "faiss", fake)
    placed = gpu.place_index("cpu-index", "auto", "cuda")
    assert placed is not None and placed.gpus == [0, 1] and not placed.sharded
    kind, gpus, index, co = fake.calls[0]
    assert (kind, gpus, index) == ("multiple", [0, 1], "cpu-index")
    assert co.shard is False and co.useFloat16 is False  # exact scores: GPU matches CPU
    assert len(placed.resources) == 2  # held so faiss does not free them under the index
    assert placed.device == "cuda:0,1"


def test_shard_splits_vectors_across_gpus(monkeypatch):
    fake = _fake_faiss(2)
    monkeypatch.setitem(sys.modules, "faiss", fake)
    placed = gpu.index_to_gpu("cpu-index", "cuda", shard=True)
    assert placed.sharded and fake.calls[0][3].shard is True


def test_cuda_n_moves_index_to_that_gpu(monkeypatch):
    fake = _fake_faiss(2)
    monkeypatch.setitem(sys.modules, "faiss", fake)
    placed = gpu.place_index("cpu-index", "gpu", "cuda:1")
    assert placed.gpus == [1] and fake.calls == [("single", 1, "cpu-index", fake.calls[0][3])]
    with pytest.raises(ConfigError):
        gpu.index_to_gpu("cpu-index", "cuda:5")


def test_index_type_without_gpu_version_falls_back_in_auto_only(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", _fake_faiss(1, fail=RuntimeError("not implemented for IndexHNSWFlat")))
    assert gpu.place_index("hnsw", "auto", "cuda") is None
    with pytest.raises(ConfigError, match="IndexHNSWFlat"):
        gpu.place_index("hnsw", "gpu", "cuda")


def test_silent_cpu_clone_is_not_taken_for_a_gpu_index(monkeypatch):
    # faiss clones HNSW for "the GPU" without error but keeps it on the CPU.
    monkeypatch.setitem(sys.modules, "faiss", _fake_faiss(1))
    assert gpu.place_index("hnsw", "auto", "cuda") is None
    with pytest.raises(ConfigError, match="no GPU version"):
        gpu.place_index("hnsw", "gpu", "cuda:0")


def test_gpu_index_detection_on_real_faiss_wrappers():
    import faiss

    flat = faiss.IndexIDMap2(faiss.IndexFlatIP(4))
    assert not gpu.is_gpu_index(flat)
    assert not gpu.is_gpu_index(faiss.IndexHNSWFlat(4, 8))


def test_faiss_build_without_gpu_entry_points_counts_zero(monkeypatch):
    m = types.ModuleType("faiss")
    monkeypatch.setitem(sys.modules, "faiss", m)
    assert gpu.faiss_gpu_count() == 0
    with pytest.raises(ConfigError):
        gpu.index_to_gpu(object(), "cuda")


# ---- DenseIndex searches through the GPU copy -----------------------------------------------
class _SpyIndex:
    """Wraps a faiss index, counting searches and optionally failing them."""

    def __init__(self, inner, fail=False):
        self.inner, self.fail, self.searches = inner, fail, 0

    def search(self, q, k, params=None):
        self.searches += 1
        if self.fail:
            raise RuntimeError("params not supported on GPU")
        return self.inner.search(q, k)


def _small_index():
    from densekit.index.dense_index import DenseIndex
    from densekit.index.manifest import EncoderSpec

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((20, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    corpus = {f"d{i}": {"title": "", "text": f"doc {i}"} for i in range(20)}
    return DenseIndex.build(vecs, corpus, list(corpus), EncoderSpec(name="t", dim=8)), vecs


def test_dense_index_stays_on_cpu_without_gpu(no_cuda):
    idx, vecs = _small_index()
    assert idx.to_device("auto", "cpu") == "cpu"
    assert idx.search_device == "cpu"
    assert idx.search(vecs[:1], 1)[0][0].id == "d0"


def test_dense_index_searches_gpu_copy_and_reclones_after_updates(monkeypatch):
    import faiss

    clones: list[_SpyIndex] = []

    def fake_place(index, faiss_device, device, shard=False):
        spy = _SpyIndex(faiss.clone_index(index))
        clones.append(spy)
        return gpu.GpuIndex(spy, [0])

    monkeypatch.setattr(gpu, "place_index", fake_place)
    idx, vecs = _small_index()
    assert idx.to_device("auto", "cuda") == "cuda:0"
    assert idx.search(vecs[3:4], 1)[0][0].id == "d3"
    assert clones[0].searches == 1

    new = -vecs[3:4]  # a document that is now the best match for -d3
    idx.upsert([{"id": "new", "title": "", "text": "new"}], new)
    assert idx.search(new, 1)[0][0].id == "new"  # the copy was cloned again, so it sees it
    assert len(clones) == 2 and clones[1].searches == 1
    idx.remove(["new"])
    assert idx.search(new, 1)[0][0].id != "new"
    assert len(clones) == 3


def test_dense_index_falls_back_to_cpu_when_gpu_search_fails(monkeypatch):
    import faiss

    monkeypatch.setattr(gpu, "place_index", lambda index, *a, **k: gpu.GpuIndex(_SpyIndex(faiss.clone_index(index), fail=True), [0]))
    idx, vecs = _small_index()
    idx.to_device("gpu", "cuda")
    assert idx.search(vecs[5:6], 1)[0][0].id == "d5"
    assert idx.search_device == "cpu"
