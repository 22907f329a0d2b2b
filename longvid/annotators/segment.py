"""The segment stage: one streamed decode feeds shot detection and keyframe features,
then clip rules and DPSelect keyframes per clip.

Memory is bounded for any length: a block of thumbnails and the detector's fixed window are kept,
plus a few bytes per frame (the keyframe distance). Never decodes a video twice (the ``sparse``
detector decodes its reference frames once and re-decodes only the short gaps around cuts).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .base import ItemFailed, Resources, Stage
from .clips import ClipConfig, make_clips
from .decode import DecodeConfig, DecodeStats, iter_thumbnails
from .fastcut import FastCutConfig
from .keyframes import FrameDistance, FrameMotion, dpselect
from .phash import FrameHashes, hex_hashes
from .shots import ShotDetector, make_detector, shots_from_boundaries
from .coarse_signals import scan_with_signals
from .sparse import Scan, SparseConfig, SparseCutDetector
from .transnet import HybridConfig, TransNetConfig
from .windows import WindowConfig, plan_windows, segment_windows

SCAN_DETECTORS = ("sparse",)  # detectors that decode for themselves (annotators.sparse.scan)
WINDOWED_DETECTORS = ("fast", "sparse")  # detectors a long video can be split into windows for
MAX_TRAILING_SKIPPED = 16  # non-reference frames a sparse pass may not see after the last reference frame


@dataclass
class SegmentConfig:
    detector: str = "fast"  # shot detector name (see annotators.shots.DETECTORS): fast, sparse, hybrid, transnetv2, contentdiff
    keyframes_per_clip: int = 4  # DPSelect keyframes stored per clip (one per clip of 4 frames at stage 1)
    min_decoded_fraction: float = 0.9  # fewer decoded frames than this share of the probed count = truncated
    clips: ClipConfig = field(default_factory=ClipConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    fast: FastCutConfig = field(default_factory=FastCutConfig)
    transnet: TransNetConfig = field(default_factory=TransNetConfig)
    hybrid: HybridConfig = field(default_factory=HybridConfig)
    sparse: SparseConfig = field(default_factory=SparseConfig)
    windows: WindowConfig = field(default_factory=WindowConfig)


def build_detector(config: SegmentConfig, model=None) -> ShotDetector:
    """The configured detector, with its own settings from ``config`` (``model``: TransNetV2
    loaded once by ``Segment.setup``; None loads it here)."""
    if config.detector == "fast":
        return make_detector("fast", config=config.fast)
    if config.detector == "sparse":
        return SparseCutDetector(config.fast)
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
    if config.detector in SCAN_DETECTORS:
        result = scan_with_signals(source, thumbnail_config(config), config.sparse, build_detector(config))
        return assemble(result, probe, video_id, config)
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
    transitions = [dict(t, frame=b) for b, t in zip(boundaries, detector.transitions)]
    frames = np.arange(num_frames, dtype=np.int64)
    return _finish(video_id, fps, num_frames, frames, distance.distances, transitions, stats.frames,
                   detector.name, config, {"motion": motion.values, **dict(zip(("phash_full", "phash_inner"),
                                                                            hashes.arrays()))})


def scan_settings(config: SegmentConfig) -> SparseConfig:
    """How :func:`annotators.sparse.scan` decodes for the configured detector: sparsely for ``sparse``,
    every frame (the decode settings alone) for ``fast``."""
    if config.detector == "sparse":
        return config.sparse
    if config.detector not in WINDOWED_DETECTORS:
        raise ValueError(f"detector {config.detector!r} cannot segment in windows; use one of {WINDOWED_DETECTORS}")
    return SparseConfig(skip="none", skip_loop_filter=False, refine=False)


def segment_video_windowed(source, probe: dict, video_id: str, config: SegmentConfig) -> dict:
    """The result of :func:`segment_video`, computed window by window in this process (the pipeline
    runs the same windows in parallel: ``pipelines.segment_parallel``)."""
    windows = plan_windows(probe["num_frames"], probe["fps"], config.windows)
    result = segment_windows(source, windows, thumbnail_config(config), scan_settings(config),
                             lambda: build_detector(config))
    return assemble(result, probe, video_id, config)


def assemble(result: Scan, probe: dict, video_id: str, config: SegmentConfig) -> dict:
    """The segment result from a :class:`Scan` (one pass or stitched windows), after the same
    truncation checks as a dense decode."""
    expected = probe["num_frames"]
    if not len(result.frames):
        raise ItemFailed(f"no frame could be decoded ({result.error or 'empty stream'})")
    covered = result.end
    if covered < config.min_decoded_fraction * expected:
        why = f": {result.error}" if result.error else ""
        raise ItemFailed(f"truncated or corrupt: decoded up to frame {covered} of {expected}{why}")
    num_frames = covered
    if result.sparse and covered < expected <= covered + MAX_TRAILING_SKIPPED:
        num_frames = expected  # the last few (non-reference) frames were skipped, not missing
    return _finish(video_id, probe["fps"], num_frames, result.frames, result.distances, result.transitions,
                   result.decoded, build_detector(config).name, config, result.signals)


def _finish(video_id: str, fps: float, num_frames: int, frames: np.ndarray, distances: np.ndarray,
            transitions: list[dict], decoded: int, detector: str, config: SegmentConfig,
            signals: dict | None = None) -> dict:
    """Shots, clips and DPSelect keyframes from transitions (with their boundary ``frame``) and the
    keyframe distance of each frame the detector saw (``frames``: their numbers, ascending).
    ``signals`` (``motion``, ``phash_full``, ``phash_inner``), aligned with ``frames``, give each clip
    its motion score and its keyframes' pHashes: from every frame of a dense decode, or from the
    coarse frames of a sparse or windowed scan (``coarse_signals``); absent, the clips carry neither."""
    shots = shots_from_boundaries([t["frame"] for t in transitions], num_frames, fps)
    transitions = [{k: t[k] for k in ("start_frame", "end_frame", "kind")} for t in transitions
                   if t["start_frame"] < num_frames]
    clips = make_clips(video_id, shots, num_frames, fps, config.clips)
    keyframes = []
    for clip in clips:
        a, b = clip["start_frame"], clip["end_frame"]
        lo, hi = np.searchsorted(frames, a), np.searchsorted(frames, b)
        chosen = [int(frames[lo + i]) for i in dpselect(distances[lo:hi], config.keyframes_per_clip)] or [a]
        clip["keyframes"] = chosen
        clip["keyframe_times"] = [round(i / fps, 6) for i in chosen]
        if signals:
            m = signals["motion"][lo + 1 : hi]  # the first frame's change is from the shot before
            clip["motion_score"] = round(float(m.mean()), 6) if len(m) else 0.0  # curation signal: 0 for a still picture
            found = np.searchsorted(frames, chosen)
            positions = [int(p) for p, f in zip(found, chosen) if p < len(frames) and frames[p] == f]
            # near-duplicate signal: the keyframes' perceptual hashes
            clip["phash"] = hex_hashes(signals["phash_full"], signals["phash_inner"], positions)
        keyframes += [{"frame": i, "time": round(i / fps, 6), "clip_id": clip["clip_id"]} for i in chosen]
    return {
        "num_frames": num_frames,
        "decoded_frames": decoded,
        "shots": shots,
        "transitions": transitions,
        "clips": clips,
        "keyframes": keyframes,
        "detector": detector,
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
        return self.store(item, segment_video(item["media"], item["probe"], item["video_id"], self.config, self.model))

    @staticmethod
    def store(item: dict, result: dict) -> dict:
        """Put a segment result into the item (shared with the pipeline's windowed variant)."""
        item["probe"]["num_frames"] = result["num_frames"]  # decoded count is the truth
        item["shots"] = result["shots"]
        item["transitions"] = result["transitions"]
        item["clips"] = result["clips"]
        item["detector"] = result["detector"]
        return item
