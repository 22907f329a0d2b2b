"""The segment stage's Ray fan-out for long videos: window tasks on a real local Ray give the same
shots, transitions, clips and keyframes as one pass, also from inside a Ray task (as the ingest's
segment stage runs), and a truncated video still fails with a reason."""

from __future__ import annotations

import copy

import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.probe import probe_bytes
from longvid.annotators.segment import Segment, SegmentConfig
from longvid.annotators.windows import WindowConfig
from longvid.pipelines.segment_parallel import ParallelSegment, cluster_windows
from longvid.synthetic import ShotSpec, TransitionSpec, write_scripted_video


@pytest.fixture(scope="module")
def long_item(tmp_path_factory):
    shots = [ShotSpec(n, ["drift", "pan", "static", "zoom"][i % 4], seed=70 + i)
             for i, n in enumerate([120, 90, 140, 80, 130, 100, 110, 95])]
    kinds = ["cut", "dissolve", "cut", "cut", "fade", "cut", "cut"]
    transitions = [TransitionSpec(k, 18 if k != "cut" else 0) for k in kinds]
    path = str(tmp_path_factory.mktemp("parallel") / "long.mp4")
    write_scripted_video(path, shots, transitions, fps=25, width=160, height=90, gop=50, x264_params="scenecut=0")
    with open(path, "rb") as f:
        media = f.read()
    return {"video_id": "long", "media": media, "probe": probe_bytes(media)}


CONFIG = SegmentConfig(detector="sparse", windows=WindowConfig(parallel_above_seconds=10, window_seconds=12))


def test_window_tasks_equal_one_pass(ray_session, long_item):
    stage = ParallelSegment(CONFIG, window_cpus=1.0)
    assert stage.windowed(long_item["probe"])
    one = Segment(CONFIG).process(copy.deepcopy(long_item))

    @ray_session.remote(num_cpus=1)
    def in_a_task(item):  # the ingest runs the stage as a Ray task that then waits on its windows
        return stage.process(item)

    fanned = ray_session.get(in_a_task.remote(copy.deepcopy(long_item)))
    for key in ("shots", "transitions", "clips"):
        assert fanned[key] == one[key]
    stage.free_cpus = 3.0  # as RayExecutor sets it: 3 slots, so 3 windows instead of 4
    three = ray_session.get(in_a_task.remote(copy.deepcopy(long_item)))
    for key in ("shots", "transitions", "clips"):
        assert three[key] == one[key]
    assert fanned["probe"]["num_frames"] == one["probe"]["num_frames"]
    short = ParallelSegment(SegmentConfig(detector="sparse"))  # default threshold: 10 minutes
    assert not short.windowed(long_item["probe"])


def test_truncated_long_video_fails_with_a_reason(ray_session, long_item):
    item = copy.deepcopy(long_item)
    item["media"] = item["media"][: len(item["media"]) // 2]
    with pytest.raises(ItemFailed, match="truncated|decod"):
        ParallelSegment(CONFIG).process(item)


def test_windows_fill_whole_rounds_of_the_free_slots(ray_session, long_item):
    probe = long_item["probe"]  # 901 frames, windows of 12 s: 4 by length
    assert len(cluster_windows(probe, CONFIG, 1.0, free_cpus=0.0)) == 4  # no free slot: by length
    assert len(cluster_windows(probe, CONFIG, 1.0, free_cpus=2.0)) == 4  # 2 rounds of 2
    assert len(cluster_windows(probe, CONFIG, 1.0, free_cpus=3.0)) == 3  # 1 round of 3, not 2 rounds of 3 and 1
    assert len(cluster_windows(probe, CONFIG, 0.5, free_cpus=1.5)) == 3  # 3 slots of 0.5 CPU
    assert len(cluster_windows(probe, CONFIG, 1.0, free_cpus=5.0)) == 5  # 1 round of 5
    assert len(cluster_windows(probe, CONFIG, 1.0)) == 4  # default: the session's 4 CPUs
