"""The yes/no prompt of LLM rerankers, built as token ids so truncation is exact.

The prompt is instruction + query + document, wrapped in the model's chat template when it
has one, and ends with the assistant turn, where the model's next token is "yes" or "no".
When a pair is too long, the document is cut (then, if still needed, the query); the text
after the document (question and assistant turn) is never cut, because the score is read at
the very last position. `max_doc_tokens` caps the document on its own (a trained model's
folder records the cap it was trained with, and inference applies it too). Training and
inference share this code, so a trained model sees exactly the prompt it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

from densekit.errors import ConfigError, ModelLoadError

DEFAULT_INSTRUCTION = "Given a query, judge whether the document is relevant to it."
SYSTEM = 'Judge whether the Document is relevant to the Query, following the Instruct. Answer only "yes" or "no".'
_Q = "\x00QUERY\x00"
_D = "\x00DOCUMENT\x00"
USER_TEMPLATE = f"<Instruct>: {{instruction}}\n<Query>: {_Q}\n<Document>: {_D}\nIs the Document relevant to the Query? Answer yes or no."


@dataclass
class PromptParts:
    """Token ids of the fixed pieces around the query and the document."""

    head: list[int]  # system + instruction + "<Query>: "
    mid: list[int]  # "\n<Document>: "
    tail: list[int]  # question + assistant turn start (never truncated)


class YesNoPrompt:
    def __init__(
        self,
        tokenizer,
        instruction: str = DEFAULT_INSTRUCTION,
        max_length: int = 512,
        max_query_tokens: int = 128,
        use_chat_template: bool = True,
        max_doc_tokens: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.instruction = instruction
        self.max_length = int(max_length)
        self.max_query_tokens = int(max_query_tokens)
        self.max_doc_tokens = int(max_doc_tokens) if max_doc_tokens else None
        self.parts = self._parts(use_chat_template and bool(getattr(tokenizer, "chat_template", None)))
        fixed = len(self.parts.head) + len(self.parts.mid) + len(self.parts.tail)
        if fixed + 8 > self.max_length:
            raise ConfigError(
                "max_length", f"{self.max_length} leaves no room for query and document (the fixed prompt alone is {fixed} tokens)"
            )
        self.yes_id = self._single_token("yes")
        self.no_id = self._single_token("no")

    def _render(self, use_chat: bool) -> str:
        user = USER_TEMPLATE.format(instruction=self.instruction)
        if use_chat:
            return self.tokenizer.apply_chat_template(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
                tokenize=False,
                add_generation_prompt=True,
            )
        return f"{SYSTEM}\n\n{user}\nAnswer:"

    def _parts(self, use_chat: bool) -> PromptParts:
        text = self._render(use_chat)
        head, rest = text.split(_Q)
        mid, tail = rest.split(_D)
        enc = lambda s: self.tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
        head_ids = enc(head)
        bos = self.tokenizer.bos_token_id
        # Models that expect a BOS get it unless the chat template already starts with one.
        if not use_chat and bos is not None and getattr(self.tokenizer, "add_bos_token", False) and head_ids[:1] != [bos]:
            head_ids = [bos] + head_ids
        return PromptParts(head_ids, enc(mid), enc(tail))

    def _single_token(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ModelLoadError(f"the tokenizer has no token for '{word}'")
        # A word split into several tokens is scored by its first one, what the model emits first.
        return int(ids[0])

    def _doc_room(self, left: int) -> int:
        room = max(0, left)
        return min(room, self.max_doc_tokens) if self.max_doc_tokens else room

    def encode(self, query: str, document: str) -> list[int]:
        """Token ids of one pair, at most max_length long, tail always intact."""
        tok = self.tokenizer
        q = tok(query, add_special_tokens=False)["input_ids"]
        d = tok(document, add_special_tokens=False)["input_ids"]
        p = self.parts
        budget = self.max_length - len(p.head) - len(p.mid) - len(p.tail)
        q = q[: min(self.max_query_tokens, budget)]
        d = d[: self._doc_room(budget - len(q))]
        return p.head + q + p.mid + d + p.tail

    def encode_many(self, query: str, documents: list[str]) -> list[list[int]]:
        prefix, suffixes = self.split_many(query, documents)
        return [prefix + s for s in suffixes]

    def split_many(self, query: str, documents: list[str]) -> tuple[list[int], list[list[int]]]:
        """`encode_many` as the prefix every prompt of the query shares (system, instruction,
        query) and one suffix per document (document, question, assistant turn), so the
        prefix can go through the model once for all documents."""
        tok = self.tokenizer
        q = tok(query, add_special_tokens=False)["input_ids"]
        docs = tok(list(documents), add_special_tokens=False)["input_ids"] if documents else []
        p = self.parts
        budget = self.max_length - len(p.head) - len(p.mid) - len(p.tail)
        q = q[: min(self.max_query_tokens, budget)]
        room = self._doc_room(budget - len(q))
        return p.head + q, [p.mid + d[:room] + p.tail for d in docs]
