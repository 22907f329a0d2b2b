"""Prompt templates kept as versioned text files (``NAME.vN.txt`` beside this module, or a user's
own file), filled with ``string.Template`` (``$name`` fields, no attribute access, no code).

A template's identity is its name and the sha256 of its text: it goes into every producer record,
so editing a prompt changes the producer id. Templates are never executed.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass

PROMPTS_DIR = os.path.dirname(os.path.abspath(__file__))
_BUILTIN_RE = re.compile(r"^[a-z0-9_]+\.v[0-9]+$")


@dataclass(frozen=True)
class PromptTemplate:
    name: str  # "caption_clip.v1" for a built-in, the file name for a user's file
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @property
    def fields(self) -> set[str]:
        return {m.group("named") or m.group("braced") for m in string.Template.pattern.finditer(self.text)
                if m.group("named") or m.group("braced")}

    def render(self, **values) -> str:
        """Fill every ``$field``; a missing one is an error, not a silent blank."""
        missing = self.fields - set(values)
        if missing:
            raise ValueError(f"prompt {self.name}: no value for {sorted(missing)}")
        return string.Template(self.text).substitute(**{k: str(v) for k, v in values.items()}).strip()

    def identity(self) -> dict:
        return {"name": self.name, "sha256": self.sha256}


def builtin_prompts() -> list[str]:
    return sorted(f[: -len(".txt")] for f in os.listdir(PROMPTS_DIR) if f.endswith(".txt"))


def load_prompt(name_or_path: str) -> PromptTemplate:
    """A built-in template by name (``caption_clip.v1``) or a user's template file by path."""
    if _BUILTIN_RE.match(name_or_path):
        path = os.path.join(PROMPTS_DIR, name_or_path + ".txt")
        if not os.path.exists(path):
            raise ValueError(f"no built-in prompt {name_or_path!r}; built-in: {builtin_prompts()}")
        name = name_or_path
    else:
        path = os.path.expanduser(name_or_path)
        if not os.path.isfile(path):
            raise ValueError(f"prompt {name_or_path!r} is neither a built-in name ({builtin_prompts()}) nor a file")
        name = os.path.basename(path)
    with open(path, encoding="utf-8") as f:
        return PromptTemplate(name=name, text=f.read())
