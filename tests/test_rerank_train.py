"""`densekit train reranker` end to end on tiny models: config errors first, then a run
that writes every promised file and a model `load_reranker` reads back."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from cli_support import run_cli

from densekit.backends import cpu_has_bf16


def _beir_with_train(tiny_beir):
    shutil.copy(tiny_beir / "qrels" / "test.tsv", tiny_beir / "qrels" / "train.tsv")
    return tiny_beir


def _config(tmp_path, **kw):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(kw))
    return path


def test_bad_config_fails_before_work_naming_the_field(tmp_path, tiny_beir, capsys):
    cfg = _config(tmp_path, output_dir=str(tmp_path / "out"), data={"beir": str(tiny_beir)}, lora={"rank": 4})
    assert run_cli(["train", "reranker", "--config", str(cfg)]) == 2
    assert "lora.rank" in capsys.readouterr().err
    cfg = _config(tmp_path, kind="cross-encoder", objective="cl", output_dir=str(tmp_path / "out"), data={"beir": str(tiny_beir)})
    assert run_cli(["train", "reranker", "--config", str(cfg)]) == 2
    assert "objective" in capsys.readouterr().err
    cfg = _config(tmp_path, output_dir=str(tmp_path / "out"), data={"beir": str(tmp_path / "missing")})
    assert run_cli(["train", "reranker", "--config", str(cfg)]) == 2
    assert "data.beir" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# bf16 autocast only where the CPU runs it natively; elsewhere it is refused (test below).
@pytest.mark.parametrize("objective,lora,bf16", [("sft", True, False), ("cl", False, cpu_has_bf16())])
def test_llm_reranker_trains_and_reloads(tmp_path, tiny_beir, tiny_llm_dir, tiny_st_model_dir, objective, lora, bf16):
    from densekit.rerankers import load_reranker

    data = _beir_with_train(tiny_beir)
    out = tmp_path / f"rr-{objective}"
    cfg = _config(
        tmp_path,
        kind="llm",
        model=str(tiny_llm_dir),
        objective=objective,
        output_dir=str(out),
        data={"beir": str(data)},
        negatives={"retriever": str(tiny_st_model_dir), "top_k": 4, "hard": 2, "random": 1},
        lora={"enabled": lora, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        train={
            "max_steps": 4,
            "queries_per_batch": 2,
            "learning_rate": 1e-2,
            "max_length": 96,
            "logging_steps": 2,
            "device": "cpu",
            "bf16": bf16,
        },
        eval={"beir": str(data), "split": "test", "top_n": 4, "batch_size": 4},
    )
    assert run_cli(["train", "reranker", "--config", str(cfg), "--no-progress"]) == 0
    for f in (
        "resolved_config.yaml",
        "mined.jsonl",
        "train.log",
        "training_log.jsonl",
        "loss_curve.png",
        "summary.json",
        "eval_before/metrics.json",
        "eval_after/run.trec",
    ):
        assert (out / f).is_file(), f
    mined = [json.loads(line) for line in (out / "mined.jsonl").read_text().splitlines()]
    qrels = {"q1": {"d3"}, "q2": {"d5"}, "q3": {"d2"}}
    for row in mined:  # never a judged positive among the negatives
        assert not set(row["neg_ids"]) & qrels[row["qid"]]
        assert len(row["neg_ids"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == objective and summary["steps"] == 4
    meta = json.loads((out / "model" / "densekit_reranker.json").read_text())
    assert meta["score"] == ("yes_no" if objective == "sft" else "yes_logit")
    assert (out / "model" / ("adapter_config.json" if lora else "config.json")).is_file()
    rr = load_reranker(str(out / "model"), device="cpu")
    assert rr.kind == "llm" and rr.max_length == 96
    scores = rr.score("what is the capital of France", ["Paris is the capital of France.", "Cats are mammals."])
    assert len(scores) == 2
    base = load_reranker(str(tiny_llm_dir), device="cpu", max_length=96)
    assert base.logits("q", ["Paris"]).tolist() != rr.logits("q", ["Paris"]).tolist()  # training changed the model


@pytest.mark.parametrize("head", ["mean", "cls"])
def test_cross_encoder_trains(tmp_path, tiny_beir, tiny_st_model_dir, minilm_path, head):
    from densekit.rerankers import load_reranker

    data = _beir_with_train(tiny_beir)
    out = tmp_path / "ce"
    cfg = _config(
        tmp_path,
        kind="cross-encoder",
        model=str(tiny_st_model_dir.parent / "bert"),  # tiny BERT body, fresh 1-logit head
        output_dir=str(out),
        data={"beir": str(data)},
        negatives={"retriever": str(tiny_st_model_dir), "top_k": 4, "hard": 2, "random": 1},
        train={"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "max_length": 64, "logging_steps": 1, "device": "cpu", "head": head},
        eval={"beir": str(data), "split": "test", "top_n": 4, "before": False},
    )
    assert run_cli(["train", "reranker", "--config", str(cfg), "--no-progress"]) == 0
    assert (out / "loss_curve.png").is_file() and (out / "eval_after" / "metrics.json").is_file()
    rr = load_reranker(str(out / "model"), device="cpu")
    assert rr.kind == "cross-encoder"
    pooled = any(type(m).__name__ == "Pooling" for m in rr.model)
    assert pooled == (head == "mean")
    scores = rr.score("q", ["a", "b", "c"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)  # sigmoid of the one logit


@pytest.mark.skipif(cpu_has_bf16(), reason="this CPU runs bf16 natively")
def test_llm_bf16_on_a_cpu_without_it_is_refused_before_any_work(tmp_path, tiny_beir, tiny_llm_dir, capsys):
    data = _beir_with_train(tiny_beir)
    out = tmp_path / "rr-bf16"
    cfg = _config(
        tmp_path,
        kind="llm",
        model=str(tiny_llm_dir),
        objective="sft",
        output_dir=str(out),
        data={"beir": str(data)},
        negatives={"hard": 0, "random": 1},
        train={"max_steps": 2, "max_length": 96, "device": "cpu", "bf16": True},
    )
    assert run_cli(["train", "reranker", "--config", str(cfg), "--no-progress"]) == 2
    assert "bf16 needs a CPU with avx512_bf16 or AMX" in capsys.readouterr().err
    assert not out.exists()
