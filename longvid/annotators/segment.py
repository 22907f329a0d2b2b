"""The segment stage: one streamed decode feeds shot detection and keyframe features,
then clip rules and DPSelect keyframes per clip.

Memory is bounded for any length: a block of thumbnails and the detector's fixed window are kept,
plus a few bytes per frame (the keyframe distance). Never decodes a video twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .base import ItemFailed, Resources, Stage
from .clips import ClipConfig, make_clips
from .decode import DecodeConfig, DecodeStats, iter_thumbnails
from .fastcut import FastCutConfig
from .keyframes import FrameDistance, FrameMotion, dpselect
from .phash import FrameHashes
from .shots import ShotDetector, make_detector, shots_from_boundaries
from .transnet import HybridConfig, TransNetConfig


@dataclass
class SegmentConfig:
    detector: str = "fast"  # shot detector name (see annotators.shots.DETECTORS): fast, hybrid, transnetv2, contentdiff
    keyframes_per_clip: int = 4  # DPSelect keyframes stored per clip (one per clip of 4 frames at stage 1)
    min_decoded_fraction: float = 0.9  # fewer decoded frames than this share of the probed count = truncated
    clips: ClipConfig = field(default_factory=ClipConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    fast: FastCutConfig = field(default_factory=FastCutConfig)
    transnet: TransNetConfig = field(default_factory=TransNetConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)


def build_detector(config: SegmentConfig, model=None) -> ShotDetector:
    """The configured detector, with its own settings from ``config`` (``model``: TransNetV2
    loaded once by ``Segment.setup``; None loads it here)."""
    if config.detector == "fast":
        return make_detector("fast", config=config.fast)
    if config.detector == "transnetv2":
        return make_detector("transnetv2", config=config.transnet, model=model)
    if config.detector == "hybrid":
        return make_detector("hybrid", config=config.hybrid, fast=config.fast, transnet=config.transnet, model=model)
    return make_detector(config.detector)


NEURAL_DETECTORS = ("transnetv2", "hybrid")  # they see the thumbnails the way TransNetV2 was trained: bicubic


def thumbnail_config(config: SegmentConfig) -> DecodeConfig:
    """The decode settings with ``interpolation: auto`` resolved for the configured detector."""
    if config.decode.interpolation != "auto":
        return config.decode
    method = "BICUBIC" if config.detector in NEURAL_DETECTORS else "AREA"
    return replace(config.decode, interpolation=method)


def segment_video(source, probe: dict, video_id: str, config: SegmentConfig, model=None) -> dict:
    """Shots, transitions, clips and keyframes of one video from a single decode."""
    detector = build_detector(config, model)
    distance = FrameDistance()
    motion = FrameMotion()
    hashes = FrameHashes()
    stats = DecodeStats()
    # yields HxWx3 uint8 thumbnails, one per decoded frame, in display order
    for thumb in iter_thumbnails(source, stats=stats, config=thumbnail_config(config)):
        detector.update(thumb)
        distance.update(thumb)
        motion.update(thumb)
        hashes.update(thumb)
    expected = probe["num_frames"]
    if stats.frames == 0:
        raise ItemFailed(f"no frame could be decoded ({stats.error or 'empty stream'})")
    if stats.frames < config.min_decoded_fraction * expected:
        why = f": {stats.error}" if stats.error else ""
        raise ItemFailed(f"truncated or corrupt: decoded {stats.frames} of {expected} frames{why}")
    num_frames, fps = stats.frames, probe["fps"]
    boundaries = detector.finish()
    shots = shots_from_boundaries(boundaries, num_frames, fps)
    transitions = [t for t in detector.transitions if t["start_frame"] < num_frames]
    clips = make_clips(video_id, shots, num_frames, fps, config.clips)
    d = distance.distances
    keyframes = []
    for clip in clips:
        a, b = clip["start_frame"], clip["end_frame"]
        chosen = [a + i for i in dpselect(d[a:b], config.keyframes_per_clip)]
        clip["keyframes"] = chosen
        clip["keyframe_times"] = [round(i / fps, 6) for i in chosen]
        clip["motion_score"] = motion.span_score(a, b)  # curation signal: 0 for a still picture
        clip["phash"] = hashes.at(chosen)  # near-duplicate signal: the keyframes' perceptual hashes
        keyframes += [{"frame": i, "time": round(i / fps, 6), "clip_id": clip["clip_id"]} for i in chosen]
    return {
        "num_frames": num_frames,
        "shots": shots,
        "transitions": transitions,
        "clips": clips,
        "keyframes": keyframes,
        "detector": detector.name,
    }


class Segment(Stage):
    name = "segment"
    version = "2"
    resources = Resources(num_cpus=1.0)  # decode-bound: one core per video

    def __init__(self, config: SegmentConfig | None = None):
        self.config = config or SegmentConfig()
        self.model = None  # TransNetV2, loaded by setup() when the detector needs it

    @property
    def producer(self) -> str:
        return f"segment-{self.config.detector}@{self.version}"

    def has_setup(self) -> bool:
        return self.config.detector in NEURAL_DETECTORS  # weights to load: an actor; else stateless tasks

    def setup(self) -> None:
        if self.config.detector in NEURAL_DETECTORS and self.model is None:
            from .transnet import load_model

            self.model = load_model(self.config.transnet.device)

    def process(self, item: dict) -> dict:
        result = segment_video(item["media"], item["probe"], item["video_id"], self.config, self.model)
        item["probe"]["num_frames"] = result["num_frames"]  # decoded count is the truth
        item["shots"] = result["shots"]
        item["transitions"] = result["transitions"]
        item["clips"] = result["clips"]
        item["detector"] = result["detector"]
        return item
