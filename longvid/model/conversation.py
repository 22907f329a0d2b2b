"""LLaVA-style conversations → ChatML token ids with the visual block's place and training labels.

Only assistant turns (and their end marker) are supervised. It never tokenises the visual
placeholder: the visual tokens are spliced in as embeddings at ``visual_at``.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE_TOKEN = "<image>"
IGNORE = -100
IM_START, IM_END = "<|im_start|>", "<|im_end|>"


class ConversationError(ValueError):
    pass


@dataclass
class EncodedText:
    ids: list[int]
    labels: list[int]  # the id where supervised, IGNORE elsewhere (not shifted)
    visual_at: int  # the visual block goes before ids[visual_at]


def _pieces(conversations: list[dict], system_prompt: str, add_generation_prompt: bool):
    """Yields (text, supervised) with the single IMAGE_TOKEN as its own piece."""
    if not conversations:
        raise ConversationError("empty conversation")
    yield f"{IM_START}system\n{system_prompt}{IM_END}\n", False
    seen_image = False
    for turn in conversations:
        role, value = turn.get("from"), str(turn.get("value", ""))
        if role == "human":
            yield f"{IM_START}user\n", False
            if not seen_image:
                before, marker, after = value.partition(IMAGE_TOKEN)
                if not marker:  # no placeholder: the video opens the first user turn
                    before, after = "", value
                if before:
                    yield before, False
                yield IMAGE_TOKEN, False
                seen_image = True
                value = after
            yield f"{value.replace(IMAGE_TOKEN, '')}{IM_END}\n", False
        elif role == "gpt":
            yield f"{IM_START}assistant\n", False
            yield f"{value}{IM_END}", True
            yield "\n", False
        else:
            raise ConversationError(f"unknown conversation role {role!r} (human or gpt)")
    if add_generation_prompt:
        yield f"{IM_START}assistant\n", False


def encode_conversation(tokenizer, conversations: list[dict], system_prompt: str,
                        add_generation_prompt: bool = False) -> EncodedText:
    ids: list[int] = []
    labels: list[int] = []
    visual_at = -1
    for text, supervised in _pieces(conversations, system_prompt, add_generation_prompt):
        if text == IMAGE_TOKEN:
            visual_at = len(ids)
            continue
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(piece)
        labels.extend(piece if supervised else [IGNORE] * len(piece))
    return EncodedText(ids=ids, labels=labels, visual_at=visual_at)


def stop_token_ids(tokenizer) -> set[int]:
    stops = {tokenizer.convert_tokens_to_ids(IM_END)}
    if tokenizer.eos_token_id is not None:
        stops.add(tokenizer.eos_token_id)
    return {i for i in stops if i is not None and i >= 0}
