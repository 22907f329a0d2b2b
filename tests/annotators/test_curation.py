"""Curation signals from the segment stage's decode: motion scores and perceptual hashes, and the
multi-index hash table against a brute-force scan."""

from __future__ import annotations

import numpy as np

from longvid.annotators.clips import ClipConfig
from longvid.annotators.phash import HashIndex, brute_force_search, hamming, phash
from longvid.annotators.probe import probe_file
from longvid.annotators.segment import SegmentConfig, segment_video
from longvid.synthetic import ShotRenderer, ShotSpec, encode_frames


def _clip_scores(path):
    with open(path, "rb") as f:
        data = f.read()
    config = SegmentConfig(clips=ClipConfig(min_seconds=1.0, max_seconds=8.0))
    return segment_video(data, probe_file(path), "k", config)["clips"]


def test_motion_score_is_higher_for_a_moving_video_than_a_static_one(tmp_path):
    scores = {}
    for motion in ("static", "fast_pan"):
        render = ShotRenderer(ShotSpec(60, motion, seed=3), 160, 90)
        path = str(tmp_path / f"{motion}.mp4")
        encode_frames(path, (render.frame(t) for t in range(60)), 25, 160, 90)
        clips = _clip_scores(path)
        scores[motion] = clips[0]["motion_score"]
        assert all(0.0 <= c["motion_score"] <= 1.0 for c in clips)
    assert scores["fast_pan"] > 3 * scores["static"], scores


def test_keyframes_carry_hashes_and_flat_frames_none(tmp_path):
    black = str(tmp_path / "black.mp4")
    encode_frames(black, (np.zeros((90, 160, 3), np.uint8) for _ in range(30)), 25, 160, 90)
    assert all(c["phash"] == [] for c in _clip_scores(black))  # black frames all look alike: never hashed
    render = ShotRenderer(ShotSpec(40, "drift", seed=5), 160, 90)
    moving = str(tmp_path / "moving.mp4")
    encode_frames(moving, (render.frame(t) for t in range(40)), 25, 160, 90)
    clip = _clip_scores(moving)[0]
    assert len(clip["phash"]) == 2 * len(clip["keyframes"])  # whole and inner hash per keyframe


def test_phash_survives_resizing_and_separates_unrelated_pictures():
    a = ShotRenderer(ShotSpec(10, "drift", seed=1), 320, 180).frame(0).astype(np.uint8)
    b = ShotRenderer(ShotSpec(10, "drift", seed=2), 320, 180).frame(0).astype(np.uint8)
    small = a.reshape(90, 2, 160, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    assert hamming(phash(a), phash(small))[0] <= 4
    assert hamming(phash(a), phash(b))[0] >= 20


def test_multi_index_search_equals_brute_force():
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2**63, size=20000, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 20000).astype(np.uint64)
    index = HashIndex(radius=10)
    index.add(stored, np.arange(len(stored)))
    for i in range(50):
        query = int(stored[i * 7])
        flips = rng.choice(64, size=int(rng.integers(0, 12)), replace=False)
        for bit in flips:
            query ^= 1 << int(bit)
        ids, dist = index.search(query)
        assert sorted(ids.tolist()) == sorted(brute_force_search(stored, query, 10).tolist())
        assert list(dist) == sorted(dist)
