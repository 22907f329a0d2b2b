"""The text LLM writer: a video's time-stamped clip captions become summaries and question-answer
pairs of five families (event understanding, event counting, event order, temporal grounding,
multi-hop), over a hierarchy that fits the writer's context (``hierarchy.py``: segments, their
summaries, a video summary written from those, QA within segments and across them).

Every QA pair cites the clips it rests on, and is checked against the clip timeline before it is
kept (cited clips exist and were shown; a count equals the cited clips; an order follows their
start times; a span matches theirs; a multi-hop chain runs forward in time through different
segments). Nothing unchecked is stored; rejections keep their reason.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from .captioners.base import producer_id
from . import hierarchy
from .captioners.engine import Engine, Generation, GenerationRequest, ModelConfig, SamplingConfig, make_engine
from .prompts import PromptTemplate, load_prompt

QA_FAMILIES = ("event_understanding", "event_counting", "event_order", "temporal_grounding", "multi_hop")
CLIP_FAMILIES = ("event_understanding", "event_counting", "event_order", "temporal_grounding")  # over clip lines
SEGMENT_FAMILIES = ("event_understanding", "temporal_grounding")  # per segment of a long video
PARTS_FAMILIES = ("event_order", "event_counting", "multi_hop")  # across the segments of a long video
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
    segment_seconds: float = 300.0  # a segment spans at most this (and fewer clips when the context is smaller)
    segment_summary_max_words: int = 100  # asked for each segment summary: they are the video summary's input
    parts_summary_prompt: str = "summary_parts.v1"  # summary written from part summaries (the hierarchy's upper levels)
    digest_clips_per_segment: int = 4  # clips shown per segment in the cross-segment QA prompts (evenly spaced)
    context_tokens: int = 0  # prompt + output budget per request; 0: the engine's max_model_len (else the checkpoint's)


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

    def line(self, i: int) -> str:
        """Clip ``i`` as the writer reads it; the number is the clip's place in the whole video."""
        c = self.clips[i]
        return f"[{i}] {c.start:.1f}-{c.end:.1f}s: {' '.join(c.caption.split())}"

    def render(self, indices=None) -> str:
        return "\n".join(self.line(i) for i in (range(len(self.clips)) if indices is None else indices))


@dataclass
class WrittenVideo:
    key: str
    summary: str | None
    qa: list[dict]  # checked items, each {"task", "question", "answer", "evidence_clip_ids", "scope", ...}
    rejected: list[dict]  # {"task", "reason"}
    num_tokens: int = 0
    segments: list[dict] = field(default_factory=list)  # {"index", "start", "end", "summary"} of a long video
    max_prompt_tokens: int = 0  # the largest request sent (prompt + max_new_tokens stays within the context)
    requests: int = 0


class CheckFailed(ValueError):
    """A QA item that the timeline does not support; the message is the reason."""


def _text(item: dict, name: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value.strip():
        raise CheckFailed(f"'{name}' missing or empty")
    if len(value) > MAX_TEXT:
        raise CheckFailed(f"'{name}' longer than {MAX_TEXT} characters")
    return value.strip()


@dataclass
class CheckScope:
    """What one request showed the model: the clip numbers it could cite (None: all of them) and,
    for a long video, the segment of every clip (multi-hop chains must cross segments)."""

    visible: frozenset[int] | None = None
    segment_of: list[int] | None = None


def _clip_index(value, timeline: VideoTimeline, scope: CheckScope | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckFailed(f"clip reference {value!r} is not a clip number")
    if not 0 <= value < len(timeline.clips):
        raise CheckFailed(f"clip {value} does not exist (the video has {len(timeline.clips)} clips)")
    if scope is not None and scope.visible is not None and value not in scope.visible:
        raise CheckFailed(f"clip {value} was not shown to the writer")
    return value


def _evidence(item: dict, timeline: VideoTimeline, scope: CheckScope | None = None) -> list[int]:
    refs = item.get("evidence")
    if not isinstance(refs, list) or not refs:
        raise CheckFailed("no evidence clips cited")
    return sorted({_clip_index(r, timeline, scope) for r in refs})


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CheckFailed(f"'{name}' is not a number")
    return float(value)


def _events(item: dict, name: str, timeline: VideoTimeline, scope, low: int, high: int) -> tuple[list[int], list[str]]:
    events = item.get(name)
    if not isinstance(events, list) or not low <= len(events) <= high:
        raise CheckFailed(f"'{name}' needs {low} to {high} events")
    refs = [_clip_index(e.get("clip") if isinstance(e, dict) else None, timeline, scope) for e in events]
    return refs, [_text(e, "description") for e in events]


def _check_multi_hop(item: dict, timeline: VideoTimeline, scope: CheckScope | None) -> tuple:
    refs, descriptions = _events(item, "hops", timeline, scope, 2, 3)
    starts = [timeline.clips[r].start for r in refs]
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise CheckFailed("the hops do not run forward in time")
    segment_of = scope.segment_of if scope is not None else None
    segments = [segment_of[r] for r in refs] if segment_of else list(refs)
    if len(set(segments)) != len(segments):
        raise CheckFailed("two hops are in the same segment: not a multi-hop chain")
    clips = timeline.clips
    hops = [{"description": d, "clip_id": clips[r].clip_id, **({"segment": s} if segment_of else {})}
            for d, r, s in zip(descriptions, refs, segments)]
    return sorted(set(refs)), _text(item, "answer"), {"hops": hops}


def check_qa(family: str, item: dict, timeline: VideoTimeline, tolerance: float = 1.0,
             scope: CheckScope | None = None) -> dict:
    """The kept form of one QA item, or :class:`CheckFailed` saying why the timeline refutes it."""
    if not isinstance(item, dict):
        raise CheckFailed("item is not an object")
    question = _text(item, "question")
    clips = timeline.clips
    if family == "event_order":
        refs, descriptions = _events(item, "events", timeline, scope, 2, 6)
        starts = [clips[r].start for r in refs]
        if len(set(starts)) != len(starts):
            raise CheckFailed("two events cite clips that start together: their order is undefined")
        truth = sorted(range(len(refs)), key=lambda i: starts[i])
        if item.get("answer") != truth:
            raise CheckFailed(f"answer {item.get('answer')!r} is not the clips' order {truth}")
        evidence, answer = sorted(set(refs)), truth
        extra = {"events": [{"description": d, "clip_id": clips[r].clip_id} for d, r in zip(descriptions, refs)]}
    elif family == "event_counting":
        evidence = _evidence(item, timeline, scope)
        count = item.get("answer")
        if isinstance(count, bool) or not isinstance(count, int):
            raise CheckFailed("a count answer must be an integer")
        if count != len(evidence):
            raise CheckFailed(f"answer {count} but {len(evidence)} distinct clips cited")
        answer, extra = count, {}
    elif family == "temporal_grounding":
        evidence = _evidence(item, timeline, scope)
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
        evidence = _evidence(item, timeline, scope)
        answer, extra = _text(item, "answer"), {}
    elif family == "multi_hop":
        evidence, answer, extra = _check_multi_hop(item, timeline, scope)
    else:
        raise ValueError(f"unknown QA family {family!r}; known: {QA_FAMILIES}")
    return {"task": family, "question": question, "answer": answer, **extra,
            "evidence_clip_ids": [clips[i].clip_id for i in evidence],
            "evidence_spans": [[clips[i].start, clips[i].end] for i in evidence]}


def qa_schema(family: str, timeline: VideoTimeline, max_items: int, max_chars: int = 300,
              visible: list[int] | None = None) -> dict:
    """The JSON schema a family's answer must follow; clip numbers, counts and times are bounded
    by what the request shows (the checks still decide: a schema cannot say which clips are right)."""
    shown = sorted(visible) if visible is not None else list(range(len(timeline.clips)))
    if shown and shown == list(range(shown[0], shown[-1] + 1)):
        clip = {"type": "integer", "minimum": shown[0] if shown else 0, "maximum": shown[-1] if shown else 0}
    else:
        clip = {"type": "integer", "enum": shown or [0]}
    seconds = {"type": "number", "minimum": 0, "maximum": math.ceil(timeline.duration)}
    text = {"type": "string", "minLength": 1, "maxLength": max_chars}
    clips = {"type": "array", "items": clip, "minItems": 1, "maxItems": max(1, len(shown))}

    def events(name: str, low: int, high: int) -> dict:
        return {"type": "array", "minItems": low, "maxItems": high, "items": {
            "type": "object", "properties": {"description": text, "clip": clip},
            "required": ["description", "clip"], "additionalProperties": False}}

    item = {
        "event_understanding": {"question": text, "answer": text, "evidence": clips},
        "event_counting": {"question": text, "answer": {"type": "integer", "minimum": 1, "maximum": max(1, len(shown))},
                           "evidence": clips},
        "temporal_grounding": {"question": text, "evidence": clips, "answer": {
            "type": "object", "properties": {"start": seconds, "end": seconds},
            "required": ["start", "end"], "additionalProperties": False}},
        "event_order": {"question": text, "events": events("events", 2, 4),
                        "answer": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 3}}},
        "multi_hop": {"question": text, "hops": events("hops", 2, 3), "answer": text},
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
        data = json.loads(text[start : end + 1], strict=False)  # raw control characters inside strings are common
    except json.JSONDecodeError as exc:
        raise CheckFailed(f"answer is not valid JSON ({exc.msg})") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise CheckFailed("answer has no 'items' list")
    return items


class VideoWriter:
    """Load once per worker (:meth:`setup`), then :meth:`write` batches of video timelines."""

    name = "writer"
    version = "2"  # of the checks, the hierarchy and the stored QA layout; part of the producer record

    def __init__(self, config: WriterConfig, engine: Engine | None = None):
        """``engine``: an already built engine of the same model to share (benchmarks, tests)."""
        unknown = set(config.families) - set(QA_FAMILIES)
        if unknown:
            raise ValueError(f"unknown QA families {sorted(unknown)}; known: {QA_FAMILIES}")
        if config.on_overlong not in ("fail", "keep"):
            raise ValueError(f"on_overlong must be fail or keep, got {config.on_overlong!r}")
        if config.segment_seconds <= 0 or config.digest_clips_per_segment < 1:
            raise ValueError("segment_seconds must be > 0 and digest_clips_per_segment >= 1")
        if engine is not None and engine.config.model != config.model.model:
            raise ValueError(f"shared engine runs {engine.config.model!r}, not {config.model.model!r}")
        self.config = config
        self.summary_prompt: PromptTemplate = load_prompt(config.summary_prompt)
        self.parts_prompt: PromptTemplate = load_prompt(config.parts_summary_prompt)
        version = config.qa_prompt_version
        self.qa_prompts = {f: load_prompt(f"qa_{f}.{version}") for f in config.families if f in CLIP_FAMILIES}
        self.parts_prompts = {f: load_prompt(f"qa_{f}_parts.{version}") for f in config.families if f in PARTS_FAMILIES}
        self.engine: Engine = engine or make_engine(config.model)
        self._overheads: dict[str, int] = {}

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
            "prompts": {"summary": self.summary_prompt.identity(), "summary_parts": self.parts_prompt.identity(),
                        **{f: p.identity() for f, p in self.qa_prompts.items()},
                        **{f"{f}_parts": p.identity() for f, p in self.parts_prompts.items()}},
            "sampling": {**asdict(c.sampling), "seed": c.model.seed},
            "engine": self.engine.info(),
            "checks": {"grounding_tolerance": c.grounding_tolerance, "structured_output": c.structured_output,
                       "questions_per_family": c.questions_per_family, "max_text_chars": c.max_text_chars,
                       "summary_max_words": c.summary_max_words, "on_overlong": c.on_overlong},
            "hierarchy": {"segment_seconds": c.segment_seconds, "segment_summary_max_words": c.segment_summary_max_words,
                          "digest_clips_per_segment": c.digest_clips_per_segment, "context_tokens": c.context_tokens},
        }

    def producer_id(self) -> str:
        return producer_id(self.producer())

    # -- budgets: what one request may hold, counted with the writer's own tokenizer ------------
    def context(self) -> int:
        return self.config.context_tokens or self.engine.context_length()

    def request_budget(self) -> int:
        """Prompt tokens one request may have (its output gets ``max_new_tokens`` on top)."""
        return self.context() - self.config.sampling.max_new_tokens - hierarchy.PROMPT_MARGIN

    def _overhead(self, name: str, prompts: list[PromptTemplate], field_name: str) -> int:
        """The most tokens any of ``prompts`` takes with its content field empty."""
        if name not in self._overheads:
            c = self.config
            values = {"duration": "99999.9", "max_words": max(c.summary_max_words, c.segment_summary_max_words),
                      "max_questions": c.questions_per_family, field_name: ""}
            self._overheads[name] = max(self.engine.prompt_tokens(GenerationRequest(
                [{"role": "user", "content": p.render(**{k: v for k, v in values.items() if k in p.fields})}]))
                for p in prompts)
        return self._overheads[name]

    def line_budget(self) -> int:
        return self.request_budget() - self._overhead("clips", [self.summary_prompt, *self.qa_prompts.values()],
                                                      "timeline")

    def digest_budget(self) -> int:
        return self.request_budget() - self._overhead("digest", list(self.parts_prompts.values()) or [self.parts_prompt],
                                                      "digest")

    def parts_budget(self) -> int:
        return self.request_budget() - self._overhead("parts", [self.parts_prompt], "parts")

    # -- requests ------------------------------------------------------------------------------
    def _schema(self, family: str, video: VideoTimeline, visible: list[int]) -> dict | None:
        c = self.config
        return qa_schema(family, video, c.questions_per_family, c.max_text_chars, visible) if c.structured_output else None

    def clip_qa_tasks(self, video: VideoTimeline, indices, duration: float, families) -> list:
        """(family, request) over the clip lines ``indices`` (numbered as in the whole video)."""
        visible = list(indices)
        timeline = video.render(visible)
        return [(f, GenerationRequest([{"role": "user", "content": self.qa_prompts[f].render(
                    max_questions=self.config.questions_per_family, duration=f"{duration:.1f}", timeline=timeline)}],
                    json_schema=self._schema(f, video, visible)))
                for f in families if f in self.qa_prompts]

    def parts_qa_request(self, family: str, video: VideoTimeline, digest: str, visible: list[int]) -> GenerationRequest:
        text = self.parts_prompts[family].render(max_questions=self.config.questions_per_family,
                                                 duration=f"{video.duration:.1f}", digest=digest)
        return GenerationRequest([{"role": "user", "content": text}], json_schema=self._schema(family, video, visible))

    # -- the run ---------------------------------------------------------------------------------
    def write(self, videos: list[VideoTimeline]) -> list[WrittenVideo]:
        """Summaries and checked QA per video, round by round of the hierarchy; each round of all
        ``videos`` goes to the engine in one call, and no request exceeds the writer's context."""
        results = {v.key: WrittenVideo(v.key, None, [], []) for v in videos}
        active = []
        for v in videos:
            if v.clips:
                active.append((v.key, hierarchy.video_job(self, v, results[v.key])))
            else:
                results[v.key].rejected.append({"task": "summary", "reason": "no captioned clips"})
        rounds = {}
        for key, job in active:
            try:
                rounds[key] = (job, next(job))
            except StopIteration:
                pass
        while rounds:
            flat = [(key, req) for key, (_, tasks) in rounds.items() for _, req in tasks]
            generations = iter(self._generate(flat, results))
            following = {}
            for key, (job, tasks) in rounds.items():
                try:
                    following[key] = (job, job.send([next(generations) for _ in tasks]))
                except StopIteration:
                    pass
            rounds = following
        return [results[v.key] for v in videos]

    def _generate(self, keyed: list[tuple[str, GenerationRequest]], results: dict) -> list[Generation]:
        """The engine's answers; a request over the budget is not sent and fails with a reason."""
        budget = self.request_budget()
        sizes = [self.engine.prompt_tokens(req) for _, req in keyed]
        send = [i for i, n in enumerate(sizes) if n <= budget]
        out: list[Generation | None] = [None] * len(keyed)
        for i, gen in zip(send, self.engine.generate([keyed[i][1] for i in send], self.config.sampling)):
            out[i] = gen
        for i, ((key, _), n) in enumerate(zip(keyed, sizes)):
            result = results[key]
            result.requests += 1
            result.max_prompt_tokens = max(result.max_prompt_tokens, n if out[i] else 0)
            if out[i] is None:
                out[i] = Generation("", 0, "error", f"prompt of {n} tokens exceeds the writer's budget of {budget}")
        return out

    def accepted(self, task: str, gen: Generation, result: WrittenVideo, where: str | None = None) -> str | None:
        """The generation's text when usable; otherwise the reason goes to ``result.rejected``."""
        prefix = f"{where}: " if where else ""
        result.num_tokens += gen.num_tokens
        if gen.error is not None:
            reason = f"engine error: {gen.error}"
        elif gen.finish_reason == "length" and (task != "summary" or self.config.on_overlong == "fail"):
            reason = f"over-long output: hit max_new_tokens={self.config.sampling.max_new_tokens}"
        elif not gen.text.strip():
            reason = "empty summary" if task == "summary" else "empty answer"
        else:
            return gen.text.strip()
        result.rejected.append({"task": task, "reason": prefix + reason})
        return None

    def check_all(self, family: str, text: str, video: VideoTimeline, result: WrittenVideo,
                  scope: CheckScope | None, where: dict) -> None:
        try:
            items = parse_items(text)
        except CheckFailed as exc:
            result.rejected.append({"task": family, "reason": str(exc)})
            return
        for item in items[: self.config.questions_per_family]:
            try:
                result.qa.append({**check_qa(family, item, video, self.config.grounding_tolerance, scope), **where})
            except CheckFailed as exc:
                result.rejected.append({"task": family, "reason": str(exc)})


def written_rows(written: WrittenVideo, duration: float, producer: str) -> list[dict]:
    """Layer rows (video level, JSON values) of one video's summaries and kept QA pairs. Each
    value has a ``scope`` (``video`` or ``segment``); the row's start/end is that scope's span."""
    base = {"key": written.key, "clip_id": None, "value_type": "json", "producer": producer}
    rows = []
    if written.summary is not None:
        rows.append({**base, "start": 0.0, "end": float(duration),
                     "value": json.dumps({"task": "summary", "scope": "video", "text": written.summary})})
    for s in written.segments:
        if s["summary"] is not None:
            rows.append({**base, "start": float(s["start"]), "end": float(s["end"]), "value": json.dumps(
                {"task": "summary", "scope": "segment", "segment": s["index"], "text": s["summary"]})})
    for qa in written.qa:
        value = {k: v for k, v in qa.items() if k not in ("start", "end")}
        rows.append({**base, "start": float(qa.get("start", 0.0)), "end": float(qa.get("end", duration)),
                     "value": json.dumps(value)})
    return rows
