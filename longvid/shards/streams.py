"""Which video stream of a container is *the* video, and how it is meant to be shown.

Every place that decodes (probe, shot detection, caption frames, the training stream) picks the
stream here, so a small preview or cover-art track listed first is never taken for the video:
not an attached picture, not a track under a quarter of the largest picture (a preview, even
when its muxer marked it default), then the default disposition, then the largest picture. Rotation is the
display matrix ffmpeg reports on decoded frames, in degrees counter-clockwise.
"""

from __future__ import annotations

import numpy as np


def _flags(stream) -> tuple[bool, bool]:
    disposition = stream.disposition
    name = {getattr(d, "name", str(d)).lower() for d in type(disposition) if d in disposition} if disposition else set()
    return "attached_pic" in name, "default" in name


def main_video_stream(container):
    """The main video stream, or None when the container has no video."""
    candidates = list(container.streams.video)
    if not candidates:
        return None
    pictures = [s for s in candidates if not _flags(s)[0]] or candidates

    def area(stream) -> int:
        return int(stream.codec_context.width or 0) * int(stream.codec_context.height or 0)

    # A muxer marks its first track default, preview or not: a track under a quarter of the
    # largest picture is a preview, whatever its disposition says.
    largest = max(area(s) for s in pictures)
    full = [s for s in pictures if area(s) * 4 >= largest]
    return max(full, key=lambda s: (_flags(s)[1], area(s), -s.index))


def rotate_frame(array: np.ndarray, rotation: int) -> np.ndarray:
    """An H x W x C picture turned upright by the display ``rotation`` (degrees counter-clockwise)."""
    turns = (int(round(rotation / 90.0)) % 4) if rotation else 0
    return np.ascontiguousarray(np.rot90(array, k=turns)) if turns else array
