"""Clips from shots: short shots merged into a neighbour, long spans cut into equal windows no
longer than the maximum (and, given min <= max / 2, no shorter than the minimum).

Pure arithmetic on frame numbers, one pass over the shots (memory grows with shots, never frames);
the shot boundaries that fall inside each clip are kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..shards.schema import clip_id_for


@dataclass
class ClipConfig:
    min_seconds: float = 2.0  # shorter shots are merged into a neighbour (a 1 s shot is no training clip)
    max_seconds: float = 60.0  # longer spans are split into equal windows no longer than this (<= 1 min keeps a clip captionable)

    def validate(self) -> None:
        if not 0 < self.min_seconds:
            raise ValueError("clip min_seconds must be > 0")
        if self.min_seconds * 2 > self.max_seconds:
            raise ValueError("clip min_seconds must be <= max_seconds / 2, or a split long span could "
                             "leave a piece shorter than the minimum")


def clip_spans(shots: list[dict], num_frames: int, fps: float, config: ClipConfig) -> list[tuple[int, int]]:
    """Frame spans ``[start, end)`` of the clips, covering the video in order."""
    config.validate()
    min_frames = max(1, int(round(config.min_seconds * fps)))
    max_frames = max(min_frames, int(math.floor(config.max_seconds * fps)))
    spans: list[list[int]] = []
    for shot in shots:
        start, end = shot["start_frame"], shot["end_frame"]
        if spans and spans[-1][1] - spans[-1][0] < min_frames:
            spans[-1][1] = end  # the previous span is too short: extend it over this shot
        else:
            spans.append([start, end])
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_frames:
        last = spans.pop()
        spans[-1][1] = last[1]
    out: list[tuple[int, int]] = []
    for start, end in spans:
        length = end - start
        pieces = max(1, math.ceil(length / max_frames))
        for i in range(pieces):
            a = start + (length * i) // pieces
            b = start + (length * (i + 1)) // pieces
            out.append((a, b))
    return out


def make_clips(video_id: str, shots: list[dict], num_frames: int, fps: float, config: ClipConfig) -> list[dict]:
    boundaries = [s["start_frame"] for s in shots[1:]]
    clips = []
    for a, b in clip_spans(shots, num_frames, fps, config):
        start, end = round(a / fps, 6), round(b / fps, 6)
        clips.append(
            {
                "clip_id": clip_id_for(video_id, start, end),
                "start_frame": a,
                "end_frame": b,
                "start": start,
                "end": end,
                "shot_boundaries": [x for x in boundaries if a < x < b],
            }
        )
    return clips
