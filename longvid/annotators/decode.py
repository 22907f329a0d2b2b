"""Streamed decoding: one pass over a video yields small per-frame arrays, never the whole video.

Every stage that needs pixels (shot boundaries, keyframe features) shares this one decode. The
thumbnail is made by swscale in C from the decoded planes; the full frame never reaches numpy.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from typing import Iterator

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from .base import ItemFailed
from ..shards.streams import main_video_stream


@dataclass
class DecodeConfig:
    width: int = 48  # thumbnail width: TransNetV2's input size, and plenty for shot features
    height: int = 27  # thumbnail height (48x27 keeps 16:9)
    pix_fmt: str = "rgb24"  # TransNetV2 and the colour histograms need colour
    # swscale method of the thumbnail: auto = AREA (half the cost of bicubic at 640x360, same F1) for the
    # fast and contentdiff detectors, BICUBIC (ffmpeg's default, what TransNetV2 was trained on) otherwise
    interpolation: str = "auto"
    threads: int = 0  # decoder threads; 0 lets FFmpeg choose (frame threads on all cores)
    skip_loop_filter: bool = False  # skip H.264/HEVC deblocking: about a quarter faster decode, thumbnails barely change; off = exact frames
    # auto = NVDEC (PyAV HWAccel "cuda") when FFmpeg has it and an NVIDIA device node exists, else CPU;
    # none = always CPU; cuda = insist (a clear error where no device is usable). Frames are copied back
    # to system memory, so every consumer (swscale thumbnails, caption frames) is unchanged.
    hwaccel: str = "auto"


HWACCEL_CHOICES = ("auto", "none", "cuda")


def nvidia_device_present() -> bool:
    """Whether this machine exposes an NVIDIA GPU to the process (the driver's device node)."""
    return os.path.exists("/dev/nvidia0") or os.path.exists("/proc/driver/nvidia/gpus")


def resolve_hwaccel(setting: str, available: list[str] | None = None, device_present: bool | None = None) -> str | None:
    """The hardware device type to decode on (``"cuda"``) or ``None`` for CPU, from ``decode.hwaccel``.
    ``available`` / ``device_present`` default to what this machine has (given in tests)."""
    if setting not in HWACCEL_CHOICES:
        raise ValueError(f"decode.hwaccel must be one of {', '.join(HWACCEL_CHOICES)}, not {setting!r}")
    if setting == "none":
        return None
    if setting == "cuda":
        return "cuda"
    if available is None:
        from av.codec.hwaccel import hwdevices_available

        available = list(hwdevices_available())
    present = nvidia_device_present() if device_present is None else device_present
    return "cuda" if "cuda" in available and present else None


class DecodeStats:
    """Filled in while decoding: how many frames came out and whether decoding broke off."""

    def __init__(self):
        self.frames = 0
        self.error: str | None = None


def open_video(source: bytes | str, hwaccel: str = "none"):
    """``av.open`` on a path or bytes, with the error turned into a reason a person understands.
    ``hwaccel``: a ``decode.hwaccel`` setting (see :func:`resolve_hwaccel`)."""
    src = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    device = resolve_hwaccel(hwaccel)
    try:
        if device is None:
            return av.open(src, mode="r")
        from av.codec.hwaccel import HWAccel

        return av.open(src, mode="r", hwaccel=HWAccel(device_type=device, allow_software_fallback=True))
    except av.error.FFmpegError as exc:
        if device is not None:
            raise ItemFailed(f"cannot open a {device} decoder ({exc}); set decode.hwaccel to auto or none "
                             "on a machine without a usable GPU") from exc
        raise ItemFailed(f"cannot open media for decoding: {exc}") from exc


def iter_thumbnails(
    source: bytes | str,
    width: int = 48,
    height: int = 27,
    pix_fmt: str = "rgb24",
    stats: DecodeStats | None = None,
    threads: int = 0,
    config: DecodeConfig | None = None,
) -> Iterator[np.ndarray]:
    """Yield each frame scaled to ``width``×``height`` (``HxWx3`` uint8 for rgb24), in order.

    A decode error ends the stream and is reported in ``stats.error`` (the caller decides
    whether what was decoded is enough). ``config``, when given, overrides the other arguments.
    """
    config = config or DecodeConfig(width=width, height=height, pix_fmt=pix_fmt, threads=threads)
    stats = stats if stats is not None else DecodeStats()
    # One reformatter for the whole stream: it keeps its SwsContext, whereas frame.to_ndarray(width=...)
    # builds a new scaler for every frame and costs more than the decode itself.
    scaler = VideoReformatter()
    interpolation = "BICUBIC" if config.interpolation == "auto" else config.interpolation
    with open_video(source, config.hwaccel) as container:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        if config.threads:
            stream.codec_context.thread_count = config.threads
        if config.skip_loop_filter:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        try:
            for frame in container.decode(stream):
                small = scaler.reformat(frame, config.width, config.height, config.pix_fmt,
                                        interpolation=interpolation, threads=1)  # swscale's threads: 2x the cost
                yield small.to_ndarray()
                stats.frames += 1
        except av.error.FFmpegError as exc:
            stats.error = str(exc)


def decode_only(source: bytes | str, threads: int = 0, hwaccel: str = "none") -> int:
    """Decode every frame and keep nothing: the physical floor the benchmark compares against."""
    count = 0
    with open_video(source, hwaccel) as container:
        stream = main_video_stream(container)
        stream.thread_type = "AUTO"
        if threads:
            stream.codec_context.thread_count = threads
        for _ in container.decode(stream):
            count += 1
    return count
