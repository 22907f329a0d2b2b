"""The writer's plan for a long video: clip captions → segments that fit the writer's context →
segment summaries → a video summary written from them (recursively, so any length fits any
context) → QA within segments and across them (over digests: part summaries plus a few clips).

Pure logic over a :class:`~longvid.annotators.writers.VideoTimeline`; token counts come from
the writer's own tokenizer. Each video's work is a generator that yields one round of requests
at a time, so the writer can put every video's round into one engine call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Generator

from .captioners.engine import Generation, GenerationRequest

if TYPE_CHECKING:  # the writer imports this module; only its type is needed here
    from .writers import VideoTimeline, VideoWriter, WrittenVideo

LINE_MARGIN = 2  # tokens per line allowed for BPE merges differing at line joins
PROMPT_MARGIN = 16  # tokens kept free in every request on top of max_new_tokens

# one round: (task, request) pairs out, their generations (same order) back in
Round = list[tuple[str, GenerationRequest]]
Job = Generator[Round, list[Generation], None]


@dataclass
class Segment:
    index: int
    lo: int  # first clip number (inclusive)
    hi: int  # last clip number (exclusive)
    start: float
    end: float
    summary: str | None = None


def group_by_budget(costs: list[int], spans: list[tuple[float, float]], budget: int,
                    max_seconds: float = float("inf")) -> list[tuple[int, int]]:
    """Consecutive ``[lo, hi)`` groups whose costs sum to at most ``budget`` and whose span is at
    most ``max_seconds``; an item alone always forms a group (the caller checks it fits)."""
    groups, lo, used = [], 0, 0
    for i, cost in enumerate(costs):
        if i > lo and (used + cost > budget or spans[i][1] - spans[lo][0] > max_seconds):
            groups.append((lo, i))
            lo, used = i, 0
        used += cost
    if costs:
        groups.append((lo, len(costs)))
    return groups


def even_sample(lo: int, hi: int, count: int) -> list[int]:
    """Up to ``count`` indices of ``[lo, hi)`` spread evenly (segment middles)."""
    n = hi - lo
    if n <= count:
        return list(range(lo, hi))
    return sorted({lo + int((k + 0.5) * n / count) for k in range(count)})


def part_line(number: int, start: float, end: float, text: str) -> str:
    return f"Part {number}, {start:.1f}-{end:.1f}s: {' '.join(text.split())}"


def digest_block(video: "VideoTimeline", segment: Segment, shown: list[int]) -> str:
    """One segment in a cross-segment prompt: its summary line, then its sampled clips."""
    head = part_line(segment.index + 1, segment.start, segment.end, segment.summary or "(no summary)")
    return "\n".join([head] + ["  " + video.line(i) for i in shown])


def _user(text: str, schema: dict | None = None) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], json_schema=schema)


def plan_segments(writer: "VideoWriter", video: "VideoTimeline") -> list[Segment]:
    """Consecutive clips, each group's lines fitting the clip-level prompts and at most
    ``segment_seconds`` long."""
    costs = [n + LINE_MARGIN for n in writer.engine.count_tokens([video.line(i) + "\n" for i in range(len(video.clips))])]
    spans = [(c.start, c.end) for c in video.clips]
    groups = group_by_budget(costs, spans, writer.line_budget(), writer.config.segment_seconds)
    return [Segment(k, lo, hi, video.clips[lo].start, max(c.end for c in video.clips[lo:hi]))
            for k, (lo, hi) in enumerate(groups)]


def video_job(writer: "VideoWriter", video: "VideoTimeline", result: "WrittenVideo") -> Job:
    """All of one video's requests, round by round; results land in ``result``."""
    segments = plan_segments(writer, video)
    if len(segments) == 1:  # a short video: one prompt over all its clips, as the families were written for
        yield from _whole_video(writer, video, result)
        return
    yield from _segment_round(writer, video, segments, result)
    segment_of = [0] * len(video.clips)
    for s in segments:
        segment_of[s.lo : s.hi] = [s.index] * (s.hi - s.lo)
    result.segments = [{"index": s.index, "start": s.start, "end": s.end, "summary": s.summary} for s in segments]
    cross = _cross_segment_tasks(writer, video, segments, segment_of)
    items = [(s.start, s.end, s.summary) for s in segments if s.summary]
    yield from _summary_tree(writer, video, items, result, cross)


def _whole_video(writer, video, result) -> Job:
    c = writer.config
    where = {"scope": "video", "start": 0.0, "end": float(video.duration)}
    tasks = [("summary", _user(writer.summary_prompt.render(
        max_words=c.summary_max_words, duration=f"{video.duration:.1f}", timeline=video.render())))]
    tasks += writer.clip_qa_tasks(video, range(len(video.clips)), video.duration, c.families)
    gens = yield tasks
    for (task, _), gen in zip(tasks, gens):
        text = writer.accepted(task, gen, result)
        if text is None:
            continue
        if task == "summary":
            result.summary = text
        else:
            writer.check_all(task, text, video, result, None, where)


def _segment_round(writer, video, segments: list[Segment], result) -> Job:
    from .writers import SEGMENT_FAMILIES, CheckScope

    c = writer.config
    tasks, owners = [], []
    for s in segments:
        indices = range(s.lo, s.hi)
        tasks.append(("summary", _user(writer.summary_prompt.render(
            max_words=c.segment_summary_max_words, duration=f"{s.end - s.start:.1f}", timeline=video.render(indices)))))
        owners.append(s)
        for task in writer.clip_qa_tasks(video, indices, video.duration, [f for f in c.families if f in SEGMENT_FAMILIES]):
            tasks.append(task)
            owners.append(s)
    gens = yield tasks
    for (task, _), gen, s in zip(tasks, gens, owners):
        text = writer.accepted(task, gen, result, where=f"segment {s.index}")
        if text is None:
            continue
        if task == "summary":
            s.summary = text
        else:
            where = {"scope": "segment", "segment": s.index, "start": s.start, "end": s.end}
            writer.check_all(task, text, video, result, CheckScope(frozenset(range(s.lo, s.hi))), where)


def _cross_segment_tasks(writer, video, segments: list[Segment], segment_of: list[int]) -> list:
    """(task, request, scope, where) over windows of consecutive segments that fit one prompt."""
    from .writers import PARTS_FAMILIES, CheckScope

    families = [f for f in writer.config.families if f in PARTS_FAMILIES]
    if not families:
        return []
    shown = [even_sample(s.lo, s.hi, writer.config.digest_clips_per_segment) for s in segments]
    blocks = [digest_block(video, s, idx) for s, idx in zip(segments, shown)]
    costs = [n + LINE_MARGIN * (1 + len(idx)) for n, idx in zip(writer.engine.count_tokens(
        [b + "\n" for b in blocks]), shown)]
    windows = group_by_budget(costs, [(s.start, s.end) for s in segments], writer.digest_budget())
    out = []
    for lo, hi in windows:
        if hi - lo < 2:
            continue  # one segment alone: its own QA covers it
        visible = sorted(i for idx in shown[lo:hi] for i in idx)
        digest = "\n".join(blocks[lo:hi])
        scope = CheckScope(frozenset(visible), segment_of)
        where = {"scope": "video", "start": segments[lo].start, "end": segments[hi - 1].end,
                 "segments": [lo, hi - 1]}
        for family in families:
            out.append((family, writer.parts_qa_request(family, video, digest, visible), scope, where))
    return out


def _summary_tree(writer, video, items: list[tuple[float, float, str]], result, cross: list) -> Job:
    """Part summaries → fewer, longer-span summaries → one video summary; the cross-segment QA
    rides along with the first round."""
    c = writer.config
    first = True
    while True:
        tasks, spans = [], []
        final = False
        if len(items) == 1:
            result.summary = items[0][2]  # only one part has a summary: it is the video's
        elif items:
            lines = [part_line(k + 1, a, b, t) for k, (a, b, t) in enumerate(items)]
            costs = [n + LINE_MARGIN for n in writer.engine.count_tokens([line + "\n" for line in lines])]
            groups = group_by_budget(costs, [(a, b) for a, b, _ in items], writer.parts_budget())
            if len(groups) == len(items) and len(items) > 1:
                result.rejected.append({"task": "summary", "reason": "the writer's context cannot hold two part "
                                        "summaries: raise context_tokens or lower segment_summary_max_words"})
                items = []
            else:
                final = len(groups) == 1
                words = c.summary_max_words if final else c.segment_summary_max_words
                for lo, hi in groups:
                    a, b = items[lo][0], items[hi - 1][1]
                    text = writer.parts_prompt.render(max_words=words, duration=f"{b - a:.1f}",
                                                      parts="\n".join(lines[lo:hi]))
                    tasks.append(("summary", _user(text)))
                    spans.append((a, b))
        extra = cross if first else []
        first = False
        if not tasks and not extra:
            return _note_missing_summary(result)
        gens = yield [(t, r) for t, r in tasks] + [(family, req) for family, req, _, _ in extra]
        new_items = []
        for (task, _), gen, (a, b) in zip(tasks, gens, spans):
            text = writer.accepted(task, gen, result, where="video summary" if final else "part summary")
            if text is not None:
                new_items.append((a, b, text))
        for (family, _, scope, where), gen in zip(extra, gens[len(tasks):]):
            text = writer.accepted(family, gen, result)
            if text is not None:
                writer.check_all(family, text, video, result, scope, where)
        if final and new_items:
            result.summary = new_items[0][2]
        if final or not tasks:
            return _note_missing_summary(result)
        items = new_items


def _note_missing_summary(result) -> None:
    if result.summary is None and not any(r["task"] == "summary" and "video" in r["reason"] for r in result.rejected):
        result.rejected.append({"task": "summary", "reason": "no video summary: no part summary to build it from"})
