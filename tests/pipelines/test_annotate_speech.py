"""The layer-kinds registry end to end on a real local Ray: a dataset ingested from generated
videos, two with a chirp audio track and one without audio; ``--kind speech`` with a tiny random
Whisper built on the spot (default ``num_gpus`` auto: this machine has no GPU, so the model runs
on CPU); then the writer reading a caption layer and that speech layer together.

The caption layer here is written directly from the clip index (text naming each clip's start):
a writer input, not a mock of anything. Models are random: assert structure, spans and counts,
never words."""

from __future__ import annotations

import json
import os

import pytest

from longvid.annotators.clips import ClipConfig
from longvid.annotators.segment import SegmentConfig
from longvid.annotators.speech import SpeechConfig
from longvid.annotators.tiny_models import build_tiny_whisper
from longvid.annotators.writers import WriterConfig
from longvid.annotators.captioners import SamplingConfig
from longvid.pipelines.annotate import AnnotateConfig, AnnotateError, PipelineConfig, run_annotate
from longvid.pipelines.ingest import IngestConfig, RayConfig, ShardConfig, run_ingest
from longvid.pipelines.kinds import KINDS, get_kind, load_kinds
from longvid.pipelines.kinds.writer import SPEECH_PREFIX, merge_speech
from longvid.shards.index import read_clips_index, read_videos_index
from longvid.shards.layers import read_failures, read_layer, read_layer_meta, write_layer_meta, write_layer_part
from longvid.shards.stats import layer_stats
from longvid.shards.storage import LocalStorage
from longvid.synthetic import write_video
from tests.annotators.test_speech import write_chirp_video
from tests.annotators.tiny import cpu_model, tiny_models
from tests.pipelines.helpers import write_manifest

SECONDS = 35.0  # more than one 30-s Whisper window


@pytest.fixture(scope="module")
def narrated(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("speech-ds")
    paths = []
    for i in range(2):
        paths.append(str(root / f"narrated-{i}.mp4"))
        write_chirp_video(paths[-1], SECONDS - 5 * i)
    paths.append(str(root / "silent.mp4"))
    write_video(paths[-1], [40, 40], fps=10, width=64, height=48)
    config = IngestConfig(segment=SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0)),
                          shards=ShardConfig(max_videos=2), ray=RayConfig(progress_bars=False))
    out = str(root / "dataset")
    assert run_ingest(write_manifest(str(root / "manifest.jsonl"), paths), out, config).written == 3
    storage = LocalStorage(out)
    videos = read_videos_index(storage).to_pylist()
    silent = next(v["key"] for v in videos if v["url"].endswith("silent.mp4"))
    whisper = build_tiny_whisper(str(tmp_path_factory.mktemp("whisper") / "whisper"))
    return {"root": out, "storage": storage, "videos": {v["key"]: v for v in videos}, "silent": silent,
            "whisper": whisper, "models": tiny_models(tmp_path_factory)}


@pytest.fixture(scope="module")
def speech_v1(narrated):
    config = AnnotateConfig(layer="speech", version="v1", kind="speech",
                            speech=SpeechConfig(model=narrated["whisper"], device="cpu", max_new_tokens=24, batch_size=2),
                            pipeline=PipelineConfig(num_cpus=1, prepare_cpus=0.5, batch_size=2),  # num_gpus: auto
                            ray=RayConfig(progress_bars=False))
    lines = []
    return run_annotate(narrated["root"], config, log=lines.append), lines


def test_the_registry_holds_one_class_per_kind():
    kinds = load_kinds()
    assert {"caption", "writer", "speech"} <= set(kinds)
    assert all(KINDS[name]().name == name for name in kinds)
    assert get_kind("speech").item_level == "video" and get_kind("caption").item_level == "clip"
    with pytest.raises(ValueError, match="unknown layer kind"):
        get_kind("nope")


def test_speech_rows_are_timed_inside_each_video(narrated, speech_v1):
    summary, lines = speech_v1
    assert any("has no GPU" in line for line in lines)  # auto on a machine without GPUs: CPU, one note
    table = read_layer(narrated["storage"], "speech", "v1").to_pylist()
    narrated_keys = set(narrated["videos"]) - {narrated["silent"]}
    assert {r["key"] for r in table} == narrated_keys  # every narrated video has segments
    for row in table:
        duration = narrated["videos"][row["key"]]["duration"]
        value = json.loads(row["value"])
        assert row["clip_id"] is None and row["value_type"] == "json"
        assert value["task"] == "speech" and value["scope"] == "segment" and value["text"]
        assert 0.0 <= row["start"] < row["end"] <= duration + 1e-6
    for key in narrated_keys:  # in time order within each video
        starts = [r["start"] for r in table if r["key"] == key]
        assert starts == sorted(starts)


def test_a_video_without_audio_is_a_failure_row_and_the_status_says_so(narrated, speech_v1):
    summary, _ = speech_v1
    failures = read_failures(narrated["storage"], "speech", "v1").to_pylist()
    assert [(f["key"], f["reason"], f["retry"]) for f in failures] == [
        (narrated["silent"], "the video has no audio track", True)]
    assert summary["status"] == "complete with 1 failures (33.3 %)" == read_layer_meta(
        narrated["storage"], "speech", "v1")["status"]
    stats = layer_stats(narrated["storage"], "speech", "v1", {"videos": 3, "clips": 0})
    assert stats["kind"] == "speech" and stats["words"] > 0 and stats["video_share"] == pytest.approx(2 / 3)
    assert stats["failures"][0]["reason"] == "the video has no audio track"


def test_merge_speech_puts_each_segment_in_the_clip_of_its_midpoint():
    clips = [["a", 0.0, 4.0, "first"], ["b", 4.0, 8.0, "second"]]
    merged = merge_speech(clips, [[3.0, 6.0, "hello"], [0.5, 1.0, "hi"], [9.0, 9.5, "outside"]])
    assert merged == [["a", 0.0, 4.0, f'first {SPEECH_PREFIX} "hi"'], ["b", 4.0, 8.0, f'second {SPEECH_PREFIX} "hello"']]
    assert merge_speech(clips, []) == clips


@pytest.fixture(scope="module")
def given_captions(narrated):
    """caption/given: one text row per clip of the narrated videos (what a captioner would write)."""
    clips = read_clips_index(narrated["storage"]).to_pylist()
    rows = [{"key": c["key"], "clip_id": c["clip_id"], "start": c["start"], "end": c["end"],
             "value": f"a scene from second {c['start']:.0f}", "value_type": "text", "producer": "given"}
            for c in clips if c["key"] != narrated["silent"]]
    write_layer_part(narrated["storage"], "caption", "given", "all", rows)
    write_layer_meta(narrated["storage"], "caption", "given", {"producer": {"kind": "given"}, "status": "complete"})
    return rows


def writer_config(narrated, **kw) -> AnnotateConfig:
    writer = WriterConfig(model=cpu_model(narrated["models"]["text"], "transformers"),
                          sampling=SamplingConfig(max_new_tokens=48), questions_per_family=1, max_text_chars=8,
                          on_overlong="keep", families=["event_understanding"])
    return AnnotateConfig(layer="qa", version="speech", writer=writer, source_layer="caption/given",
                          pipeline=PipelineConfig(num_cpus=1, batch_size=2), ray=RayConfig(progress_bars=False), **kw)


def test_the_writer_reads_captions_and_speech_by_time(narrated, speech_v1, given_captions):
    config = writer_config(narrated, speech_layer="speech/v1")
    videos = [dict(v, part="p") for k, v in narrated["videos"].items() if k != narrated["silent"]]
    items = get_kind("writer").plan_inputs(narrated["storage"], config, videos)
    speech = read_layer(narrated["storage"], "speech", "v1").to_pylist()
    for item in items:
        lines = json.loads(item["timeline"])
        assert [line[0] for line in lines] == [r["clip_id"] for r in sorted(
            (r for r in given_captions if r["key"] == item["key"]), key=lambda r: r["start"])]
        said = [r for r in speech if r["key"] == item["key"]]
        for r in said:  # each segment's text is in the line of the clip holding its midpoint
            mid = (r["start"] + r["end"]) / 2
            line = next((x for x in lines if x[1] <= mid < x[2]), None)
            if line is not None:
                assert json.loads(r["value"])["text"] in line[3] and SPEECH_PREFIX in line[3]
        assert any(SPEECH_PREFIX in x[3] for x in lines) == bool(said)
    summary = run_annotate(narrated["root"], config, log=lambda *_: None)
    meta = read_layer_meta(narrated["storage"], "qa", "speech")
    assert meta["recipe"]["speech_layer"] == "speech/v1" and meta["recipe"]["source_layer"] == "caption/given"
    rows = read_layer(narrated["storage"], "qa", "speech").to_pylist()
    summaries = {r["key"] for r in rows if json.loads(r["value"])["task"] == "summary"}
    assert summaries == {v["key"] for v in videos} and summary["videos"] == 3
    with pytest.raises(AnnotateError, match="speech-layer must be LAYER/VERSION"):
        run_annotate(narrated["root"], writer_config(narrated, speech_layer="speech"), log=lambda *_: None)
