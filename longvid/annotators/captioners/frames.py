"""CPU preparation for captioning: which frames of each clip to show the model, and one decode
pass of the video that returns exactly those frames, resized to the captioner's pixel budget.

Only the chosen frames are converted and resized (swscale, in C); the pass stops after the last
one. This runs in the CPU stage so the model's workers never wait on decoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np

from ...shards.sampling import segment_middles
from ..base import ItemFailed
from ..decode import open_video
from ...shards.streams import main_video_stream, rotate_frame


@dataclass
class ClipFrames:
    """One clip ready for a captioner: ``frames`` is ``T×H×W×3`` uint8 RGB, in time order."""

    key: str  # video key
    clip_id: str
    start: float  # seconds
    end: float
    frames: np.ndarray
    frame_times: list[float]


def clip_frame_indices(clip: dict, frame_source: str, max_frames: int) -> list[int]:
    """Absolute frame indices to caption ``clip`` from: its stored plan for ``frame_source``
    (a training stage name such as ``stage2``), or ``uniform`` segment middles; at most
    ``max_frames``, spread evenly."""
    if max_frames < 1:
        raise ValueError("max_frames must be >= 1")
    a, b = int(clip["start_frame"]), int(clip["end_frame"])
    planned: list[int] = []
    if frame_source != "uniform":
        stages = clip.get("plan", {}).get("stages", {})
        if frame_source not in stages:
            raise ValueError(f"clip {clip.get('clip_id')} has no '{frame_source}' plan; stages: {sorted(stages)}")
        planned = list(stages[frame_source]["frames"])
    if not planned:
        planned = [a + i for i in segment_middles(max(1, b - a), max_frames)]
    if len(planned) > max_frames:
        planned = [planned[i] for i in segment_middles(len(planned), max_frames)]
    return planned


def fit_size(width: int, height: int, longest_edge: int) -> tuple[int, int]:
    """Width and height scaled so the longer side is ``longest_edge`` (never enlarged), even sizes."""
    scale = min(1.0, longest_edge / max(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


def iter_decoded(media: bytes, wanted: set[int], longest_edge: int, hwaccel: str = "none") -> Iterator[tuple[int, np.ndarray]]:
    """``(index, frame)`` for each frame in ``wanted`` (decode-order indices), resized; one
    sequential pass that stops after the last wanted frame. Raises :class:`ItemFailed` when the
    media cannot be opened, breaks, or ends before a wanted frame. ``hwaccel``: ``decode.hwaccel``."""
    if not wanted:
        return
    last = max(wanted)
    try:
        container = open_video(media, hwaccel)
    except ItemFailed as exc:
        raise ItemFailed(f"caption frames: {exc.reason}") from exc
    with container:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        size = fit_size(stream.codec_context.width, stream.codec_context.height, longest_edge)
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    # swscale resizes and converts in C; frames nobody asked for are never converted
                    picture = frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
                    yield index, rotate_frame(picture, frame.rotation)  # upright, as a person sees it
                if index >= last:
                    return
        except av.error.FFmpegError as exc:
            raise ItemFailed(f"decode error after frame {index + 1} while taking caption frames: {exc}") from exc
    raise ItemFailed(f"video ended before caption frame {last} (decoded {index + 1} frames)")


def decode_frames(media: bytes, wanted: set[int], longest_edge: int, hwaccel: str = "none") -> dict[int, np.ndarray]:
    """All frames ``wanted`` at once (see :func:`iter_decoded`)."""
    return dict(iter_decoded(media, wanted, longest_edge, hwaccel))


def iter_clip_frames(key: str, media: bytes, clips: list[dict], fps: float, frame_source: str = "stage2",
                     max_frames: int = 8, longest_edge: int = 384, hwaccel: str = "none") -> Iterator[ClipFrames]:
    """Each clip of one video with its frames, yielded as soon as its last frame is decoded, so a
    long video never holds more than about one clip's frames. A decode failure raises
    :class:`ItemFailed` after the clips finished before it; the caller fails the rest."""
    # yields ClipFrames in order of each clip's last frame (time order for non-overlapping clips)
    per_clip = [clip_frame_indices(c, frame_source, max_frames) for c in clips]
    order = sorted(range(len(clips)), key=lambda i: max(per_clip[i]))
    last_use = {i: pos for pos, ci in enumerate(order) for i in per_clip[ci]}  # frame -> last clip needing it
    held: dict[int, np.ndarray] = {}
    nxt = 0
    for index, frame in iter_decoded(media, set(last_use), longest_edge, hwaccel):
        held[index] = frame
        while nxt < len(order) and max(per_clip[order[nxt]]) <= index:
            ci = order[nxt]
            clip, indices = clips[ci], per_clip[ci]
            stack = np.stack([held[i] for i in indices])
            times = [round(i / fps, 6) for i in indices]
            yield ClipFrames(key, clip["clip_id"], float(clip["start"]), float(clip["end"]), stack, times)
            for i in set(indices):
                if last_use[i] == nxt:
                    del held[i]
            nxt += 1


def prepare_clips(key: str, media: bytes, clips: list[dict], fps: float, frame_source: str = "stage2",
                  max_frames: int = 8, longest_edge: int = 384, hwaccel: str = "none") -> list[ClipFrames]:
    """Every clip of one video with its frames, from a single decode (all in memory)."""
    return list(iter_clip_frames(key, media, clips, fps, frame_source, max_frames, longest_edge, hwaccel))
