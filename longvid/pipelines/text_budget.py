"""Token counts of exported conversations, so no record overflows the trainer's context.

The tokenizer is named in config (a hub id, loaded from the local cache only: no hub is
reached) or a local folder; when neither loads, a documented estimate of 4 characters per
token is used, and :attr:`TextBudget.method` says which, for the export summary.
"""

from __future__ import annotations

import math

CHARS_PER_TOKEN = 4  # English text in BPE tokenizers of the Qwen2 family averages ~4 characters a token


class TextBudget:
    def __init__(self, max_tokens: int, tokenizer: str | None, tokenizer_path: str | None):
        if max_tokens <= 0:
            raise ValueError(f"max_text_tokens must be > 0, got {max_tokens}")
        self.max_tokens = max_tokens
        self.method = f"estimate: {CHARS_PER_TOKEN} characters a token"
        self._tokenizer = None
        self.load_errors: list[str] = []
        for source in (tokenizer_path, tokenizer):
            if not source:
                continue
            try:
                from transformers import AutoTokenizer

                self._tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
            except Exception as exc:  # offline miss, a bad folder: fall through to the next source
                self.load_errors.append(f"{source}: {type(exc).__name__}")
                continue
            self.method = f"tokenizer {source}"
            break

    def count(self, text: str) -> int:
        if self._tokenizer is None:
            return math.ceil(len(text) / CHARS_PER_TOKEN)
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def conversation_tokens(self, conversations: list[dict]) -> int:
        return sum(self.count(turn["value"]) for turn in conversations)
