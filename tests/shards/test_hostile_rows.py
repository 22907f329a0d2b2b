"""One hostile index or layer row (times out of order, NaN, 10^12 frames, offsets past the tar,
a drifted column type) is skipped, counted and named by every reader; the rest of its source
streams on. Row checks themselves (validate.py) are tested on small Arrow tables."""

from __future__ import annotations

import math
import shutil

import pyarrow as pa
import pytest

from longvid.annotators.clips import ClipConfig
from longvid.shards import Storage, write_layer_part
from longvid.shards.index import read_index_parts
from longvid.shards.layers import read_layer
from longvid.shards.stream import ShardStream, SourceSpec, StreamConfig
from longvid.shards.validate import clip_row_reasons, layer_row_reasons, video_row_reasons
from longvid.synthetic import write_known_cut_dataset, write_video
from tests.shards.hostile_index import set_value

FPS = 25


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """Four 4-6 s videos in two shards, several clips each."""
    base = tmp_path_factory.mktemp("hostile")
    videos = []
    for i in range(4):
        frames = (4 + i % 3) * FPS
        path = str(base / f"v{i}.mp4")
        truth = write_video(path, [frames // 2 + i, frames - frames // 2 - i], fps=FPS, width=64, height=48, gop=12)
        videos.append((path, truth.cuts))
    root = str(base / "ds")
    write_known_cut_dataset(root, videos, per_shard=2, clips=ClipConfig(0.5, 2.0))
    videos, clips = read_index_parts(Storage.for_uri(root))
    return {"root": root, "videos": videos.to_pylist(), "clips": clips.to_pylist()}


@pytest.fixture
def copy(clean, tmp_path):
    root = str(tmp_path / "ds")
    shutil.copytree(clean["root"], root)
    return root


def _stream(root, unit, **options):
    config = StreamConfig(sources=[SourceSpec(root)], stage="stage1", unit=unit, epochs=1, **options)
    return ShardStream(config)


CLIP_CASES = {
    "start after end": ("start", 1e6, None, "bad_times"),
    "negative start": ("start", -1.0, None, "bad_times"),
    "nan end": ("end", math.nan, None, "bad_times"),
    "inf start": ("start", math.inf, None, "bad_times"),
    "absurd frame count": ("end_frame", 10 ** 12, None, "bad_frames"),
    "frames reversed": ("start_frame", 10 ** 6, None, "bad_frames"),
}


@pytest.mark.parametrize("case", list(CLIP_CASES))
def test_one_hostile_clip_row_is_skipped_and_its_video_streams_on(clean, copy, case, caplog):
    column, value, type_, reason = CLIP_CASES[case]
    victim = clean["clips"][1]
    set_value(copy, victim["shard"], "clips", "clip_id", victim["clip_id"], column, value, type_)
    s = _stream(copy, "clip", decode=False)
    ids = [x["__key__"] for x in s]
    assert sorted(ids) == sorted(c["clip_id"] for c in clean["clips"] if c["clip_id"] != victim["clip_id"])
    assert s.stats()["dropped"] == {f"bad index row ({reason})": 1}
    assert victim["clip_id"] in caplog.text and reason in caplog.text


def test_a_drifted_clip_column_type_rejects_that_file_s_rows_only(clean, copy, caplog):
    victim = clean["clips"][0]
    set_value(copy, victim["shard"], "clips", "clip_id", victim["clip_id"], "start", "soon", pa.string())
    s = _stream(copy, "clip", decode=False)
    ids = [x["__key__"] for x in s]
    same_file = [c["clip_id"] for c in clean["clips"] if c["shard"] == victim["shard"]]
    # the other rows of the drifted file kept their values as text ("0.5"), which still parse
    assert victim["clip_id"] not in ids and len(ids) == len(clean["clips"]) - 1
    assert s.stats()["dropped"] == {"bad index row (bad_times)": 1}
    assert "wrong_type:start" in caplog.text and len(same_file) > 1


VIDEO_CASES = {
    "media past the tar": ("media_size", 10 ** 12, "media_outside_shard"),
    "negative offset": ("media_offset", -5, "media_outside_shard"),
    "absurd frame count": ("num_frames", 10 ** 12, "bad_num_frames"),
    "nan fps": ("fps", math.nan, "bad_fps"),
    "infinite duration": ("duration", math.inf, "bad_duration"),
}


@pytest.mark.parametrize("case", list(VIDEO_CASES))
def test_one_hostile_video_row_is_skipped_and_the_rest_decode(clean, copy, case):
    column, value, reason = VIDEO_CASES[case]
    victim = clean["videos"][0]
    set_value(copy, victim["shard"], "videos", "key", victim["key"], column, value)
    s = _stream(copy, "video", decode=True)
    samples = list(s)
    assert sorted(x["__key__"] for x in samples) == sorted(v["key"] for v in clean["videos"][1:])
    assert all(x["frames"].shape[0] == len(x["frame_indices"]) > 0 for x in samples)
    assert s.stats()["dropped"] == {f"bad index row ({reason})": 1} and s.skipped == {}
    clips = _stream(copy, "clip", decode=False)  # the clips of a bad media row go with it
    lost = column != "duration"  # clips carry their own times: the video's duration is not read for them
    assert len(list(clips)) == sum(c["key"] != victim["key"] or not lost for c in clean["clips"])


def test_hostile_layer_rows_are_skipped_and_the_rest_give_conversations(clean, copy, caplog):
    storage = Storage.for_uri(copy)
    rows = [{"key": c["key"], "clip_id": c["clip_id"], "start": c["start"], "end": c["end"],
             "value": f"caption of {c['clip_id']}", "value_type": "text", "producer": "t"} for c in clean["clips"]]
    rows[0]["start"] = math.nan
    rows[1]["value_type"] = "pickle"
    rows[2]["value"] = None
    by_shard: dict[str, list[dict]] = {}
    for row, clip in zip(rows, clean["clips"]):
        by_shard.setdefault(clip["shard"], []).append(row)
    for shard, part in by_shard.items():
        write_layer_part(storage, "caption", "v1", shard.rsplit("/", 1)[-1][: -len(".tar")] + "-0000", part)
    s = _stream(copy, "clip", decode=False, layers=["caption/v1"])
    ids = [x["__key__"] for x in s]
    assert sorted(ids) == sorted(c["clip_id"] for c in clean["clips"][3:])
    assert s.stats()["dropped"] == {"no annotation": 3}
    assert "bad_span" in caplog.text and "bad_value_type" in caplog.text and "bad_value" in caplog.text
    assert read_layer(storage, "caption", "v1").num_rows == len(rows) - 3  # export's reader: same rows


def test_a_layer_part_with_a_drifted_column_type_is_left_out_not_fatal(clean, copy, caplog):
    import pyarrow.parquet as pq

    storage = Storage.for_uri(copy)
    good = [{"key": c["key"], "clip_id": c["clip_id"], "start": c["start"], "end": c["end"], "value": "x",
             "value_type": "text", "producer": "t"} for c in clean["clips"] if c["shard"] == clean["clips"][0]["shard"]]
    write_layer_part(storage, "caption", "v1", "shard-000000-0000", good)
    other = [c for c in clean["clips"] if c["shard"] != clean["clips"][0]["shard"]]
    drifted = pa.table({"key": [c["key"] for c in other], "clip_id": [c["clip_id"] for c in other],
                        "start": ["early"] * len(other), "end": [c["end"] for c in other],
                        "value": ["y"] * len(other), "value_type": ["text"] * len(other)})
    base = other[0]["shard"].rsplit("/", 1)[-1][: -len(".tar")]
    pq.write_table(drifted, f"{copy}/annotations/caption/v1/{base}-0000.parquet")
    assert read_layer(storage, "caption", "v1").num_rows == len(good)
    assert "wrong_type:start" in caplog.text


def test_row_checks_name_the_first_failed_rule():
    videos = pa.table({"key": ["a", "b", "c", ""], "shard": ["s", "s", "gone", "s"],
                       "media_offset": [0, 90, 0, 0], "media_size": [10, 20, 10, 10],
                       "fps": [25.0, 25.0, 25.0, 25.0]})
    sizes = pa.table({"shard": ["s"], "bytes": [100]})
    assert video_row_reasons(videos, sizes).to_pylist() == [None, "media_outside_shard", "media_outside_shard",
                                                           "bad_key"]
    clips = pa.table({"clip_id": ["x", "y"], "start": [0.0, None], "end": [1.0, 2.0]})
    assert clip_row_reasons(clips).to_pylist() == [None, "bad_times"]
    layer = pa.table({"key": ["k", "k"], "start": [None, 0.0], "end": [None, 1.0], "value": ["v", "w"],
                      "value_type": ["json", "text"]})
    assert layer_row_reasons(layer).to_pylist() == [None, None]  # a video-level value has no span
