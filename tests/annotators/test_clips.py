"""Clip rules: short shots merged, long shots cut into windows within the limits, every frame in
exactly one clip; and the whole segment stage on a video with a shot longer than the maximum."""

from __future__ import annotations

import pytest

from longvid.annotators.clips import ClipConfig, clip_spans, make_clips
from longvid.annotators.probe import probe_file
from longvid.annotators.segment import SegmentConfig, segment_video
from longvid.annotators.shots import shots_from_boundaries
from longvid.synthetic import ShotSpec, TransitionSpec, write_scripted_video


def check_cover(spans, num_frames):
    assert spans[0][0] == 0 and spans[-1][1] == num_frames
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def test_short_shots_merge_and_long_shots_split_within_limits():
    fps, config = 25.0, ClipConfig(min_seconds=2.0, max_seconds=10.0)
    # shots: 1 s, 0.4 s, 30 s, 3 s, 0.5 s (the last too short: joins its neighbour)
    boundaries = [25, 35, 785, 860]
    num_frames = 872
    spans = clip_spans(shots_from_boundaries(boundaries, num_frames, fps), num_frames, fps, config)
    check_cover(spans, num_frames)
    lengths = [b - a for a, b in spans]
    assert all(2 * fps <= n <= 10 * fps for n in lengths), lengths
    assert spans[0] == (0, 785 // 4) or spans[0][1] >= 50  # the two short shots are not clips of their own
    assert len(spans) == 5  # 0.. 785 in four windows of <= 10 s, then 785..872


def test_a_video_shorter_than_the_minimum_is_one_clip():
    spans = clip_spans(shots_from_boundaries([10], 30, 25.0), 30, 25.0, ClipConfig())
    assert spans == [(0, 30)]


def test_min_longer_than_half_max_is_refused():
    with pytest.raises(ValueError, match="max_seconds / 2"):
        clip_spans([{"start_frame": 0, "end_frame": 10}], 10, 25.0, ClipConfig(min_seconds=6, max_seconds=10))


def test_clip_records_carry_ids_and_inner_boundaries():
    shots = shots_from_boundaries([10, 40], 500, 25.0)
    clips = make_clips("vid", shots, 500, 25.0, ClipConfig(min_seconds=1.0, max_seconds=10.0))
    assert len({c["clip_id"] for c in clips}) == len(clips)
    assert clips[0]["end_frame"] == 40 and clips[0]["shot_boundaries"] == [10]


def test_segment_video_with_a_shot_longer_than_the_maximum(tmp_path):
    truth = write_scripted_video(str(tmp_path / "long.mp4"),
                                 [ShotSpec(40, "drift", seed=1), ShotSpec(260, "pan", seed=2), ShotSpec(60, "drift", seed=3)],
                                 [TransitionSpec("cut"), TransitionSpec("dissolve", 16)], width=96, height=54)
    probe = probe_file(truth.path)
    config = SegmentConfig(keyframes_per_clip=3, clips=ClipConfig(min_seconds=1.0, max_seconds=4.0))
    result = segment_video(truth.path, probe, "vid", config)
    assert result["num_frames"] == truth.num_frames
    assert [t["kind"] for t in result["transitions"]] == ["cut", "dissolve"]
    spans = [(c["start_frame"], c["end_frame"]) for c in result["clips"]]
    check_cover(spans, truth.num_frames)
    assert all(25 <= b - a <= 100 for a, b in spans), spans
    for clip in result["clips"]:
        assert len(clip["keyframes"]) == 3
        assert all(clip["start_frame"] <= k < clip["end_frame"] for k in clip["keyframes"])
        assert clip["keyframe_times"] == [round(k / truth.fps, 6) for k in clip["keyframes"]]
    assert len(result["keyframes"]) == 3 * len(result["clips"])
