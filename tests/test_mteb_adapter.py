"""MTEB adapter: mteb's own retrieval evaluator, run offline on a local BEIR folder through a
densekit encoder (or densekit's search), agrees with `densekit eval`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

pytest.importorskip("mteb", reason="the mteb extra is not installed")

from densekit.cli.main import app  # noqa: E402

runner = CliRunner()


def _densekit_metrics(data, model, out) -> dict:
    r = runner.invoke(app, ["eval", "--data", str(data), "--model", str(model), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads((out / "metrics.json").read_text())["metrics"]


def test_mteb_on_local_folder_matches_densekit_and_hits_the_cache(tiny_beir, tiny_st_model_dir, tmp_path, monkeypatch):
    from densekit.encoder import Encoder
    from densekit.eval.mteb_adapter import run_mteb_retrieval

    monkeypatch.setenv("DENSEKIT_CACHE_DIR", str(tmp_path / "cache"))
    ours = _densekit_metrics(tiny_beir, tiny_st_model_dir, tmp_path / "dk")
    cached = set((tmp_path / "cache" / "embeddings").glob("*.npy"))
    assert len(cached) == 1
    enc = Encoder(str(tiny_st_model_dir), device="cpu")
    calls = []
    real = enc.encode_documents
    monkeypatch.setattr(enc, "encode_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    scores = run_mteb_retrieval(enc, tiny_beir, "test", progress=False)
    # The corpus came from densekit's embedding cache: no document was encoded again.
    assert calls == [] and set((tmp_path / "cache" / "embeddings").glob("*.npy")) == cached
    for mteb_key, ours_key in (
        ("ndcg_at_10", "ndcg@10"),
        ("recall_at_100", "recall@100"),
        ("map_at_100", "map@100"),
        ("mrr_at_10", "mrr@10"),
    ):
        assert scores[mteb_key] == pytest.approx(ours[ours_key], abs=1e-4), mteb_key
    via_search = run_mteb_retrieval(enc, tiny_beir, "test", use_search=True, progress=False)
    assert via_search["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)
    # mteb's public entry point takes the wrapper like any of its own models.
    import mteb

    from densekit.eval.mteb_adapter import DensekitMTEBEncoder, local_beir_task

    result = mteb.evaluate(
        DensekitMTEBEncoder(enc, progress=False), local_beir_task(tiny_beir, "test"), cache=None, show_progress_bar=False
    )
    assert result.task_results[0].scores["test"][0]["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=1e-4)


def test_mteb_cli_writes_scores(tiny_beir, tiny_st_model_dir, tmp_path):
    r = runner.invoke(app, ["eval", "mteb", "--data", str(tiny_beir), "--model", str(tiny_st_model_dir), "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    saved = json.loads((tmp_path / "m" / "mteb_scores.json").read_text())
    assert saved["dataset"] == "tiny" and 0.0 <= saved["scores"]["ndcg_at_10"] <= 1.0


@pytest.mark.slow
def test_mteb_scifact_agrees_with_densekit_eval(data_dir, minilm_path, tmp_path):
    """The default model on SciFact test: MTEB's nDCG@10 within 0.002 of `densekit eval`.
    Both encode the corpus through densekit's embedding cache (one encoding, ~4 min cold)."""
    from densekit.encoder import Encoder
    from densekit.eval.mteb_adapter import run_mteb_retrieval

    ours = _densekit_metrics(data_dir / "scifact", minilm_path, tmp_path / "dk")
    scores = run_mteb_retrieval(Encoder(minilm_path, device="cpu"), data_dir / "scifact", "test", progress=False)
    assert scores["ndcg_at_10"] == pytest.approx(ours["ndcg@10"], abs=0.002)
    assert scores["ndcg_at_10"] == pytest.approx(0.645, abs=0.01)  # the published MTEB figure
