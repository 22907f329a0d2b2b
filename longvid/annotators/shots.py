"""Shot boundaries from streamed thumbnails: the detector protocol, the registry, and shots.

A detector sees each 48x27 RGB frame once (``update``) and returns the first frame of every new
shot (``finish``); after ``finish`` its ``transitions`` list each boundary's frame span and kind
(``cut``: no frames of its own; ``dissolve``/``fade``/``gradual``: the frames in between).
Detectors never decode: they get the frames the segment stage decoded once for everyone.
"""

from __future__ import annotations

import importlib
from collections import deque
from dataclasses import dataclass

import numpy as np


class ShotDetector:
    """Base of every detector: ``update(thumb)`` per frame, then ``finish() -> boundaries``."""

    name = "detector"

    def __init__(self):
        self.transitions: list[dict] = []  # filled by finish(): {"start_frame", "end_frame", "kind"}

    def update(self, thumb: np.ndarray) -> None:
        raise NotImplementedError

    def finish(self) -> list[int]:
        raise NotImplementedError


@dataclass
class ContentDiffConfig:
    threshold: float = 0.10  # mean |Δ| of consecutive 48x27 frames (0..1) that is always a cut candidate
    ratio: float = 4.0  # ... and it must exceed this multiple of the recent median difference
    window: int = 25  # frames in the recent-median window (≈1 s at 25 fps)
    min_shot_frames: int = 8  # no two boundaries closer than this (flash and jitter guard)


class ContentDiffDetector(ShotDetector):
    """The first, simplest detector (kept as a baseline): a frame difference that spikes above the
    recent median. Hard cuts only; fires on flashes and misses dissolves."""

    name = "contentdiff"

    def __init__(self, config: ContentDiffConfig | None = None):
        super().__init__()
        self.config = config or ContentDiffConfig()
        self._prev: np.ndarray | None = None
        self._recent: deque[float] = deque(maxlen=self.config.window)
        self._index = 0
        self.boundaries: list[int] = []

    def update(self, thumb: np.ndarray) -> None:
        frame = thumb.astype(np.float32) / 255.0
        if self._prev is not None:
            diff = float(np.abs(frame - self._prev).mean())
            baseline = float(np.median(self._recent)) if self._recent else 0.0
            last = self.boundaries[-1] if self.boundaries else 0
            if (
                diff > self.config.threshold
                and diff > self.config.ratio * baseline
                and self._index - last >= self.config.min_shot_frames
            ):
                self.boundaries.append(self._index)
            self._recent.append(diff)
        self._prev = frame
        self._index += 1

    def finish(self) -> list[int]:
        self.transitions = cut_transitions(self.boundaries)
        return list(self.boundaries)


# name → "module:Class" (imported on first use, so torch loads only for the detectors that need it)
DETECTORS = {
    "fast": "longvid.annotators.fastcut:FastCutDetector",
    "sparse": "longvid.annotators.sparse:SparseCutDetector",  # fast on reference frames; the segment stage decodes for it
    "contentdiff": "longvid.annotators.shots:ContentDiffDetector",
    "transnetv2": "longvid.annotators.transnet:TransNetV2Detector",
    "hybrid": "longvid.annotators.transnet:HybridDetector",
}


def detector_class(name: str):
    try:
        target = DETECTORS[name]
    except KeyError:
        raise ValueError(f"unknown shot detector {name!r}; known: {sorted(DETECTORS)}") from None
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def make_detector(name: str, **kwargs) -> ShotDetector:
    """A fresh detector by registry name; ``kwargs`` go to its constructor (e.g. ``config=``)."""
    return detector_class(name)(**kwargs)


def cut_transitions(boundaries: list[int]) -> list[dict]:
    return [{"start_frame": b, "end_frame": b, "kind": "cut"} for b in boundaries]


def shots_from_boundaries(boundaries: list[int], num_frames: int, fps: float) -> list[dict]:
    """Shots covering ``[0, num_frames)`` in order; ``end_frame`` is exclusive."""
    edges = [0] + sorted(b for b in set(boundaries) if 0 < b < num_frames) + [num_frames]
    return [
        {"start_frame": a, "end_frame": b, "start": round(a / fps, 6), "end": round(b / fps, 6)}
        for a, b in zip(edges[:-1], edges[1:])
    ]
