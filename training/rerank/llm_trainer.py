"""Fine-tune a causal LM into a yes/no reranker with the SFT or CL objective (`losses.py`).

Training runs through the transformers `Trainer`, so a run checkpoints, resumes and runs
under torchrun / accelerate (DDP) like the bi-encoder and the cross-encoder. Each optimizer
step takes `queries_per_batch` groups per process (1 positive + N negatives per query,
`llm_data.build_schedule`: in a pooled run every batch from one dataset, optionally packed
by length), builds the exact prompts inference uses (`llm_data.YesNoCollator`:
left-padded, document truncated), reads [z_yes, z_no] at the last position and applies the
loss over the (B, 1 + N, 2) logits. Both objectives see the same groups in the same order
(same seed), so SFT vs CL differ only in the loss. LoRA adapters through peft, or full
fine-tuning for small models. With a dev split (`eval.dev`), `learning_curve.DevCurveCallback`
reranks the dev queries with the model being trained every `eval.every_steps`.

The result is a folder `load_reranker` reads: a peft adapter (or full model), the tokenizer,
and `densekit_reranker.json` (base model, instruction, max_length, objective, how to score),
written by rank 0 only, atomically.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from densekit.atomic import atomic_dir, write_text_atomic
from densekit.rerankers.llm import META_FILE, LLMReranker, resolve_base, yes_no_logits_padded
from densekit.rerankers.prompt import DEFAULT_INSTRUCTION, YesNoPrompt
from densekit.training.ddp import world_size
from densekit.training.rerank.checkpoints import checkpoints_dir
from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.rerank.learning_curve import DevCurveCallback, LearningCurve
from densekit.training.rerank.llm_data import YesNoCollator, build_schedule
from densekit.training.rerank.losses import SERVE_SCORE, GroupSoftmaxCLLoss, YesNoSFTLoss
from densekit.training.rerank.train_data import RerankGroup


def make_loss(cfg: RerankerRunConfig):
    if cfg.objective == "sft":
        return YesNoSFTLoss(cfg.train.sft_reduction)
    return GroupSoftmaxCLLoss(cfg.train.temperature)


class _RunClock(TrainerCallback):
    """Starts the clock of `elapsed_s`, and logs the last step whatever logging_steps is."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


class YesNoRerankTrainer(Trainer):
    """A Trainer whose loss is SFT or CL over the yes/no logits of groups of documents."""

    # compute_loss returns a per-micro-batch mean: the Trainer divides it by grad_accum.
    loss_is_scaled_for_ga = False

    def __init__(
        self, *, loss_fn, group_size: int, yes_id: int, no_id: int, log_fn: Callable[[str], None], callbacks: list | None = None, **kwargs
    ):
        self.clock = _RunClock()
        super().__init__(callbacks=[self.clock, *(callbacks or [])], **kwargs)
        self.loss_fn = loss_fn
        self.group_size = group_size
        self.yes_id = yes_id
        self.no_id = no_id
        self.log_fn = log_fn
        self._elapsed_before: float | None = None  # seconds trained before a resume

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        z = yes_no_logits_padded(model, inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"], self.yes_id, self.no_id)
        z = z.view(-1, self.group_size, 2)
        loss = self.loss_fn(z)
        return (loss, {"logits": z}) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            if self._elapsed_before is None:  # the history a resumed run loaded from its checkpoint
                self._elapsed_before = max((float(r.get("elapsed_s", 0.0)) for r in self.state.log_history), default=0.0)
            logs["elapsed_s"] = round(self._elapsed_before + time.perf_counter() - self.clock.started, 2)
        super().log(logs, start_time)
        if "loss" in logs and self.is_world_process_zero():
            self.log_fn(json.dumps(self.state.log_history[-1]))


def training_arguments(cfg: RerankerRunConfig, device: str, output_dir: Path, progress: bool) -> TrainingArguments:
    tc = cfg.train
    on_cpu = device == "cpu"
    return TrainingArguments(
        output_dir=str(checkpoints_dir(output_dir)),
        max_steps=tc.max_steps,
        per_device_train_batch_size=tc.queries_per_batch,
        gradient_accumulation_steps=tc.grad_accum,
        learning_rate=tc.learning_rate,
        weight_decay=tc.weight_decay,
        lr_scheduler_type="linear",
        warmup_steps=math.ceil(tc.warmup_ratio * tc.max_steps),  # an int: a float < 1 would be read as a ratio
        max_grad_norm=1.0,
        logging_steps=tc.logging_steps,
        eval_strategy="no",
        train_sampling_strategy="sequential",  # the schedule is the order: consecutive draws make a batch
        save_strategy="steps" if tc.save_steps else "no",
        save_steps=tc.save_steps or 500,
        save_total_limit=tc.save_total_limit,
        report_to="none",
        seed=cfg.seed,
        use_cpu=on_cpu,
        bf16=tc.bf16,  # autocast; weights and optimizer stay float32
        ddp_backend=("gloo" if on_cpu else None) if world_size() > 1 else None,
        # Every trainable parameter (all of a causal LM, or its LoRA adapters) is in the graph.
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,  # the collator's tensors are the model's inputs
        dataloader_num_workers=0,
        dataloader_pin_memory=not on_cpu,
        disable_tqdm=not progress,
    )


def _meta(cfg: RerankerRunConfig, instruction: str) -> dict[str, Any]:
    return {
        "kind": "llm",
        "base_model": cfg.base_model(),
        "objective": cfg.objective,
        "score": SERVE_SCORE[cfg.objective or "sft"],
        "instruction": instruction,
        "max_length": cfg.train.max_length,
        "max_doc_tokens": cfg.train.max_doc_tokens,
        "lora": cfg.lora.enabled,
    }


def save_reranker_folder(model, tokenizer, meta: dict[str, Any], model_dir: Path) -> None:
    """Adapter (or full model) + tokenizer + densekit_reranker.json, renamed into place at once."""
    with atomic_dir(model_dir) as tmp:
        model.save_pretrained(tmp)  # peft: adapter_config.json + adapter weights
        tokenizer.save_pretrained(tmp)
        write_text_atomic(tmp / META_FILE, json.dumps(meta, indent=2))


def build_trainer(
    cfg: RerankerRunConfig,
    groups: list[RerankGroup],
    output_dir: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    curve: LearningCurve | None = None,
) -> tuple[YesNoRerankTrainer, Any]:
    """The Trainer of a run (model, LoRA, data, loss) and its tokenizer; checkpoints go to
    `output_dir/checkpoints`; with `curve`, the dev queries are measured as it trains."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from densekit.devices import resolve_device

    device = resolve_device(cfg.train.device)
    if cfg.train.bf16:
        from densekit.backends import check_bf16_device

        check_bf16_device(device.split(":")[0])  # emulated bf16 on a CPU is far slower than fp32
    torch.manual_seed(cfg.seed)  # the same LoRA initialisation in every process and every run of a seed
    src = resolve_base(cfg.base_model())
    tok = AutoTokenizer.from_pretrained(src)
    # Any: peft wraps the model below.
    model: Any = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    instruction = cfg.instruction or DEFAULT_INSTRUCTION
    prompt = YesNoPrompt(tok, instruction=instruction, max_length=cfg.train.max_length, max_doc_tokens=cfg.train.max_doc_tokens)
    pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))
    if cfg.lora.enabled:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                task_type="CAUSAL_LM",
                r=cfg.lora.r,
                lora_alpha=cfg.lora.alpha,
                lora_dropout=cfg.lora.dropout,
                target_modules=list(cfg.lora.target_modules),
            ),
        )
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tc = cfg.train
    num_neg = cfg.negatives.hard + cfg.negatives.random
    draws = tc.max_steps * tc.grad_accum * tc.queries_per_batch * world_size()
    log(
        f"trainable parameters: {n_train:,} ({f'LoRA r={cfg.lora.r}' if cfg.lora.enabled else 'full fine-tuning'}); "
        f"objective {cfg.objective}; {len(groups)} training queries; {world_size()} process(es)"
    )
    pooled = [(src.label(), src.weight) for _, src in cfg.data.sources()] if cfg.data.datasets else []
    schedule = build_schedule(
        groups,
        num_neg,
        cfg.seed,
        draws,
        tc.queries_per_batch,
        datasets=pooled,
        sampling=cfg.data.sampling,
        pack_window=tc.pack_window,
        length_of=lambda item: max(len(ids) for ids in prompt.encode_many(item["query"], item["documents"])),
    )
    callbacks = []
    if curve is not None and cfg.eval.dev is not None:
        callbacks.append(DevCurveCallback(curve, _dev_reranker(cfg, tok, instruction), cfg.eval.dev.at_start, log))
    trainer = YesNoRerankTrainer(
        model=model,
        args=training_arguments(cfg, device, output_dir, progress),
        train_dataset=schedule,
        data_collator=YesNoCollator(prompt, pad_id),
        processing_class=tok,
        loss_fn=make_loss(cfg),
        group_size=1 + num_neg,
        yes_id=prompt.yes_id,
        no_id=prompt.no_id,
        log_fn=log,
        callbacks=callbacks,
    )
    return trainer, tok


def _dev_reranker(cfg: RerankerRunConfig, tok, instruction: str) -> Callable[[Any], LLMReranker]:
    """The model being trained as the reranker its folder will serve (same prompt and score)."""
    made: dict[int, LLMReranker] = {}

    def make(model) -> LLMReranker:
        if id(model) not in made:
            made[id(model)] = LLMReranker(
                model,
                tok,
                name="training",
                instruction=instruction,
                max_length=cfg.train.max_length,
                score_mode=SERVE_SCORE[cfg.objective or "sft"],
                batch_size=cfg.eval.dev.batch_size if cfg.eval.dev else 8,
                max_doc_tokens=cfg.train.max_doc_tokens,
            )
        return made[id(model)]

    return make


def history_of(trainer: Trainer, groups_per_step: int, n_groups: int) -> list[dict]:
    """One dict per logged step: step, loss, learning_rate, epoch (passes over the groups), elapsed_s."""
    return [
        {
            "step": int(r["step"]),
            "loss": float(r["loss"]),
            "learning_rate": float(r["learning_rate"]),
            "epoch": round(r["step"] * groups_per_step / n_groups, 4),
            "elapsed_s": float(r.get("elapsed_s", 0.0)),
        }
        for r in trainer.state.log_history
        if "loss" in r
    ]


def train_llm_reranker(
    cfg: RerankerRunConfig,
    groups: list[RerankGroup],
    model_dir: Path,
    log: Callable[[str], None] = print,
    progress: bool = True,
    resume_from: Path | None = None,
    curve: LearningCurve | None = None,
) -> list[dict]:
    """Train (from scratch, or from the checkpoint `resume_from`) and save to `model_dir`
    on rank 0; returns the log history (one dict per logged step) in every process.
    Checkpoints, when `train.save_steps` is set, go to `model_dir.parent / "checkpoints"`."""
    trainer, tok = build_trainer(cfg, groups, model_dir.parent, log=log, progress=progress, curve=curve)
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    tc = cfg.train
    history = history_of(trainer, tc.queries_per_batch * tc.grad_accum * world_size(), len(groups))
    if trainer.is_world_process_zero():
        save_reranker_folder(trainer.model, tok, _meta(cfg, cfg.instruction or DEFAULT_INSTRUCTION), model_dir)
        log(f"model saved to {model_dir}")
    return history
