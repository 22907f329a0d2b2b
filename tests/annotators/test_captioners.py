"""Captioners and the LLM writer on real engines: vLLM's CPU build and transformers, each with a
tiny random Idefics3 (SmolVLM architecture) and a tiny random Qwen2 built in the session.

Random weights write junk, so these tests assert structure, counts, keys and versions, never
words. One engine per model and backend is shared by the module (vLLM runs eager, its engine
core in a process of its own so this process's torch threads stay untouched)."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.captioners import (CaptionerConfig, Captioner, ClipFrames, SamplingConfig, clip_frame_indices,
                                           make_engine, prepare_clips, producer_id)
from longvid.annotators.captioners.frames import fit_size
from longvid.annotators.clips import ClipConfig
from longvid.annotators.plan import Plan
from longvid.annotators.probe import probe_file
from longvid.annotators.prompts import builtin_prompts, load_prompt
from longvid.annotators.segment import SegmentConfig, segment_video
from longvid.annotators.writers import (CLIP_FAMILIES, PARTS_FAMILIES, QA_FAMILIES, CheckFailed, TimelineClip, VideoTimeline, VideoWriter,
                                        WriterConfig, check_qa, parse_items, qa_schema, written_rows)
from longvid.synthetic import write_video
from tests.annotators.tiny import cpu_model, tiny_models

BACKENDS = ("vllm", "transformers")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory)


@pytest.fixture(scope="module")
def vlm_engines(models):
    """One loaded captioning engine per backend, shared by every captioner in this module."""
    engines = {b: make_engine(cpu_model(models["vlm"], b, in_process=False), mm_limits={"image": 8}) for b in BACKENDS}
    for engine in engines.values():
        engine.load()
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def text_engines(models):
    engines = {b: make_engine(cpu_model(models["text"], b, in_process=False)) for b in BACKENDS}
    for engine in engines.values():
        engine.load()
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def video_item(tmp_path_factory):
    """A generated video segmented and planned as ingestion does it: the item a caption stage sees."""
    path = str(tmp_path_factory.mktemp("cap") / "v.mp4")
    write_video(path, [40, 60, 50], fps=25, width=96, height=64)
    probe = probe_file(path)
    seg = segment_video(path, probe, "0123456789abcdef", SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0)))
    probe["num_frames"] = seg["num_frames"]
    item = {"video_id": "0123456789abcdef", "probe": probe, "clips": seg["clips"], "shots": seg["shots"]}
    item = Plan().process(item)
    item["media"] = open(path, "rb").read()
    return item


def captioner_config(models, backend: str, **overrides) -> CaptionerConfig:
    base = CaptionerConfig(model=cpu_model(models["vlm"], backend), sampling=SamplingConfig(max_new_tokens=12),
                           on_overlong="keep", longest_edge=64)
    return replace(base, **overrides)


def random_clips(n: int) -> list[ClipFrames]:
    """Clips of different frame counts and sizes, as the CPU stage hands them over."""
    rng = np.random.default_rng(0)
    sizes = [(4, 48, 64), (8, 64, 36), (2, 40, 40)]
    out = []
    for i in range(n):
        t, h, w = sizes[i % len(sizes)]
        frames = rng.integers(0, 255, size=(t, h, w, 3), dtype=np.uint8)
        out.append(ClipFrames("0123456789abcdef", f"clip-{i}", 2.0 * i, 2.0 * i + 2, frames, [0.5 * k for k in range(t)]))
    return out


# -- CPU preparation ------------------------------------------------------------------------------
def test_frame_indices_come_from_the_clip_plan_capped_and_spread(video_item):
    clip = video_item["clips"][-1]
    planned = clip["plan"]["stages"]["stage2"]["frames"]
    assert clip_frame_indices(clip, "stage2", 8) == planned
    capped = clip_frame_indices(clip, "stage2", 2)
    assert len(capped) == 2 and set(capped) <= set(planned) and capped == sorted(capped)
    uniform = clip_frame_indices(clip, "uniform", 3)
    assert len(uniform) == 3 and all(clip["start_frame"] <= i < clip["end_frame"] for i in uniform)
    with pytest.raises(ValueError, match="no 'stage9' plan"):
        clip_frame_indices(clip, "stage9", 4)
    assert fit_size(1920, 1080, 384) == (384, 216) and fit_size(64, 48, 384) == (64, 48)


def test_one_decode_gives_every_clip_its_planned_frames_resized(video_item):
    clips = prepare_clips("0123456789abcdef", video_item["media"], video_item["clips"], 25.0, "stage2", 8, 48)
    assert [c.clip_id for c in clips] == [c["clip_id"] for c in video_item["clips"]]
    for clip, record in zip(clips, video_item["clips"]):
        planned = record["plan"]["stages"]["stage2"]["frames"]
        assert clip.frames.shape == (len(planned), 32, 48, 3) and clip.frames.dtype == np.uint8
        assert clip.frame_times == [round(i / 25.0, 6) for i in planned]
        assert record["start"] <= clip.frame_times[0] and clip.frame_times[-1] < record["end"]


def test_broken_media_fails_with_a_reason(video_item):
    media = video_item["media"]
    with pytest.raises(ItemFailed, match="cannot open media"):
        prepare_clips("0123456789abcdef", media[: len(media) // 3], video_item["clips"], 25.0)
    beyond = dict(video_item["clips"][-1], start_frame=140, end_frame=400, plan={"stages": {}})
    with pytest.raises(ItemFailed, match="video ended before caption frame"):
        prepare_clips("0123456789abcdef", media, [beyond], 25.0, "uniform", 4)


def test_prompt_templates_are_versioned_files_and_strict(tmp_path):
    assert {"caption_clip.v1", "summary.v1"} | {f"qa_{f}.v1" for f in CLIP_FAMILIES} | {f"qa_{f}_parts.v1" for f in PARTS_FAMILIES} <= set(builtin_prompts())
    prompt = load_prompt("caption_clip.v1")
    assert prompt.fields == {"num_frames", "duration", "start", "end"} and len(prompt.sha256) == 64
    with pytest.raises(ValueError, match="no value for"):
        prompt.render(num_frames=4)
    own = tmp_path / "mine.txt"
    own.write_text("Describe $num_frames frames. {not.a.field} ${duration}s")
    mine = load_prompt(str(own))
    assert mine.render(num_frames=4, duration=2) == "Describe 4 frames. {not.a.field} 2s"
    assert mine.sha256 != prompt.sha256
    with pytest.raises(ValueError, match="no built-in prompt"):
        load_prompt("caption_clip.v9")
    with pytest.raises(ValueError, match="neither a built-in"):
        load_prompt(str(tmp_path / "absent.txt"))


# -- captioners on both engines ------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_captioner_gives_one_caption_per_clip_with_producer(models, vlm_engines, backend):
    captioner = Captioner(captioner_config(models, backend), engine=vlm_engines[backend])
    clips = random_clips(5)
    captions = captioner.caption(clips)
    assert [(c.key, c.clip_id, c.start, c.end) for c in captions] == [(c.key, c.clip_id, c.start, c.end) for c in clips]
    assert all(c.ok and isinstance(c.text, str) and c.text for c in captions)
    assert all(1 <= c.num_tokens <= 12 and c.finish_reason in ("stop", "length") for c in captions)
    producer = captioner.producer()
    assert producer["engine"]["name"] == backend and producer["engine"]["version"]
    assert producer["model"] == models["vlm"] and producer["input"]["mode"] == "images"
    assert producer["prompt"] == {"name": "caption_clip.v1", "sha256": load_prompt("caption_clip.v1").sha256}
    assert producer["sampling"]["max_new_tokens"] == 12
    other = Captioner(captioner_config(models, backend, sampling=SamplingConfig(max_new_tokens=13)),
                      engine=vlm_engines[backend])
    assert producer_id(producer) == producer_id(captioner.producer()) != producer_id(other.producer())


@pytest.mark.parametrize("backend", BACKENDS)
def test_over_long_output_is_a_clip_failure_with_a_reason(models, vlm_engines, backend):
    forced = SamplingConfig(max_new_tokens=6, min_new_tokens=6)  # the model cannot stop early
    failing = Captioner(captioner_config(models, backend, sampling=forced, on_overlong="fail"),
                        engine=vlm_engines[backend])
    captions = failing.caption(random_clips(3))
    assert all(not c.ok and c.text is None and c.error.startswith("over-long output") for c in captions)
    keeping = Captioner(captioner_config(models, backend, sampling=forced), engine=vlm_engines[backend])
    kept = keeping.caption(random_clips(3))
    assert all(c.ok and c.finish_reason == "length" and c.num_tokens == 6 for c in kept)


# -- the writer: checks, then both engines ------------------------------------------------------------
TIMELINE = VideoTimeline("0123456789abcdef", 30.0, [
    TimelineClip("c2", 12.0, 20.0, "the man stirs the pot"),
    TimelineClip("c0", 0.0, 6.0, "a man cuts onions"),
    TimelineClip("c1", 6.0, 12.0, "the man cuts carrots"),
    TimelineClip("c3", 20.0, 30.0, "he serves the pasta"),
])


def test_timeline_is_sorted_and_numbered():
    assert [c.clip_id for c in TIMELINE.clips] == ["c0", "c1", "c2", "c3"]
    assert TIMELINE.render().splitlines()[1] == "[1] 6.0-12.0s: the man cuts carrots"


@pytest.mark.parametrize("family,item,expected", [
    ("event_counting", {"question": "How many times does he cut?", "answer": 2, "evidence": [0, 1]}, 2),
    ("event_order", {"question": "Order?", "events": [{"description": "serve", "clip": 3},
                                                       {"description": "cut", "clip": 0}], "answer": [1, 0]}, [1, 0]),
    ("temporal_grounding", {"question": "When is he cutting?", "answer": {"start": 0.4, "end": 12.5},
                            "evidence": [1, 0]}, {"start": 0.0, "end": 12.0}),
    ("event_understanding", {"question": "What is cooked?", "answer": "pasta", "evidence": [3]}, "pasta"),
])
def test_checks_keep_what_the_timeline_supports(family, item, expected):
    kept = check_qa(family, item, TIMELINE, tolerance=1.0)
    assert kept["task"] == family and kept["answer"] == expected
    assert all(cid in {"c0", "c1", "c2", "c3"} for cid in kept["evidence_clip_ids"])


@pytest.mark.parametrize("family,item,reason", [
    ("event_counting", {"question": "q", "answer": 3, "evidence": [0, 1]}, "answer 3 but 2 distinct clips"),
    ("event_counting", {"question": "q", "answer": 2, "evidence": [0, 0]}, "answer 2 but 1 distinct"),
    ("event_counting", {"question": "q", "answer": True, "evidence": [0]}, "must be an integer"),
    ("event_order", {"question": "q", "events": [{"description": "a", "clip": 3}, {"description": "b", "clip": 0}],
                     "answer": [0, 1]}, "is not the clips' order"),
    ("event_order", {"question": "q", "events": [{"description": "a", "clip": 1}], "answer": [0]}, "2 to 6 events"),
    ("temporal_grounding", {"question": "q", "answer": {"start": 0, "end": 30}, "evidence": [0, 1]}, "does not match"),
    ("temporal_grounding", {"question": "q", "answer": {"start": 0, "end": 30}, "evidence": [0, 3]}, "not consecutive"),
    ("event_understanding", {"question": "q", "answer": "x", "evidence": [7]}, "clip 7 does not exist"),
    ("event_understanding", {"question": "", "answer": "x", "evidence": [0]}, "'question' missing"),
    ("event_understanding", {"question": "q", "answer": "x", "evidence": []}, "no evidence"),
])
def test_checks_reject_what_the_timeline_refutes(family, item, reason):
    with pytest.raises(CheckFailed, match=reason):
        check_qa(family, item, TIMELINE)


def test_answers_are_parsed_from_json_or_rejected():
    assert parse_items('Sure! ```json\n{"items": [{"a": 1}]}\n```') == [{"a": 1}]
    for text, reason in [("no json here", "not JSON"), ('{"items": [1, }', "not valid JSON"), ('{"x": 1}', "no 'items'")]:
        with pytest.raises(CheckFailed, match=reason):
            parse_items(text)
    schema = qa_schema("event_counting", TIMELINE, 3)
    counted = schema["properties"]["items"]["items"]["properties"]
    assert counted["evidence"]["items"]["maximum"] == 3 and counted["answer"]["maximum"] == 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_writer_keeps_only_checked_qa_and_says_why_the_rest_went(models, text_engines, backend):
    config = WriterConfig(model=cpu_model(models["text"], backend), sampling=SamplingConfig(max_new_tokens=64),
                          questions_per_family=2, max_text_chars=8, on_overlong="keep")
    writer = VideoWriter(config, engine=text_engines[backend])
    empty = VideoTimeline("fedcba9876543210", 10.0, [])
    results = writer.write([TIMELINE, empty])
    assert [r.key for r in results] == [TIMELINE.key, empty.key]
    full, none = results
    assert isinstance(full.summary, str) and full.summary and full.num_tokens > 0
    assert none.summary is None and none.qa == [] and none.rejected == [{"task": "summary", "reason": "no captioned clips"}]
    for qa in full.qa:  # whatever was kept passes the checks again, on the stored form
        original = {"question": qa["question"], "answer": qa["answer"],
                    "evidence": [[c.clip_id for c in TIMELINE.clips].index(cid) for cid in qa["evidence_clip_ids"]]}
        if qa["task"] == "event_order":
            continue  # stored with clip ids; its check ran on the generated clip numbers
        check_qa(qa["task"], original, TIMELINE)
    assert all(r["task"] in QA_FAMILIES and r["reason"] for r in full.rejected)
    rows = written_rows(full, TIMELINE.duration, writer.producer_id())
    assert len(rows) == 1 + len(full.qa)
    assert [json.loads(r["value"])["task"] for r in rows][0] == "summary"
    assert all(r["clip_id"] is None and r["value_type"] == "json" and r["end"] == 30.0 for r in rows)
    producer = writer.producer()
    assert producer["engine"]["name"] == backend
    assert set(producer["prompts"]) == {"summary", "summary_parts", *CLIP_FAMILIES, *(f"{f}_parts" for f in PARTS_FAMILIES)}
