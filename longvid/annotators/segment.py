"""The segment stage: one streamed decode feeds shot detection and keyframe features,
then clip rules and DPSelect keyframes per clip.

Memory is bounded for any length: only one thumbnail and one float per frame are kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .base import ItemFailed, Resources, Stage
from .clips import ClipConfig, make_clips
from .decode import DecodeStats, iter_thumbnails
from .keyframes import FrameDistance, dpselect
from .shots import make_detector, shots_from_boundaries


@dataclass
class SegmentConfig:
    detector: str = "contentdiff"  # shot detector name (see annotators.shots.DETECTORS)
    keyframes_per_clip: int = 4  # DPSelect keyframes stored per clip
    min_decoded_fraction: float = 0.9  # fewer decoded frames than this share of the probed count = truncated
    clips: ClipConfig = field(default_factory=ClipConfig)


def segment_video(source, probe: dict, video_id: str, config: SegmentConfig) -> dict:
    """Shots, clips and keyframes of one video from a single decode."""
    detector = make_detector(config.detector)
    distance = FrameDistance()
    stats = DecodeStats()
    for thumb in iter_thumbnails(source, stats=stats):
        detector.update(thumb)
        distance.update(thumb)
    expected = probe["num_frames"]
    if stats.frames == 0:
        raise ItemFailed(f"no frame could be decoded ({stats.error or 'empty stream'})")
    if stats.frames < config.min_decoded_fraction * expected:
        why = f": {stats.error}" if stats.error else ""
        raise ItemFailed(f"truncated or corrupt: decoded {stats.frames} of {expected} frames{why}")
    num_frames, fps = stats.frames, probe["fps"]
    shots = shots_from_boundaries(detector.finish(), num_frames, fps)
    clips = make_clips(video_id, shots, num_frames, fps, config.clips)
    d = np.asarray(distance.distances, dtype=np.float32)
    for clip in clips:
        a, b = clip["start_frame"], clip["end_frame"]
        chosen = dpselect(d[a:b], config.keyframes_per_clip)
        clip["keyframes"] = [a + i for i in chosen]
        clip["keyframe_times"] = [round((a + i) / fps, 6) for i in chosen]
    return {"num_frames": num_frames, "shots": shots, "clips": clips, "detector": detector.name}


class Segment(Stage):
    name = "segment"
    version = "1"
    resources = Resources(num_cpus=1.0)  # decode-bound: one core per video

    def __init__(self, config: SegmentConfig | None = None):
        self.config = config or SegmentConfig()

    def process(self, item: dict) -> dict:
        result = segment_video(item["media"], item["probe"], item["video_id"], self.config)
        item["probe"]["num_frames"] = result["num_frames"]  # decoded count is the truth
        item["shots"] = result["shots"]
        item["clips"] = result["clips"]
        item["detector"] = result["detector"]
        return item
