"""The LLM reranker's Trainer: the groups it draws, checkpoints and resume, DDP, `--resume`.

A tiny random Llama (`tiny_llm_dir`) keeps each fast test to a few seconds."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import yaml
from cli_support import run_cli
from safetensors.torch import load_file
from transformers import TrainerCallback

from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.rerank.train_data import RerankGroup

GROUPS = [
    RerankGroup(
        query=f"query number {i} about topic {i}",
        pos=[f"relevant text {i}", f"also relevant {i}"],
        neg=[f"other {i}.{j}" for j in range(4)],
    )
    for i in range(5)
]


def _config(tmp_path, tiny_llm_dir, objective="sft", seed=0, lora=True, **train):
    return RerankerRunConfig.model_validate(
        {
            "kind": "llm",
            "model": str(tiny_llm_dir),
            "objective": objective,
            "output_dir": str(tmp_path),
            "seed": seed,
            "data": {"pairs": ["unused.jsonl"]},
            "negatives": {"hard": 2, "random": 0},
            "lora": {"enabled": lora, "r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
            "train": {"queries_per_batch": 2, "learning_rate": 1e-2, "max_length": 96, "logging_steps": 2, "device": "cpu", **train},
        }
    )


def _batches(trainer) -> list[torch.Tensor]:
    return [b["input_ids"] for b in trainer.get_train_dataloader()]


def test_sft_and_cl_see_the_same_groups_in_the_same_order(tmp_path, tiny_llm_dir):
    """The objectives differ only in the loss: the Trainer's batches (token ids) are equal
    for one seed, and a different seed draws other groups, so the comparison can fail."""
    from densekit.training.rerank.llm_trainer import build_trainer

    quiet = lambda m: None  # noqa: E731
    sft, _ = build_trainer(_config(tmp_path, tiny_llm_dir, "sft", max_steps=6), GROUPS, tmp_path / "sft", quiet, False)
    cl, _ = build_trainer(_config(tmp_path, tiny_llm_dir, "cl", max_steps=6), GROUPS, tmp_path / "cl", quiet, False)
    other, _ = build_trainer(_config(tmp_path, tiny_llm_dir, "sft", seed=1, max_steps=6), GROUPS, tmp_path / "o", quiet, False)
    a, b, c = _batches(sft), _batches(cl), _batches(other)
    assert len(a) == 6 and all(x.shape[0] == 2 * 3 for x in a)  # 2 queries x (1 positive + 2 negatives)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_schedule_visits_every_group_once_per_epoch_and_is_read_only_by_index():
    from densekit.training.rerank.llm_data import GroupSchedule

    sched = GroupSchedule(GROUPS, num_negatives=2, seed=3, length=3 * len(GROUPS))
    for epoch in range(3):
        queries = [sched[epoch * len(GROUPS) + k]["query"] for k in range(len(GROUPS))]
        assert sorted(queries) == sorted(g.query for g in GROUPS)
    assert sched[0]["query"] != sched[len(GROUPS)]["query"] or sched[1]["query"] != sched[len(GROUPS) + 1]["query"]
    # Any item, in any order of access, is the same draw (what resuming mid-run relies on).
    late = sched[2 * len(GROUPS) + 1]
    fresh = GroupSchedule(GROUPS, num_negatives=2, seed=3, length=3 * len(GROUPS))
    assert fresh[2 * len(GROUPS) + 1] == late
    item = sched[7]
    assert len(item["documents"]) == 3 and item["documents"][0].startswith(("relevant", "also"))


class _StopAt(TrainerCallback):
    """Ends training after `step`, as a crash would (no save at that step)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True
            control.should_save = False
        return control


@pytest.mark.parametrize("lora", [True, False])
def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny_llm_dir, lora):
    """6 steps with a checkpoint every 2: a run stopped after step 3 and resumed from its
    step-2 checkpoint ends with the same weights and loss history as a run never stopped.
    Both do the same float32 operations in the same order on this CPU (data position,
    optimizer, scheduler and RNG state, so LoRA dropout masks, all come back from the
    checkpoint), so they agree to the last bit; the 1e-6 tolerance only absorbs a BLAS that
    would reorder a sum between two calls, far below the ~1e-3 a lost or repeated step moves them."""
    from densekit.training.rerank.checkpoints import latest_checkpoint
    from densekit.training.rerank.llm_trainer import build_trainer, train_llm_reranker

    quiet = lambda m: None  # noqa: E731
    cfg = _config(tmp_path, tiny_llm_dir, lora=lora, max_steps=6, save_steps=2, save_total_limit=None)
    whole = train_llm_reranker(cfg, GROUPS, tmp_path / "whole" / "model", quiet, False)

    stopped, _ = build_trainer(cfg, GROUPS, tmp_path / "resumed", quiet, False)
    stopped.add_callback(_StopAt(3))
    stopped.train()
    assert stopped.state.global_step == 3
    ckpt = latest_checkpoint(tmp_path / "resumed")
    assert ckpt.name == "checkpoint-2"
    resumed = train_llm_reranker(cfg, GROUPS, tmp_path / "resumed" / "model", quiet, False, resume_from=ckpt)

    assert [r["step"] for r in resumed] == [r["step"] for r in whole] == [2, 4, 6]
    assert set(whole[0]) == {"step", "loss", "learning_rate", "epoch", "elapsed_s"}
    for a, b in zip(whole, resumed, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["learning_rate"] == b["learning_rate"] and a["epoch"] == b["epoch"]
    weights = "adapter_model.safetensors" if lora else "model.safetensors"
    w_whole, w_resumed = load_file(tmp_path / "whole" / "model" / weights), load_file(tmp_path / "resumed" / "model" / weights)
    assert w_whole.keys() == w_resumed.keys()
    for k in w_whole:
        torch.testing.assert_close(w_resumed[k], w_whole[k], rtol=0, atol=1e-6)
    # The run did move the weights, so equal weights are not two untrained copies.
    start = load_file(ckpt / weights)
    assert any(not torch.allclose(start[k], w_whole[k]) for k in w_whole)


def _cli(args, capsys):
    return run_cli(args), capsys.readouterr()


def _pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"query": g.query, "pos": g.pos, "neg": g.neg}) + "\n" for g in GROUPS))
    return path


def _run_yaml(tmp_path, tiny_llm_dir, out, **train):
    cfg = {
        "kind": "llm",
        "model": str(tiny_llm_dir),
        "output_dir": str(out),
        "data": {"pairs": [str(_pairs_file(tmp_path))]},
        "negatives": {"hard": 1, "random": 1},
        "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
        "train": {"max_steps": 4, "queries_per_batch": 2, "max_length": 96, "logging_steps": 2, "device": "cpu", **train},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path, tiny_llm_dir, capsys):
    out = tmp_path / "run"
    cfg = _run_yaml(tmp_path, tiny_llm_dir, out)
    code, res = _cli(["train", "reranker", "--config", str(cfg), "--resume", "--no-progress"], capsys)
    assert code == 2
    assert "--resume" in res.err and "no checkpoint" in res.err
    assert not (out / "model").exists()


def test_cli_run_with_checkpoints_resumes_from_the_latest(tmp_path, tiny_llm_dir, capsys):
    """A finished run with save_steps keeps its checkpoints; `--resume` with more steps
    continues from the last one instead of starting over."""
    out = tmp_path / "run"
    cfg = _run_yaml(tmp_path, tiny_llm_dir, out, save_steps=2)
    code, res = _cli(["train", "reranker", "--config", str(cfg), "--no-progress"], capsys)
    assert code == 0, res.err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    code, res = _cli(["train", "reranker", "--config", str(cfg), "--resume", "--no-progress"], capsys)
    assert code == 0, res.err
    assert "resuming from" in res.out + res.err
    assert f"resuming from {out / 'checkpoints' / 'checkpoint-4'}" in (out / "train.log").read_text()  # unwrapped, unlike the console
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]  # nothing trained twice: the run was already complete


def test_cross_encoder_run_resumes_from_its_checkpoint(tmp_path, tiny_st_model_dir, capsys):
    out = tmp_path / "ce"
    cfg = yaml.safe_load(_run_yaml(tmp_path, tiny_st_model_dir, out).read_text())
    cfg.update(kind="cross-encoder", model=str(tiny_st_model_dir.parent / "bert"), lora={"enabled": False})
    cfg["train"].update(max_steps=3, batch_size=4, save_steps=2, save_total_limit=1)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    code, res = _cli(["train", "reranker", "--config", str(tmp_path / "run.yaml"), "--no-progress"], capsys)
    assert code == 0, res.err
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint-3"]  # save_total_limit: 1
    code, res = _cli(["train", "reranker", "--config", str(tmp_path / "run.yaml"), "--resume", "--no-progress"], capsys)
    assert code == 0, res.err
    assert f"resuming from {out / 'checkpoints' / 'checkpoint-3'}" in (out / "train.log").read_text()
    assert (out / "model" / "config.json").is_file() or (out / "model" / "modules.json").is_file()


@pytest.mark.slow
def test_two_process_ddp_llm_reranker_run_saves_once_and_loads(tmp_path, tiny_llm_dir):
    """`accelerate launch --multi_gpu --num_processes 2 ... train reranker` on CPU (gloo): both processes
    train on their share of each step, only rank 0 writes the model folder, the logs and the
    summary. (The bi-encoder's DDP test launches with torchrun, so both launchers are covered.)"""
    import subprocess

    from conftest import free_port

    from densekit.rerankers import load_reranker

    out = tmp_path / "ddp"
    cfg = _run_yaml(tmp_path, tiny_llm_dir, out, max_steps=3, save_steps=2)
    # --multi_gpu is accelerate's torch.distributed launcher; with no GPU the processes train on
    # the CPU over gloo. (`--cpu --num_processes 2` would need mpirun and starts one process.)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    cmd += ["-m", "densekit.cli.main", "train", "reranker", "--config", str(cfg), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (proc.stdout + proc.stderr).count("model saved to") == 1, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 3
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 3]
    # 2 processes x 2 queries per step over 5 groups: 3 steps are 12 draws, 2.4 epochs.
    assert log[-1]["epoch"] == pytest.approx(2.4)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-3"]
    assert not [p for p in out.iterdir() if p.name.startswith(".model.")]  # no leftover temporary folder
    rr = load_reranker(str(out / "model"), device="cpu")
    scores = rr.score(GROUPS[0].query, GROUPS[0].pos + GROUPS[0].neg[:2])
    assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
