"""Conversations for training, built from chosen annotation layer versions.

Shared by the training stream and ``longvid export llava``: the same layers give the same turns.

* a clip sample (a short span of a parent video) gets its caption: ``Describe this video.``;
* a video sample gets its video-level rows: the writer's video summary, its segment summaries
  as one time-stamped description of the parts, then its checked QA pairs (or plain text rows as a
  description); when no layer has video-level rows for it, its clip captions in time order become
  a dense, time-stamped description.

Every video sample's text stays within a token budget (estimated at 4 characters a token, no
tokenizer needed): turns are added in that order while they fit, and a description too long for
it keeps evenly spaced lines, so an hour-long video gets its hierarchy, not every caption.

Every conversation opens with ``<image>`` and the time prompt (SEEDS.md §1) in the first human
turn. Values are read as JSON or text, never executed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .layers import read_layer, split_layer_ref
from .sampling import time_prompt
from .storage import Storage

IMAGE_TOKEN = "<image>"
CLIP_QUESTION = "Describe this video."
DENSE_QUESTION = "Describe the video in detail, with the time of each event."
SUMMARY_QUESTION = "Summarize the video."
PARTS_QUESTION = "Describe the video part by part, with the time of each part."
TEXT_BUDGET_TOKENS = 3072  # text tokens of one video sample: room beside its visual tokens in an 8k-32k context
CHARS_PER_TOKEN = 4  # a tokenizer-free estimate (English BPE averages about 4 characters a token)


def parse_layer_refs(refs: list[str] | tuple[str, ...]) -> list[tuple[str, str]]:
    """``["caption/v1", "writer/v1"]`` → ``[("caption", "v1"), ("writer", "v1")]``."""
    return [split_layer_ref(ref) for ref in refs]


@dataclass
class Annotations:
    """The rows of some layer versions, grouped for lookup by video key and clip id."""

    layers: list[tuple[str, str]] = field(default_factory=list)
    clip_text: dict[tuple[str, str], str] = field(default_factory=dict)  # (key, clip_id) → caption
    clips_of: dict[str, list[tuple[float, float, str, str]]] = field(default_factory=dict)  # key → (start, end, clip_id, text)
    video_items: dict[str, list[dict]] = field(default_factory=dict)  # key → decoded video-level values

    @classmethod
    def load(cls, storage: Storage, refs: list[str] | tuple[str, ...]) -> "Annotations":
        ann = cls(layers=parse_layer_refs(refs))
        for layer, version in ann.layers:
            table = read_layer(storage, layer, version).select(["key", "clip_id", "start", "end", "value", "value_type"])
            for row in table.to_pylist():
                ann.add(row)
        for spans in ann.clips_of.values():
            spans.sort()
        return ann

    def add(self, row: dict) -> None:
        key, value = row["key"], row["value"]
        if value is None:
            return
        if row.get("clip_id"):
            text = value if row.get("value_type") != "json" else _text_of(value)
            if text:  # a later layer's caption of the same clip replaces the earlier one everywhere
                spans = self.clips_of.setdefault(key, [])
                if (key, row["clip_id"]) in self.clip_text:
                    spans[:] = [s for s in spans if s[2] != row["clip_id"]]
                spans.append((float(row["start"]), float(row["end"]), row["clip_id"], text))
                self.clip_text[(key, row["clip_id"])] = text
            return
        if row.get("value_type") == "json":
            try:
                item = json.loads(value)
            except ValueError:
                return
            if not isinstance(item, dict):
                return
        else:
            item = {"task": "description", "text": value}
        if item.get("scope") == "segment":
            item["_span"] = (float(row.get("start") or 0.0), float(row.get("end") or 0.0))
        self.video_items.setdefault(key, []).append(item)

    def caption(self, key: str, clip_id: str) -> str | None:
        return self.clip_text.get((key, clip_id))

    def has_video(self, key: str) -> bool:
        return key in self.video_items or key in self.clips_of


def _text_of(value: str) -> str | None:
    try:
        item = json.loads(value)
    except ValueError:
        return None
    return item.get("text") if isinstance(item, dict) else None


def _seconds(x: float) -> str:
    return f"{x:.1f}s"


def item_turn(item: dict) -> tuple[str, str] | None:
    """(question, answer) of one video-level value, or None when it cannot form a turn."""
    task = item.get("task")
    if task == "summary" or task == "description":
        text = item.get("text")
        return (SUMMARY_QUESTION if task == "summary" else DENSE_QUESTION, text) if text else None
    question, answer = item.get("question"), item.get("answer")
    if not question or answer is None:
        return None
    if task == "event_order":
        events = item.get("events") or []
        try:
            listed = "\n".join(f"({i}) {e['description']}" for i, e in enumerate(events))
            ordered = ", then ".join(events[i]["description"] for i in answer)
        except (KeyError, IndexError, TypeError):
            return None
        return f"{question}\n{listed}", f"{ordered}."
    if task == "temporal_grounding" and isinstance(answer, dict):
        try:  # a malformed span is no turn, not a crash of the whole stream or export
            return question, f"From {_seconds(float(answer['start']))} to {_seconds(float(answer['end']))}."
        except (KeyError, TypeError, ValueError):
            return None
    return question, str(answer)


def estimate_tokens(text: str) -> int:
    return len(text) // CHARS_PER_TOKEN + 1


def fit_lines(lines: list[str], budget_tokens: int) -> list[str]:
    """All ``lines`` when they fit ``budget_tokens``, else evenly spaced ones that do (in order)."""
    costs = [estimate_tokens(line) for line in lines]
    if sum(costs) <= budget_tokens or not lines:
        return lines
    keep = max(1, min(len(lines), int(len(lines) * budget_tokens / max(1, sum(costs)))))
    while keep > 1:
        picked = [lines[int((k + 0.5) * len(lines) / keep)] for k in range(keep)]
        if sum(estimate_tokens(p) for p in picked) <= budget_tokens:
            return picked
        keep -= 1
    return [lines[len(lines) // 2]] if costs[len(lines) // 2] <= budget_tokens else []


def _description(question: str, lines: list[str], budget: int) -> tuple[str, str] | None:
    kept = fit_lines(lines, budget - estimate_tokens(question))
    return (question, "\n".join(kept)) if kept else None


def video_turns(ann: Annotations, key: str, budget_tokens: int = TEXT_BUDGET_TOKENS) -> list[tuple[str, str]]:
    """The turns of a whole-video sample within ``budget_tokens``: video summary, the segment
    summaries as one part-by-part description, then QA in stored order; else dense captions."""
    items = ann.video_items.get(key, [])
    segments = sorted((i for i in items if i.get("task") == "summary" and i.get("scope") == "segment"),
                      key=lambda i: i["_span"])
    others = [i for i in items if not (i.get("task") == "summary" and i.get("scope") == "segment")]
    summaries = [i for i in others if i.get("task") == "summary"]
    rest = [i for i in others if i.get("task") != "summary"]
    turns: list[tuple[str, str]] = []
    left = budget_tokens

    def add(turn: tuple[str, str] | None) -> None:
        nonlocal left
        cost = estimate_tokens(turn[0]) + estimate_tokens(turn[1]) if turn else 0
        if turn and cost <= left:
            turns.append(turn)
            left -= cost

    for item in summaries:
        add(item_turn(item))
    if segments:
        lines = [f"[{_seconds(i['_span'][0])}-{_seconds(i['_span'][1])}] {i['text']}" for i in segments if i.get("text")]
        add(_description(PARTS_QUESTION, lines, left))
    for item in rest:
        add(item_turn(item))
    if turns or items:
        return turns
    spans = ann.clips_of.get(key, [])
    lines = [f"[{_seconds(s)}-{_seconds(e)}] {text}" for s, e, _, text in spans]
    turn = _description(DENSE_QUESTION, lines, budget_tokens) if lines else None
    return [turn] if turn else []


def clip_turns(ann: Annotations, key: str, clip_id: str) -> list[tuple[str, str]]:
    text = ann.caption(key, clip_id)
    return [(CLIP_QUESTION, text)] if text else []


def build_conversation(turns: list[tuple[str, str]], duration: float, num_frames: int) -> list[dict]:
    """LLaVA-style turns; the first human turn carries ``<image>`` and the time prompt."""
    conv = []
    for i, (question, answer) in enumerate(turns):
        human = f"{IMAGE_TOKEN}\n{time_prompt(duration, num_frames)}\n{question}" if i == 0 else question
        conv.append({"from": "human", "value": human})
        conv.append({"from": "gpt", "value": answer})
    return conv
