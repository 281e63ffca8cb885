"""Bi-encoder training end to end on a slice of real data with a tiny model, and configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from densekit.errors import ConfigError
from densekit.eval.report import HEADLINE
from densekit.training.biencoder_config import BiEncoderRunConfig
from densekit.training.run_config import load_yaml_config


def _slice_scifact(src: Path, dst: Path, n_train: int = 48, n_test: int = 16, n_extra_docs: int = 150) -> Path:
    """A small BEIR folder cut from SciFact: judged docs of a few train/test queries plus
    a fixed sample of other docs."""
    import csv
    import random

    from densekit.data.beir import load_corpus, load_qrels, load_queries

    corpus, queries = load_corpus(src), load_queries(src)
    qrels = {s: load_qrels(src, s) for s in ("train", "test")}
    keep_q = {"train": sorted(qrels["train"])[:n_train], "test": sorted(qrels["test"])[:n_test]}
    docs = {d for s in keep_q for q in keep_q[s] for d in qrels[s][q]}
    docs |= set(random.Random(0).sample(sorted(corpus), n_extra_docs))
    (dst / "qrels").mkdir(parents=True)
    with (dst / "corpus.jsonl").open("w") as fh:
        for d in sorted(docs):
            fh.write(json.dumps({"_id": d, **{k: corpus[d][k] for k in ("title", "text")}}) + "\n")
    with (dst / "queries.jsonl").open("w") as fh:
        for q in sorted({q for s in keep_q for q in keep_q[s]}):
            fh.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    for s, qs in keep_q.items():
        with (dst / "qrels" / f"{s}.tsv").open("w", newline="") as fh:
            w = csv.writer(fh, delimiter="\t")
            w.writerow(["query-id", "corpus-id", "score"])
            for q in qs:
                for d, g in qrels[s][q].items():
                    w.writerow([q, d, g])
    return dst


def _write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _base_config(model: Path, beir: Path, out: Path, **over) -> dict:
    cfg = {
        "model": str(model),
        "output_dir": str(out),
        "seed": 7,
        "device": "cpu",
        "data": {"beir": str(beir), "beir_split": "train", "num_negatives": 1},
        "mining": {"enabled": True, "rank_start": 2, "rank_end": 30, "margin": 0.0, "num_negatives": 2},
        "loss": {"name": "infonce", "temperature": 0.05},
        "train": {"batch_size": 8, "max_steps": 12, "learning_rate": 1e-3, "warmup_ratio": 0.0, "max_seq_length": 48},
        "eval": {"beir": str(beir), "split": "test", "top_k": 100},
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) else v
    return cfg


def _mean_loss(model_dir: Path, rows: dict, loss_name: str) -> float:
    import torch
    from sentence_transformers import SentenceTransformer

    from densekit.training.losses import LOSSES

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.max_seq_length = 48
    model.eval()
    loss = LOSSES[loss_name](model)
    cols = list(rows)
    n = len(rows["anchor"])
    total, batches = 0.0, 0
    with torch.no_grad():
        for s in range(0, n - 7, 8):
            feats = [model.preprocess(rows[c][s : s + 8]) for c in cols]
            total += float(loss(feats, None))
            batches += 1
    return total / batches


@pytest.mark.slow
@pytest.mark.parametrize("loss_name", ["infonce", "mw"])
def test_tiny_model_trains_on_scifact_slice(tmp_path, data_dir, tiny_st_model_dir, loss_name):
    from sentence_transformers import SentenceTransformer

    from densekit.cli.common import resolve_data
    from densekit.training.biencoder import run_biencoder
    from densekit.training.mining import read_mined
    from densekit.training.pairs_data import build_rows, to_dataset  # noqa: F401

    beir = _slice_scifact(data_dir / "scifact", tmp_path / "slice")
    out = tmp_path / f"run-{loss_name}"
    cfg_path = _write_config(
        tmp_path / "run.yaml", _base_config(tiny_st_model_dir, beir, out, loss={"name": loss_name, "temperature": 0.05})
    )
    cfg = load_yaml_config(BiEncoderRunConfig, cfg_path)
    result = run_biencoder(cfg, resolve_data, progress=False)

    for name in (
        "resolved_config.yaml",
        "hard_negatives.jsonl",
        "train_log.jsonl",
        "loss_curve.png",
        "summary.json",
        "eval_before/metrics.json",
        "eval_after/run.trec",
    ):
        assert (out / name).is_file(), name
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    resolved = yaml.safe_load((out / "resolved_config.yaml").read_text())
    assert resolved["loss"]["name"] == loss_name and resolved["train"]["max_steps"] == 12
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["steps"] == 12
    for stage in ("before", "after"):
        assert tuple(summary[stage]) == HEADLINE
    steps = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert sum("loss" in r for r in steps) >= 12

    # Mined negatives are never judged positives of their query and fall in the window.
    from densekit.data.beir import load_qrels

    qrels = load_qrels(beir, "train")
    mined = read_mined(out / "hard_negatives.jsonl")
    assert mined and any(p.neg_ids for p in mined)
    for p in mined:
        assert not set(p.neg_ids) & {d for d, g in qrels[p.qid].items() if g > 0}

    # The loss on the training rows falls from the base model to the trained one.

    rows, _ = build_rows(mined, 1, seed=7)
    before, after = _mean_loss(tiny_st_model_dir, rows, loss_name), _mean_loss(result.model_dir, rows, loss_name)
    assert after < before, (before, after)

    # The saved model reloads and embeds exactly as the in-run model's saved weights say.
    texts = ["a query about cells", "Vitamin D and bone density in older adults."]
    a = SentenceTransformer(str(result.model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    b = SentenceTransformer(str(result.model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    base = SentenceTransformer(str(tiny_st_model_dir), device="cpu").encode(texts, convert_to_numpy=True)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert not np.allclose(a, base, atol=1e-4)  # training changed the weights that were saved


def test_bad_configs_fail_naming_the_field(tmp_path, tiny_beir):
    from densekit.cli.common import resolve_data
    from densekit.training.biencoder_config import check_paths

    good = {"output_dir": str(tmp_path / "o"), "data": {"beir": str(tiny_beir), "beir_split": "test"}}

    def field_of(data: dict, check: bool = False) -> str:
        with pytest.raises(ConfigError) as exc:
            cfg = load_yaml_config(BiEncoderRunConfig, _write_config(tmp_path / "c.yaml", data))
            if check:
                check_paths(cfg, resolve_data)
        return exc.value.field

    assert field_of({**good, "loss": {"name": "triplet"}}) == "loss.name"
    assert field_of({**good, "loss": {"name": "mw", "temperature": -0.1}}) == "loss.temperature"
    assert field_of({**good, "loss": {"name": "mw", "reduction": "max"}}) == "loss.reduction"
    assert field_of({**good, "train": {"learning_rate": 0}}) == "train.learning_rate"
    assert field_of({**good, "train": {"bacth_size": 8}}) == "train.bacth_size"
    assert field_of({"data": good["data"]}) == "output_dir"
    assert field_of({**good, "mining": {"rank_start": 50, "rank_end": 10}}) == "mining.rank_end"
    assert field_of({**good, "mining": {"rank_start": 150}}) == "mining.rank_end"  # past the default end
    assert field_of({**good, "data": {"pairs": [str(tmp_path / "missing.jsonl")]}}, check=True) == "data.pairs.0"
    assert field_of({**good, "data": {"beir": str(tmp_path / "nowhere")}}, check=True) == "data.beir"
    assert field_of({**good, "data": {"beir": str(tiny_beir), "beir_split": "dev"}}, check=True) == "data.beir_split"
    assert field_of({**good, "model": str(tmp_path / "no-model")}, check=True) == "model"
    assert field_of({**good, "interpolate": 1.2}) == "interpolate"
    # A good config passes both stages.
    check_paths(load_yaml_config(BiEncoderRunConfig, _write_config(tmp_path / "c.yaml", good)), resolve_data)


def test_interpolated_run_saves_the_tuned_model_and_the_weighted_one(tmp_path, tiny_beir, tiny_st_model_dir):
    import torch
    from sentence_transformers import SentenceTransformer

    from densekit.cli.common import resolve_data
    from densekit.training.biencoder import run_biencoder

    cfg = {
        "model": str(tiny_st_model_dir),
        "output_dir": str(tmp_path / "run"),
        "device": "cpu",
        "data": {"beir": str(tiny_beir), "beir_split": "test", "num_negatives": 0},
        "train": {"batch_size": 4, "max_steps": 3, "learning_rate": 1e-3, "warmup_ratio": 0.0},
        "interpolate": 0.25,
    }
    result = run_biencoder(load_yaml_config(BiEncoderRunConfig, _write_config(tmp_path / "c.yaml", cfg)), resolve_data, progress=False)
    params = {
        name: dict(SentenceTransformer(str(path), device="cpu").named_parameters())
        for name, path in (("base", tiny_st_model_dir), ("tuned", tmp_path / "run" / "model-tuned"), ("saved", result.model_dir))
    }
    moved = 0
    for key, b in params["base"].items():
        t = params["tuned"][key]
        assert torch.allclose(params["saved"][key], 0.75 * b + 0.25 * t, atol=1e-6), key
        moved += not torch.allclose(b, t)
    assert moved  # training changed the weights, so the check above compares three different models
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["train"]["interpolate"] == 0.25


def test_cli_reports_bad_config_without_training(tmp_path, tiny_beir):
    from typer.testing import CliRunner

    from densekit.cli.main import app

    cfg = _write_config(
        tmp_path / "bad.yaml",
        {"output_dir": str(tmp_path / "o"), "data": {"beir": str(tiny_beir)}, "loss": {"name": "mw", "temperature": 0}},
    )
    res = CliRunner().invoke(app, ["train", "biencoder", "--config", str(cfg)])
    assert res.exit_code != 0
    assert "loss.temperature" in str(res.exception) or "loss.temperature" in res.output
    assert not (tmp_path / "o").exists()


def test_rows_deal_negatives_and_skip_queries_without(tmp_path):
    from densekit.data.pairs import TrainingPair
    from densekit.training.pairs_data import build_rows

    pairs = [
        TrainingPair("q1", ["p1", "p2"], ["n1", "n2", "n3", "n4"]),
        TrainingPair("q2", ["p3"], []),
        TrainingPair("q3", ["p4", "p5"], ["n5"]),
    ]
    cols, stats = build_rows(pairs, 2, seed=0)
    assert list(cols) == ["anchor", "positive", "negative_1", "negative_2"]
    assert cols["anchor"] == ["q1", "q1", "q3", "q3"]
    assert set(cols["negative_1"][:2] + cols["negative_2"][:2]) == {"n1", "n2", "n3", "n4"}
    assert cols["negative_1"][2:] == ["n5", "n5"]
    assert stats.queries_skipped_no_negatives == 1 and stats.rows == 4
    cols0, _ = build_rows(pairs, 0)
    assert list(cols0) == ["anchor", "positive"] and len(cols0["anchor"]) == 5


@pytest.mark.slow
def test_two_process_ddp_run_trains_and_saves_once(tmp_path, data_dir, tiny_st_model_dir):
    """`torchrun --nproc_per_node 2 ... train biencoder` on CPU (gloo) with gathered in-batch
    negatives: both processes train, only rank 0 evaluates and writes the model."""
    import subprocess
    import sys

    from conftest import free_port

    beir = _slice_scifact(data_dir / "scifact", tmp_path / "slice")
    out = tmp_path / "ddp"
    cfg = _base_config(
        tiny_st_model_dir,
        beir,
        out,
        loss={"name": "mw", "temperature": 0.05, "gather_across_devices": True},
        train={"batch_size": 4, "max_steps": 3},
    )
    cfg_path = _write_config(tmp_path / "ddp.yaml", cfg)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port())]
    cmd += ["-m", "densekit.cli.main", "-v", "train", "biencoder", "--config", str(cfg_path), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model" / "config.json").is_file()
    assert proc.stderr.count("model saved to") == 1, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["train"]["world_size"] == 2 and summary["train"]["steps"] == 3
    assert summary["after"] is not None and summary["before"] is not None
