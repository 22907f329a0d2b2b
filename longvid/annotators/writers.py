"""The text LLM writer: a video's time-stamped clip captions become a summary and question-answer
pairs of four families (event understanding, event counting, event order, temporal grounding).

Every QA pair cites the clips it rests on, and is checked against the clip timeline before it is
kept (cited clips exist; a count equals the cited clips; an order follows their start times; a
span matches theirs). Nothing unchecked is stored; rejections keep their reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from .captioners.base import producer_id
from .captioners.engine import Engine, GenerationRequest, ModelConfig, SamplingConfig, make_engine
from .prompts import PromptTemplate, load_prompt

QA_FAMILIES = ("event_understanding", "event_counting", "event_order", "temporal_grounding")
MAX_TEXT = 600  # characters in a question, answer or event description; longer is run-away output


@dataclass
class WriterConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampling: SamplingConfig = field(default_factory=lambda: SamplingConfig(max_new_tokens=768))  # a few QA items in JSON
    summary_prompt: str = "summary.v1"  # template name or file; its hash is in the producer id
    qa_prompt_version: str = "v1"  # built-in QA templates are qa_<family>.<this>
    families: list[str] = field(default_factory=lambda: list(QA_FAMILIES))  # which QA families to write
    questions_per_family: int = 3  # asked of the model; the checks may keep fewer
    summary_max_words: int = 200  # asked of the model for the summary
    grounding_tolerance: float = 1.0  # seconds a temporal-grounding answer may differ from its clips' span
    structured_output: bool = True  # vLLM: constrain QA answers to the JSON schema (transformers: parse only)
    max_text_chars: int = 300  # schema bound on a question, answer or event description (checks reject > 600)
    on_overlong: str = "fail"  # a summary cut off at max_new_tokens: fail (to the ledger) | keep (stored as is)


@dataclass
class TimelineClip:
    clip_id: str
    start: float
    end: float
    caption: str


@dataclass
class VideoTimeline:
    """A video's clip captions in time order: what the writer reads and what the checks use."""

    key: str
    duration: float
    clips: list[TimelineClip]

    def __post_init__(self):
        self.clips = sorted(self.clips, key=lambda c: (c.start, c.end))

    def render(self) -> str:
        return "\n".join(f"[{i}] {c.start:.1f}-{c.end:.1f}s: {' '.join(c.caption.split())}"
                         for i, c in enumerate(self.clips))


@dataclass
class WrittenVideo:
    key: str
    summary: str | None
    qa: list[dict]  # checked items, each {"task", "question", "answer", "evidence_clip_ids", ...}
    rejected: list[dict]  # {"task", "reason"}
    num_tokens: int = 0


class CheckFailed(ValueError):
    """A QA item that the timeline does not support; the message is the reason."""


def _text(item: dict, name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CheckFailed(f"'{name}' missing or empty")
    if len(value) > MAX_TEXT:
        raise CheckFailed(f"'{name}' longer than {MAX_TEXT} characters")
    return value.strip()


def _clip_index(value, timeline: VideoTimeline) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckFailed(f"clip reference {value!r} is not a clip number")
    if not 0 <= value < len(timeline.clips):
        raise CheckFailed(f"clip {value} does not exist (the video has {len(timeline.clips)} clips)")
    return value


def _evidence(item: dict, timeline: VideoTimeline) -> list[int]:
    refs = item.get("evidence")
    if not isinstance(refs, list) or not refs:
        raise CheckFailed("no evidence clips cited")
    return sorted({_clip_index(r, timeline) for r in refs})


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckFailed(f"'{name}' is not a number")
    return float(value)


def check_qa(family: str, item: dict, timeline: VideoTimeline, tolerance: float = 1.0) -> dict:
    """The kept form of one QA item, or :class:`CheckFailed` saying why the timeline refutes it."""
    if not isinstance(item, dict):
        raise CheckFailed("item is not an object")
    question = _text(item, "question")
    clips = timeline.clips
    if family == "event_order":
        events = item.get("events")
        if not isinstance(events, list) or not 2 <= len(events) <= 6:
            raise CheckFailed("an order question needs 2 to 6 events")
        refs = [_clip_index(e.get("clip") if isinstance(e, dict) else None, timeline) for e in events]
        descriptions = [_text(e, "description") for e in events]
        starts = [clips[r].start for r in refs]
        if len(set(starts)) != len(starts):
            raise CheckFailed("two events cite clips that start together: their order is undefined")
        truth = sorted(range(len(events)), key=lambda i: starts[i])
        if item.get("answer") != truth:
            raise CheckFailed(f"answer {item.get('answer')!r} is not the clips' order {truth}")
        evidence, answer = sorted(set(refs)), truth
        extra = {"events": [{"description": d, "clip_id": clips[r].clip_id} for d, r in zip(descriptions, refs)]}
    elif family == "event_counting":
        evidence = _evidence(item, timeline)
        count = item.get("answer")
        if isinstance(count, bool) or not isinstance(count, int):
            raise CheckFailed("a count answer must be an integer")
        if count != len(evidence):
            raise CheckFailed(f"answer {count} but {len(evidence)} distinct clips cited")
        answer, extra = count, {}
    elif family == "temporal_grounding":
        evidence = _evidence(item, timeline)
        if evidence[-1] - evidence[0] + 1 != len(evidence):
            raise CheckFailed("evidence clips are not consecutive: not one span")
        span = item.get("answer")
        if not isinstance(span, dict):
            raise CheckFailed("a grounding answer must be {start, end}")
        start, end = _number(span.get("start"), "start"), _number(span.get("end"), "end")
        lo, hi = clips[evidence[0]].start, clips[evidence[-1]].end
        if not (start < end and abs(start - lo) <= tolerance and abs(end - hi) <= tolerance):
            raise CheckFailed(f"span {start:.1f}-{end:.1f}s does not match the cited clips' {lo:.1f}-{hi:.1f}s")
        answer, extra = {"start": lo, "end": hi}, {}  # stored as the timeline says, not as generated
    elif family == "event_understanding":
        evidence = _evidence(item, timeline)
        answer, extra = _text(item, "answer"), {}
    else:
        raise ValueError(f"unknown QA family {family!r}; known: {QA_FAMILIES}")
    return {"task": family, "question": question, "answer": answer, **extra,
            "evidence_clip_ids": [clips[i].clip_id for i in evidence],
            "evidence_spans": [[clips[i].start, clips[i].end] for i in evidence]}


def qa_schema(family: str, timeline: VideoTimeline, max_items: int, max_chars: int = 300) -> dict:
    """The JSON schema a family's answer must follow; clip numbers, counts and times are bounded
    by the timeline (the checks still decide: a schema cannot say which clips are right)."""
    num_clips = len(timeline.clips)
    clip = {"type": "integer", "minimum": 0, "maximum": max(0, num_clips - 1)}
    seconds = {"type": "number", "minimum": 0, "maximum": math.ceil(timeline.duration)}
    text = {"type": "string", "minLength": 1, "maxLength": max_chars}
    clips = {"type": "array", "items": clip, "minItems": 1, "maxItems": max(1, num_clips)}
    item = {
        "event_understanding": {"question": text, "answer": text, "evidence": clips},
        "event_counting": {"question": text, "answer": {"type": "integer", "minimum": 1, "maximum": max(1, num_clips)},
                           "evidence": clips},
        "temporal_grounding": {"question": text, "evidence": clips, "answer": {
            "type": "object", "properties": {"start": seconds, "end": seconds},
            "required": ["start", "end"], "additionalProperties": False}},
        "event_order": {"question": text, "events": {
            "type": "array", "minItems": 2, "maxItems": 4, "items": {
                "type": "object", "properties": {"description": text, "clip": clip},
                "required": ["description", "clip"], "additionalProperties": False}},
            "answer": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}}},
    }[family]
    return {"type": "object", "required": ["items"], "additionalProperties": False, "properties": {"items": {
        "type": "array", "maxItems": max_items, "items": {
            "type": "object", "properties": item, "required": list(item), "additionalProperties": False}}}}


def parse_items(text: str) -> list:
    """The ``items`` list of a JSON answer (also when wrapped in prose or a code fence)."""
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise CheckFailed("answer is not JSON")
    try:
        data = json.loads(text[start : end + 1])
    except json.JSONDecodeError as exc:
        raise CheckFailed(f"answer is not valid JSON ({exc.msg})") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CheckFailed("answer has no 'items' list")
    return items


class VideoWriter:
    """Load once per worker (:meth:`setup`), then :meth:`write` batches of video timelines."""

    name = "writer"
    version = "1"  # of the checks and the stored QA layout; part of the producer record

    def __init__(self, config: WriterConfig, engine: Engine | None = None):
        """``engine``: an already built engine of the same model to share (benchmarks, tests)."""
        unknown = set(config.families) - set(QA_FAMILIES)
        if unknown:
            raise ValueError(f"unknown QA families {sorted(unknown)}; known: {QA_FAMILIES}")
        if config.on_overlong not in ("fail", "keep"):
            raise ValueError(f"on_overlong must be fail or keep, got {config.on_overlong!r}")
        if engine is not None and engine.config.model != config.model.model:
            raise ValueError(f"shared engine runs {engine.config.model!r}, not {config.model.model!r}")
        self.config = config
        self.summary_prompt: PromptTemplate = load_prompt(config.summary_prompt)
        self.qa_prompts = {f: load_prompt(f"qa_{f}.{config.qa_prompt_version}") for f in config.families}
        self.engine: Engine = engine or make_engine(config.model)

    def setup(self) -> None:
        self.engine.load()

    def close(self) -> None:
        self.engine.close()

    def producer(self) -> dict:
        c = self.config
        return {
            "kind": "writer",
            "writer_version": self.version,
            "model": c.model.model,
            "prompts": {"summary": self.summary_prompt.identity(),
                        **{f: p.identity() for f, p in self.qa_prompts.items()}},
            "sampling": {**asdict(c.sampling), "seed": c.model.seed},
            "engine": self.engine.info(),
            "checks": {"grounding_tolerance": c.grounding_tolerance, "structured_output": c.structured_output,
                       "questions_per_family": c.questions_per_family, "max_text_chars": c.max_text_chars,
                       "summary_max_words": c.summary_max_words, "on_overlong": c.on_overlong},
        }

    def producer_id(self) -> str:
        return producer_id(self.producer())

    def _requests(self, video: VideoTimeline) -> list[tuple[str, GenerationRequest]]:
        c = self.config
        common = {"duration": f"{video.duration:.1f}", "timeline": video.render()}
        text = self.summary_prompt.render(max_words=c.summary_max_words, **common)
        out = [("summary", GenerationRequest([{"role": "user", "content": text}]))]
        for family, prompt in self.qa_prompts.items():
            text = prompt.render(max_questions=c.questions_per_family, **common)
            schema = (qa_schema(family, video, c.questions_per_family, c.max_text_chars)
                      if c.structured_output else None)
            out.append((family, GenerationRequest([{"role": "user", "content": text}], json_schema=schema)))
        return out

    def write(self, videos: list[VideoTimeline]) -> list[WrittenVideo]:
        """Summary and checked QA per video; every model call of the batch goes in one engine call."""
        tasks = [(v, task, req) for v in videos if v.clips for task, req in self._requests(v)]
        generations = self.engine.generate([req for _, _, req in tasks], self.config.sampling)
        results = {v.key: WrittenVideo(v.key, None, [], []) for v in videos}
        for v in videos:
            if not v.clips:
                results[v.key].rejected.append({"task": "summary", "reason": "no captioned clips"})
        for (video, task, _), gen in zip(tasks, generations):
            result = results[video.key]
            result.num_tokens += gen.num_tokens
            if gen.error is not None:
                result.rejected.append({"task": task, "reason": f"engine error: {gen.error}"})
            elif gen.finish_reason == "length" and (task != "summary" or self.config.on_overlong == "fail"):
                result.rejected.append({"task": task, "reason": "over-long output: hit max_new_tokens="
                                        f"{self.config.sampling.max_new_tokens}"})
            elif task == "summary":
                if gen.text.strip():
                    result.summary = gen.text.strip()
                else:
                    result.rejected.append({"task": task, "reason": "empty summary"})
            else:
                self._check_all(task, gen.text, video, result)
        return [results[v.key] for v in videos]

    def _check_all(self, family: str, text: str, video: VideoTimeline, result: WrittenVideo) -> None:
        try:
            items = parse_items(text)
        except CheckFailed as exc:
            result.rejected.append({"task": family, "reason": str(exc)})
            return
        for item in items[: self.config.questions_per_family]:
            try:
                result.qa.append(check_qa(family, item, video, self.config.grounding_tolerance))
            except CheckFailed as exc:
                result.rejected.append({"task": family, "reason": str(exc)})


def written_rows(written: WrittenVideo, duration: float, producer: str) -> list[dict]:
    """Layer rows (video level, JSON values) of one video's summary and kept QA pairs."""
    base = {"key": written.key, "clip_id": None, "start": 0.0, "end": float(duration), "value_type": "json",
            "producer": producer}
    rows = []
    if written.summary is not None:
        rows.append({**base, "value": json.dumps({"task": "summary", "text": written.summary})})
    for qa in written.qa:
        rows.append({**base, "value": json.dumps(qa)})
    return rows
