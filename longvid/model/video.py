"""Reading a video file for ``longvid ask``: its frame count and rate, and the frames of a plan
decoded with PyAV (seeking across long gaps instead of decoding everything).

Reads local files only; never writes and never keeps more than the planned frames.
"""

from __future__ import annotations

import av
import numpy as np
from ..shards.streams import main_video_stream
import torch


class VideoReadError(ValueError):
    pass


def probe(path: str) -> tuple[int, float]:
    """(frame count, frames per second); counts packets when the container does not say."""
    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(f"{path}: no video stream")
            stream = main_video_stream(container)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            frames = stream.frames
            if not frames:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as exc:
        raise VideoReadError(f"{path}: cannot read: {exc}") from exc
    if fps <= 0 or frames <= 0:
        raise VideoReadError(f"{path}: no frames or no frame rate")
    return frames, fps


def decode_frames(path: str, indices: list[int], size: int, fps: float, seek_gap: int = 250) -> torch.Tensor:
    """Frames at ``indices`` (sorted, repeats allowed) as ``uint8 [N, size, size, 3]``.

    A frame's index comes from its timestamp; a gap longer than ``seek_gap`` frames is crossed by
    seeking to the keyframe before the target rather than decoding through it.
    """
    if not indices:
        raise VideoReadError("no frames planned")
    out: list[np.ndarray | None] = [None] * len(indices)
    with av.open(path) as container:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        base, start = stream.time_base, stream.start_time or 0
        k, last = 0, -1
        while k < len(indices):
            if indices[k] - last > seek_gap:
                container.seek(start + int(indices[k] / fps / base), stream=stream, backward=True)
            stopped_early = False
            for frame in container.decode(stream):
                last = round(float((frame.pts - start) * base) * fps) if frame.pts is not None else last + 1
                if indices[k] > last:
                    continue
                picture = frame.to_ndarray(width=size, height=size, format="rgb24")
                while k < len(indices) and indices[k] <= last:
                    out[k], k = picture, k + 1
                if k == len(indices):
                    break
                if indices[k] - last > seek_gap:
                    stopped_early = True
                    break
            if not stopped_early:
                break  # end of stream
    filled = [x for x in out if x is not None]
    if not filled:
        raise VideoReadError(f"{path}: none of the planned frames could be decoded")
    out = [x if x is not None else filled[-1] for x in out]  # past the end: repeat the last frame
    return torch.from_numpy(np.stack(out))
