"""Token counts for batching budgets and usage reports, without touching the model's tokenizer.

Hugging Face fast tokenizers are not safe to call from two threads at once (a call that sets
truncation while another thread encodes fails with "Already borrowed"), and the model thread
tokenises inside every forward pass. So counting uses its own copy of the Rust tokenizer,
one per thread, built from the model tokenizer's serialised form.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class TokenCounter:
    def __init__(self, hf_tokenizer, max_length: int | None):
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        self._spec = backend.to_str() if backend is not None else None
        self._slow = hf_tokenizer if backend is None else None
        self.max_length = int(max_length) if max_length else None
        self._local = threading.local()

    def _tok(self):
        tok = getattr(self._local, "tok", None)
        if tok is None:
            from tokenizers import Tokenizer

            if self._spec is None:
                raise RuntimeError("no fast-tokenizer spec to count with")  # count() estimates instead
            tok = Tokenizer.from_str(self._spec)
            # Counts are of the full text: the caller decides whether past max_length is an
            # error (TEI's truncate=false) or is cut.
            tok.no_truncation()
            tok.no_padding()
            self._local.tok = tok
        return tok

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text including special tokens, before truncation."""
        if not texts:
            return []
        if self._spec is None:  # a slow (Python) tokenizer: count characters/4 as an estimate
            return [estimate_tokens(t) for t in texts]
        return [len(e.ids) for e in self._tok().encode_batch(list(texts), add_special_tokens=True)]

    def truncate(self, texts: Sequence[str], max_tokens: int) -> list[str]:
        """Each text cut after its first `max_tokens` tokens (special tokens not counted), at
        the character where that token ends. Without a fast tokenizer, whitespace-separated
        words stand in for tokens."""
        if self._spec is None:
            return [t if len(t.split()) <= max_tokens else " ".join(t.split()[:max_tokens]) for t in texts]
        out = []
        for text, enc in zip(texts, self._tok().encode_batch(list(texts), add_special_tokens=False)):
            out.append(text if len(enc.ids) <= max_tokens else text[: enc.offsets[max_tokens - 1][1]])
        return out

    def clip(self, counts: Sequence[int]) -> list[int]:
        if self.max_length is None:
            return list(counts)
        return [min(c, self.max_length) for c in counts]


def estimate_tokens(text: str) -> int:
    """About four bytes a token for English wordpiece/BPE vocabularies, plus special tokens."""
    return len(text.encode("utf-8")) // 4 + 2
