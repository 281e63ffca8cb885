"""The reranker interface shared by the service, eval and training, and how to tell a model's kind.

A reranker scores (query, document) pairs; higher means more relevant. Two kinds:

- **cross-encoder** (`cross_encoder.py`): a BERT-style sequence classifier reads
  `[CLS] query [SEP] document` and outputs one logit; served as sigmoid(logit).
- **llm** (`llm.py`): a causal LM reads instruction + query + document and answers "yes" or
  "no"; the score is sigmoid(z_yes - z_no) from the next-token logits at the last position.

`loading.load_reranker` picks the kind from the model itself (its config's architecture), so a
user can pass any hub name or local folder, a `.gguf` file, or "smollm2" for the packaged
SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from densekit.errors import ModelLoadError
from densekit.models import SMOLLM2_NAMES

KINDS = ("auto", "cross-encoder", "llm")


@runtime_checkable
class Reranker(Protocol):
    """What every reranker offers. Scores are floats, higher = more relevant.

    `score` keeps the order of `documents`. `count_tokens` gives the length in model tokens
    of each (query, document) pair as the model will see it (after truncation), so a server
    can form batches under a token budget. Both built-in kinds also offer
    `score_pairs([(query, document), ...])` to batch pairs of different queries together.
    """

    name: str
    kind: str
    max_length: int

    def score(self, query: str, documents: list[str], batch_size: int | None = None) -> list[float]: ...

    def count_tokens(self, query: str, documents: list[str]) -> list[int]: ...


def _architectures(config: dict) -> list[str]:
    return [a for a in (config.get("architectures") or []) if isinstance(a, str)]


def kind_from_config(config: dict, where: str) -> str:
    """Causal LM -> 'llm'; sequence classification -> 'cross-encoder'."""
    archs = _architectures(config)
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return "llm"
    if any(a.endswith("ForSequenceClassification") for a in archs):
        return "cross-encoder"
    raise ModelLoadError(
        f"cannot tell the reranker kind of {where}: architectures={archs or 'missing'}; pass kind='llm' or kind='cross-encoder'"
    )


def detect_kind(name_or_path: str) -> str:
    """Which kind of reranker `name_or_path` is, from its files or hub config."""
    if name_or_path.lower() in SMOLLM2_NAMES or name_or_path.lower().endswith(".gguf"):
        return "llm"
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        # A peft adapter folder (LoRA-trained LLM reranker) has no config.json of its own.
        if (p / "adapter_config.json").is_file() and not (p / "config.json").is_file():
            return "llm"
        if (p / "densekit_reranker.json").is_file():
            meta = json.loads((p / "densekit_reranker.json").read_text())
            if meta.get("kind") in ("llm", "cross-encoder"):
                return meta["kind"]
        st_cfg = p / "config_sentence_transformers.json"
        if st_cfg.is_file():
            # sentence-transformers marks its modular cross-encoders (e.g. body + mean pooling
            # + linear head) here; their config.json names only the bare body (BertModel).
            try:
                if json.loads(st_cfg.read_text()).get("model_type") == "CrossEncoder":
                    return "cross-encoder"
            except json.JSONDecodeError as exc:
                raise ModelLoadError(f"{st_cfg}: not valid JSON ({exc})") from None
        cfg = p / "config.json"
        if not cfg.is_file():
            raise ModelLoadError(f"reranker folder {p} has no config.json (nor adapter_config.json)")
        try:
            return kind_from_config(json.loads(cfg.read_text()), str(p))
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"{cfg}: not valid JSON ({exc})") from None
    if p.suffix or name_or_path.startswith((".", "/", "~")):
        raise ModelLoadError(f"reranker not found: {name_or_path}")
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(name_or_path)
    except Exception as exc:  # offline hub / unknown name: say which model failed and why
        raise ModelLoadError(f"cannot load reranker config for '{name_or_path}': {exc}") from None
    return kind_from_config(cfg.to_dict(), name_or_path)
