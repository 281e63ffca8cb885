"""The encoder's defaults come from Settings (one place), every stage that builds one honours
DENSEKIT_BATCH_SIZE and DENSEKIT_DTYPE, and distance-scored models are refused clearly."""

from __future__ import annotations

import pytest
import torch

from densekit.encoder import Encoder
from densekit.errors import ModelLoadError
from densekit.settings import DEFAULT_MODEL, Settings


@pytest.fixture()
def built_encoders(monkeypatch) -> list[Encoder]:
    """Every Encoder constructed during the test (the real constructor runs)."""
    built: list[Encoder] = []
    real_init = Encoder.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Encoder, "__init__", recording_init)
    return built


def _dtype(enc: Encoder) -> torch.dtype:
    return next(enc.model.parameters()).dtype


def test_defaults_are_the_settings_defaults(tiny_st_model_dir, monkeypatch):
    monkeypatch.delenv("DENSEKIT_BATCH_SIZE", raising=False)
    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    assert enc.batch_size == Settings.model_fields["batch_size"].default == Settings().batch_size
    assert Settings().model == DEFAULT_MODEL


def test_from_settings_reads_the_environment_and_arguments_win(tiny_st_model_dir, monkeypatch):
    monkeypatch.setenv("DENSEKIT_BATCH_SIZE", "7")
    monkeypatch.setenv("DENSEKIT_DTYPE", "bfloat16")
    monkeypatch.setenv("DENSEKIT_MODEL", str(tiny_st_model_dir))
    enc = Encoder.from_settings(device="cpu")
    assert enc.batch_size == 7 and _dtype(enc) == torch.bfloat16 and enc.name == str(tiny_st_model_dir)
    enc = Encoder.from_settings(Settings(batch_size=3, dtype="float32"), model=str(tiny_st_model_dir), device="cpu", batch_size=5)
    assert enc.batch_size == 5 and _dtype(enc) == torch.float32


def test_training_honours_batch_size_and_dtype_settings(tiny_st_model_dir, tiny_beir, tmp_path, monkeypatch, built_encoders):
    """Both encoders a bi-encoder run builds (mining and evaluation) take DENSEKIT_BATCH_SIZE
    and DENSEKIT_DTYPE; an explicit mining batch size in the config wins."""
    from densekit.data import load_beir
    from densekit.training.biencoder import _evaluate, collect_sources
    from densekit.training.biencoder_config import BiEncoderRunConfig

    monkeypatch.setenv("DENSEKIT_BATCH_SIZE", "5")
    monkeypatch.setenv("DENSEKIT_DTYPE", "bfloat16")
    monkeypatch.setenv("DENSEKIT_NO_EMBED_CACHE", "1")
    raw = {
        "model": str(tiny_st_model_dir),
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "data": {"beir": str(tiny_beir), "beir_split": "test"},
        "mining": {"enabled": True, "rank_start": 0, "rank_end": 4, "num_negatives": 1, "margin": 0.0},
        "eval": {"beir": str(tiny_beir), "split": "test", "top_k": 5},
    }
    cfg = BiEncoderRunConfig.model_validate(raw)
    sources = collect_sources(cfg, {"data.beir": tiny_beir}, str(tiny_st_model_dir), "cpu", tmp_path, False, {})
    assert sources and all(s.pairs for s in sources)
    _evaluate(str(tiny_st_model_dir), load_beir(tiny_beir, "test"), cfg, "cpu", tmp_path / "eval", "before", False)
    assert len(built_encoders) == 2
    assert [e.batch_size for e in built_encoders] == [5, 5]
    assert all(_dtype(e) == torch.bfloat16 for e in built_encoders)

    cfg = BiEncoderRunConfig.model_validate({**raw, "mining": {**raw["mining"], "batch_size": 9}})
    collect_sources(cfg, {"data.beir": tiny_beir}, str(tiny_st_model_dir), "cpu", tmp_path, False, {})
    assert built_encoders[-1].batch_size == 9


def test_distance_scored_models_are_refused_unless_normalised(tiny_st_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st_model_dir), device="cpu")
    model.similarity_fn_name = "euclidean"
    model.save(str(tmp_path / "euclid"))
    with pytest.raises(ModelLoadError, match="euclidean distance.*normalize=True"):
        Encoder(str(tmp_path / "euclid"), device="cpu")
    enc = Encoder(str(tmp_path / "euclid"), device="cpu", normalize=True)
    assert (enc.similarity, enc.normalize) == ("cosine", True)
    model.similarity_fn_name = "manhattan"
    with pytest.raises(ModelLoadError, match="manhattan"):
        Encoder.from_model(model, normalize=True)


def _code_strings(path) -> list[str]:
    """String constants of a module's code (docstrings, which may show examples, left out)."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_the_default_model_is_named_once():
    """Every default of the bi-encoder goes through densekit.settings.DEFAULT_MODEL."""
    from pathlib import Path

    import densekit
    import densekit.eval
    import densekit.index
    import densekit.service
    import densekit.training
    from densekit.models import resolve_encoder_name

    roots = {Path(p) for pkg in (densekit, densekit.eval, densekit.index, densekit.service, densekit.training) for p in pkg.__path__}
    spelled = sorted(
        f"{f.parent.name}/{f.name}"
        for root in roots
        for f in root.rglob("*.py")
        if any(DEFAULT_MODEL.lower() in s.lower() for s in _code_strings(f))
    )
    assert spelled == ["densekit/settings.py"]
    assert resolve_encoder_name(None) == resolve_encoder_name(DEFAULT_MODEL) == resolve_encoder_name("all-MiniLM-L6-v2")
