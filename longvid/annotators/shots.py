"""Shot boundaries from streamed thumbnails.

A detector sees each frame once (``update``) and returns the first frame of every new shot
(``finish``). This file holds the simple fast detector; others register in ``DETECTORS``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class ContentDiffConfig:
    threshold: float = 0.10  # mean |Δ| of consecutive 48x27 frames (0..1) that is always a cut candidate
    ratio: float = 4.0  # ... and it must exceed this multiple of the recent median difference
    window: int = 25  # frames in the recent-median window (≈1 s at 25 fps)
    min_shot_frames: int = 8  # no two boundaries closer than this (flash and jitter guard)


class ContentDiffDetector:
    """Hard cuts: a frame whose difference to the previous one spikes above its neighbourhood."""

    name = "contentdiff"

    def __init__(self, config: ContentDiffConfig | None = None):
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
        return list(self.boundaries)


DETECTORS = {"contentdiff": ContentDiffDetector}


def make_detector(name: str):
    try:
        return DETECTORS[name]()
    except KeyError:
        raise ValueError(f"unknown shot detector {name!r}; known: {sorted(DETECTORS)}") from None


def shots_from_boundaries(boundaries: list[int], num_frames: int, fps: float) -> list[dict]:
    """Shots covering ``[0, num_frames)`` in order; ``end_frame`` is exclusive."""
    edges = [0] + sorted(b for b in set(boundaries) if 0 < b < num_frames) + [num_frames]
    return [
        {"start_frame": a, "end_frame": b, "start": round(a / fps, 6), "end": round(b / fps, 6)}
        for a, b in zip(edges[:-1], edges[1:])
    ]
