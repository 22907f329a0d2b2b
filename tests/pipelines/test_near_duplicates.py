"""Near-duplicates across runs on a real Ray: a re-encode at a smaller size and bitrate, a cropped
re-upload and a compilation holding one shot of an earlier video are found; unrelated content is not."""

from __future__ import annotations

import av
import numpy as np
import pytest

from longvid.shards import read_clips_index, read_videos_index
from longvid.shards.schema import video_id_for
from longvid.shards.storage import LocalStorage
from longvid.synthetic import ShotRenderer, ShotSpec, encode_frames
from tests.pipelines.helpers import write_manifest
from tests.pipelines.test_ingest import small_config

W, H, SHOT = 320, 180, 50


def shot_frames(seed):
    render = ShotRenderer(ShotSpec(SHOT, "drift", seed=seed), W, H)
    return [render.frame(t).astype(np.uint8) for t in range(SHOT)]


def resized(frame, width, height):
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24").reformat(
        width=width, height=height, interpolation="AREA").to_ndarray()


def cropped(frame, margin=0.08):
    dy, dx = int(H * margin), int(W * margin)
    return resized(frame[dy : H - dy, dx : W - dx], W, H)


@pytest.fixture(scope="module")
def two_runs(ray_session, tmp_path_factory):
    root = tmp_path_factory.mktemp("neardup")
    original = [f for s in (11, 12, 13) for f in shot_frames(s)]
    paths = {
        "original": (original, W, H),
        "other": ([f for s in (21, 22) for f in shot_frames(s)], W, H),
        "reencoded": ([resized(f, 160, 90) for f in original], 160, 90),
        "cropped": ([cropped(f) for f in original], W, H),
        "compilation": ([f for s in (31, 12, 32, 33) for f in shot_frames(s)], W, H),
        "unrelated": ([f for s in (41, 42) for f in shot_frames(s)], W, H),
    }
    for name, (frames, w, h) in paths.items():
        encode_frames(str(root / f"{name}.mp4"), frames, 25, w, h)
    out = str(root / "ds")
    first = write_manifest(str(root / "first.jsonl"), [str(root / "original.mp4"), str(root / "other.mp4")])
    second = write_manifest(str(root / "second.jsonl"), [str(root / f"{n}.mp4") for n in
                                                         ("reencoded", "cropped", "compilation", "unrelated")])
    for manifest in (first, second):
        summary = run_ingest_checked(manifest, out)
        assert summary.failed == 0
    storage = LocalStorage(out)
    keys = {name: video_id_for(str(root / f"{name}.mp4")) for name in paths}
    return keys, read_videos_index(storage).to_pylist(), read_clips_index(storage).to_pylist(), out


def run_ingest_checked(manifest, out):
    from longvid.pipelines.ingest import run_ingest

    return run_ingest(manifest, out, small_config())


def test_reencoded_and_cropped_copies_point_at_the_original(two_runs):
    keys, videos, clips, _ = two_runs
    by_key = {v["key"]: v for v in videos}
    for copy in ("reencoded", "cropped"):
        row = by_key[keys[copy]]
        assert row["near_duplicate_of"] == keys["original"], (copy, row)
        assert 0 <= row["near_duplicate_distance"] <= 10
        mine = [c for c in clips if c["key"] == keys[copy]]
        assert mine and all(c["near_duplicate_of"] and c["near_duplicate_of"].startswith(keys["original"])
                            for c in mine), mine


def test_a_spliced_shot_is_found_on_its_clip_only(two_runs):
    keys, videos, clips, _ = two_runs
    mine = [c for c in clips if c["key"] == keys["compilation"]]
    matched = [c for c in mine if c["near_duplicate_of"]]
    assert len(matched) == 1 and matched[0]["near_duplicate_of"].startswith(keys["original"])
    assert 1.9 < matched[0]["start"] < 2.1  # the second shot of the compilation is the original's second
    assert {v["key"]: v for v in videos}[keys["compilation"]]["near_duplicate_of"] is None


def test_unrelated_content_matches_nothing(two_runs):
    keys, videos, clips, _ = two_runs
    by_key = {v["key"]: v for v in videos}
    for name in ("original", "other", "unrelated"):
        assert by_key[keys[name]]["near_duplicate_of"] is None
        assert all(c["near_duplicate_of"] is None for c in clips if c["key"] == keys[name]), name
    assert all(c["motion_score"] is not None and c["phash"] for c in clips)


def test_stats_report_shows_each_score_distribution(two_runs):
    from longvid.shards.stats import dataset_stats, render_html

    _, _, clips, out = two_runs
    stats = dataset_stats(LocalStorage(out))
    motion = next(h for h in stats["scores"] if h["score"] == "motion_score")
    assert sum(motion["counts"]) + motion["missing"] == len(clips) and motion["missing"] == 0
    distance = next(h for h in stats["scores"] if h["score"] == "clip near-duplicate distance")
    assert sum(distance["counts"]) == sum(c["near_duplicate_of"] is not None for c in clips) > 0
    page = render_html(stats)
    assert "Curation scores" in page and page.count("histogram\"") >= 3
