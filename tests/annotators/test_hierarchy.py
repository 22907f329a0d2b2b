"""The writer's hierarchy for long videos: segments sized by the writer's own tokenizer, segment
summaries, a video summary built from them, QA within and across segments, multi-hop checks.

A 3-hour generated timeline (synthetic caption rows, no video) goes through a tiny random Qwen2
on vLLM's CPU build with ``max_model_len`` 2,048: structure, budgets and checks are asserted,
never words (random weights)."""

from __future__ import annotations

import json
import random

import pytest

from longvid.annotators.captioners import SamplingConfig, make_engine
from longvid.annotators.hierarchy import even_sample, group_by_budget
from longvid.annotators.writers import (CheckFailed, CheckScope, TimelineClip, VideoTimeline, VideoWriter,
                                        WriterConfig, check_qa, written_rows)
from tests.annotators.tiny import cpu_model, tiny_models

WORDS = ("person kitchen fridge vegetables board street cars dog ball park children trees paints wall pasta "
         "salt pot sauce plate").split()


def long_timeline(hours: float, seed: int = 0) -> VideoTimeline:
    """Clips of 6-20 s with 18-word captions: what a caption layer holds for an hours-long video."""
    rng, t, clips = random.Random(seed), 0.0, []
    while t < hours * 3600:
        d = rng.uniform(6, 20)
        clips.append(TimelineClip(f"c{len(clips):05d}", t, t + d, " ".join(rng.choice(WORDS) for _ in range(18))))
        t += d
    return VideoTimeline("0123456789abcdef", t, clips)


def test_groups_fit_the_budget_and_the_span():
    costs, spans = [5, 5, 5, 12, 1, 1], [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 400)]
    assert group_by_budget(costs, spans, 10) == [(0, 2), (2, 3), (3, 4), (4, 6)]  # a 12 alone still forms a group
    assert group_by_budget(costs, spans, 100, max_seconds=25) == [(0, 2), (2, 4), (4, 5), (5, 6)]
    assert group_by_budget([], [], 10) == []
    assert even_sample(10, 14, 8) == [10, 11, 12, 13] and even_sample(0, 100, 4) == [12, 37, 62, 87]


SEGMENTED = VideoTimeline("0123456789abcdef", 40.0, [TimelineClip(f"c{i}", 5.0 * i, 5.0 * i + 5, f"event {i}")
                                                     for i in range(8)])
SCOPE = CheckScope(frozenset({0, 1, 4, 5, 6}), [0, 0, 0, 0, 1, 1, 2, 2])


def test_multi_hop_keeps_forward_chains_across_segments():
    item = {"question": "After event 1, what happens in the last part?", "answer": "event 6",
            "hops": [{"description": "event 1", "clip": 1}, {"description": "event 4", "clip": 4},
                     {"description": "event 6", "clip": 6}]}
    kept = check_qa("multi_hop", item, SEGMENTED, scope=SCOPE)
    assert [h["segment"] for h in kept["hops"]] == [0, 1, 2] and kept["evidence_clip_ids"] == ["c1", "c4", "c6"]


@pytest.mark.parametrize("hops,reason", [
    ([(0, "a"), (1, "b")], "same segment"),
    ([(4, "a"), (1, "b")], "forward in time"),
    ([(1, "a")], "2 to 3 events"),
    ([(1, "a"), (3, "b")], "not shown"),
    ([(1, "a"), (4, "b"), (5, "c"), (6, "d")], "2 to 3 events"),
])
def test_multi_hop_rejects_what_is_not_a_chain(hops, reason):
    item = {"question": "q", "answer": "x", "hops": [{"description": d, "clip": c} for c, d in hops]}
    with pytest.raises(CheckFailed, match=reason):
        check_qa("multi_hop", item, SEGMENTED, scope=SCOPE)


def test_a_clip_not_shown_cannot_be_cited():
    with pytest.raises(CheckFailed, match="clip 2 was not shown"):
        check_qa("event_understanding", {"question": "q", "answer": "a", "evidence": [2]}, SEGMENTED, scope=SCOPE)


@pytest.fixture(scope="module")
def three_hours(tmp_path_factory):
    models = tiny_models(tmp_path_factory)
    model = cpu_model(models["text"], "vllm", in_process=False)
    model.max_model_len = 2048
    engine = make_engine(model)
    config = WriterConfig(model=model, sampling=SamplingConfig(max_new_tokens=192), questions_per_family=3,
                          max_text_chars=16, on_overlong="keep")
    writer = VideoWriter(config, engine=engine)
    writer.setup()
    timeline = long_timeline(3.0)
    short = VideoTimeline("fedcba9876543210", 30.0, timeline.clips[:3])
    written = writer.write([timeline, short])
    yield {"writer": writer, "timeline": timeline, "written": written[0], "short": written[1], "short_timeline": short}
    engine.close()


def test_no_request_exceeds_the_writers_context(three_hours):
    written, writer = three_hours["written"], three_hours["writer"]
    assert 0 < written.max_prompt_tokens and written.max_prompt_tokens + 192 <= 2048
    assert not [r for r in written.rejected if "exceeds" in r["reason"] or "engine error" in r["reason"]]
    assert written.requests > 3 * len(written.segments)  # summary + 2 families per segment, then the upper levels


def test_segments_cover_the_video_in_order_and_stay_short(three_hours):
    written, timeline = three_hours["written"], three_hours["timeline"]
    segments = written.segments
    assert len(segments) >= 36  # 3 h in segments of at most 300 s
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == timeline.clips[-1].end
    for a, b in zip(segments, segments[1:]):
        assert a["end"] == b["start"] or abs(a["end"] - b["start"]) < 1e-9
    assert all(s["end"] - s["start"] <= 300.0 + 20.0 for s in segments)  # the last clip may end past 300 s
    assert sum(1 for s in segments if s["summary"]) >= len(segments) // 2


def test_rows_carry_scope_and_span_and_a_video_summary(three_hours):
    written, timeline = three_hours["written"], three_hours["timeline"]
    rows = written_rows(written, timeline.duration, "p")
    values = [json.loads(r["value"]) for r in rows]
    video = [(r, v) for r, v in zip(rows, values) if v["task"] == "summary" and v["scope"] == "video"]
    segment = [(r, v) for r, v in zip(rows, values) if v["task"] == "summary" and v["scope"] == "segment"]
    assert len(video) == 1 and video[0][0]["start"] == 0.0 and video[0][0]["end"] == timeline.duration
    assert len(segment) == sum(1 for s in written.segments if s["summary"])
    spans = {s["index"]: (s["start"], s["end"]) for s in written.segments}
    assert all((r["start"], r["end"]) == spans[v["segment"]] for r, v in segment)
    assert all(v["scope"] in ("segment", "video") for v in values)


def test_every_kept_item_passes_its_check_again(three_hours):
    written, timeline = three_hours["written"], three_hours["timeline"]
    number = {c.clip_id: i for i, c in enumerate(timeline.clips)}
    segment_of = [next(s["index"] for s in written.segments if s["start"] <= c.start < s["end"] or c is timeline.clips[-1])
                  for c in timeline.clips]
    assert written.qa, "the schema-constrained tiny model keeps some items"
    for qa in written.qa:
        refs = [number[c] for c in qa["evidence_clip_ids"]]
        if qa["scope"] == "segment":
            assert all(segment_of[i] == qa["segment"] for i in refs)  # segment QA cites its own segment
        if qa["task"] == "multi_hop":
            assert len({h["segment"] for h in qa["hops"]}) == len(qa["hops"]) >= 2
            assert len({segment_of[number[h["clip_id"]]] for h in qa["hops"]}) == len(qa["hops"])
        if qa["task"] in ("event_understanding", "event_counting", "temporal_grounding"):
            item = {"question": qa["question"], "answer": qa["answer"], "evidence": refs}
            check_qa(qa["task"], item, timeline)
        assert all(qa["start"] <= s and e <= qa["end"] + 1e-6 for s, e in qa["evidence_spans"])
    families = {r["task"] for r in written.rejected} | {q["task"] for q in written.qa}
    assert {"multi_hop", "event_order", "event_counting"} <= families  # the cross-segment families ran


def test_a_short_video_is_one_prompt_as_before(three_hours):
    short = three_hours["short"]
    assert short.segments == [] and short.summary
    assert all(q["scope"] == "video" for q in short.qa)
    rows = written_rows(short, three_hours["short_timeline"].duration, "p")
    assert all(r["end"] == 30.0 for r in rows)
