"""Fine-tune a causal LM into a yes/no reranker with the SFT or CL objective (`losses.py`).

Each step takes `queries_per_batch` groups (1 positive + N negatives per query), builds the
exact prompts inference uses (`prompt.py`: left-padded, document truncated), reads
[z_yes, z_no] at the last position and applies the loss over the (B, 1 + N, 2) logits. Both
objectives see the same groups in the same order (same seed), so SFT vs CL differ only in
the loss. LoRA adapters through peft, or full fine-tuning for small models.

The result is a folder `load_reranker` reads: a peft adapter (or full model), the tokenizer,
and `densekit_reranker.json` (base model, instruction, max_length, objective, how to score).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from densekit.atomic import write_text_atomic
from densekit.rerankers.llm import META_FILE, resolve_base, yes_no_logits
from densekit.rerankers.prompt import DEFAULT_INSTRUCTION, YesNoPrompt
from densekit.training.rerank.config import RerankerRunConfig
from densekit.training.rerank.losses import SERVE_SCORE, GroupSoftmaxCLLoss, YesNoSFTLoss
from densekit.training.rerank.train_data import RerankGroup


def make_loss(cfg: RerankerRunConfig):
    if cfg.objective == "sft":
        return YesNoSFTLoss(cfg.train.sft_reduction)
    return GroupSoftmaxCLLoss(cfg.train.temperature)


def train_llm_reranker(
    cfg: RerankerRunConfig, groups: list[RerankGroup], model_dir: Path, log: Callable[[str], None] = print, progress: bool = True
) -> list[dict]:
    """Train and save to `model_dir`; returns the log history (one dict per logged step)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    from densekit.devices import resolve_device

    torch.manual_seed(cfg.seed)
    device = resolve_device(cfg.train.device)
    if cfg.train.bf16:
        from densekit.backends import check_bf16_device

        check_bf16_device(device.split(":")[0])  # emulated bf16 on a CPU is far slower than fp32
    src = resolve_base(cfg.base_model())
    tok = AutoTokenizer.from_pretrained(src)
    # Any: peft wraps the model below, and transformers' decorators hide .to()'s signature.
    model: Any = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    instruction = cfg.instruction or DEFAULT_INSTRUCTION
    prompt = YesNoPrompt(tok, instruction=instruction, max_length=cfg.train.max_length)
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
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    log(
        f"trainable parameters: {n_train:,} ({f'LoRA r={cfg.lora.r}' if cfg.lora.enabled else 'full fine-tuning'}); objective {cfg.objective}; {len(groups)} training queries"
    )
    opt = torch.optim.AdamW(params, lr=cfg.train.learning_rate, weight_decay=cfg.train.weight_decay)
    steps = cfg.train.max_steps
    sched = get_linear_schedule_with_warmup(opt, math.ceil(cfg.train.warmup_ratio * steps), steps)
    loss_fn = make_loss(cfg)
    num_neg = cfg.negatives.hard + cfg.negatives.random
    rng = random.Random(cfg.seed)
    order: list[int] = []
    epoch_of_step = 0
    history: list[dict] = []
    running: list[float] = []
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, desc=f"train {cfg.objective}")
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for _ in range(cfg.train.grad_accum):
            batch_groups: list[RerankGroup] = []
            while len(batch_groups) < cfg.train.queries_per_batch:
                if not order:
                    order = list(range(len(groups)))
                    rng.shuffle(order)
                    epoch_of_step += 1
                batch_groups.append(groups[order.pop()])
            seqs = []
            for g in batch_groups:
                pos, negs = g.sample(epoch_of_step, num_neg, rng)
                seqs.extend(prompt.encode_many(g.query, [pos] + negs))
            with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=cfg.train.bf16):
                z = yes_no_logits(model, seqs, prompt.yes_id, prompt.no_id, pad_id)
            z = z.float().view(len(batch_groups), 1 + num_neg, 2)
            loss = loss_fn(z) / cfg.train.grad_accum
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        running.append(step_loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}")
        if step % cfg.train.logging_steps == 0 or step == steps:
            rec = {
                "step": step,
                "loss": sum(running) / len(running),
                "learning_rate": sched.get_last_lr()[0],
                "epoch": epoch_of_step,
                "elapsed_s": round(time.perf_counter() - t0, 2),
            }
            history.append(rec)
            running = []
            log(json.dumps(rec))
    if bar is not None:
        bar.close()
    model.eval()
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(model_dir)  # peft: adapter_config.json + adapter weights
    tok.save_pretrained(model_dir)
    meta = {
        "kind": "llm",
        "base_model": cfg.base_model(),
        "objective": cfg.objective,
        "score": SERVE_SCORE[cfg.objective or "sft"],
        "instruction": instruction,
        "max_length": cfg.train.max_length,
        "lora": cfg.lora.enabled,
    }
    write_text_atomic(model_dir / META_FILE, json.dumps(meta, indent=2))
    return history
