"""DPSelect keyframes: they land on the peaks of a planted distance curve, from a curve or from
frames whose changes were planted, and the block computation equals the per-frame one."""

from __future__ import annotations

import numpy as np

from longvid.annotators.keyframes import FrameDistance, dpselect


def test_dpselect_picks_the_planted_peaks_in_time_order():
    rng = np.random.default_rng(3)
    d = rng.uniform(0.0, 0.05, size=200)
    peaks = [31, 77, 140, 181]
    d[peaks] = [0.4, 0.3, 0.5, 0.35]
    assert dpselect(d, 5) == [0] + peaks  # the first frame of a span always counts (d[0] = 1)
    assert dpselect(d, 3) == [0, 31, 140]  # the strongest peaks first
    assert dpselect(d, 0) == [] and dpselect([], 3) == []


def test_keyframes_from_frames_with_planted_changes():
    """A still picture whose content jumps at planted frames: those frames are the keyframes."""
    rng = np.random.default_rng(5)
    pictures = [rng.integers(0, 255, size=(27, 48, 3), dtype=np.uint8) for _ in range(4)]
    changes = [40, 95, 150]
    distance = FrameDistance()
    for t in range(200):
        picture = pictures[sum(t >= c for c in changes)].astype(np.int16)
        noise = rng.integers(-2, 3, size=picture.shape)
        distance.update(np.clip(picture + noise, 0, 255).astype(np.uint8))
    d = distance.distances
    assert len(d) == 200
    assert dpselect(d, 4) == [0] + changes


def test_block_and_per_frame_distances_agree():
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 255, size=(150, 27, 48, 3), dtype=np.uint8)
    blocked, single = FrameDistance(block=64), FrameDistance(block=1)
    for frame in frames:
        blocked.update(frame)
        single.update(frame)
    np.testing.assert_allclose(blocked.distances, single.distances, atol=1e-6)
    assert blocked.distances[0] == 1.0
