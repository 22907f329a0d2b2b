"""Probe a video with PyAV: container, duration, fps, frame count, size, codec, audio.

Reads headers (and, only when the container stores no frame count, the packet list); never
decodes pictures. Inputs that are not videos fail with a reason that names what they are.
"""

from __future__ import annotations

import io
from fractions import Fraction

import av

from .base import ItemFailed, Resources, Stage

# ffmpeg demuxers that hold one still picture, not a video
_IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "gif_pipe", "webp_pipe", "tiff_pipe", "image2pipe"}
_IMAGE_CODECS = {"png", "mjpeg", "bmp", "webp", "tiff", "gif"}
# container → file extension for the media member
_CONTAINER_EXT = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "mkv", "avi": "avi", "mpegts": "ts", "flv": "flv"}


def _container_ext(container: av.container.InputContainer, codec: str) -> str:
    name = container.format.name
    if name == "matroska,webm" and codec in ("vp8", "vp9", "av1"):
        return "webm"
    return _CONTAINER_EXT.get(name, "mp4")


def probe_container(container: av.container.InputContainer, size_bytes: int) -> dict:
    """The probe record of an opened container (raises ItemFailed for non-videos)."""
    fmt = container.format.name
    videos = list(container.streams.video)
    audios = list(container.streams.audio)
    if not videos:
        if audios:
            raise ItemFailed(f"audio-only file: no video stream (audio codec {audios[0].codec_context.name})")
        raise ItemFailed(f"no video stream in {fmt} container")
    stream = videos[0]
    codec = stream.codec_context.name
    if fmt in _IMAGE_FORMATS or (codec in _IMAGE_CODECS and fmt not in ("avi", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2")):
        raise ItemFailed(f"a still image ({codec}), not a video")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise ItemFailed("no frame rate in the video stream")
    fps = float(rate)
    num_frames = int(stream.frames or 0)
    if num_frames <= 0:
        num_frames = _count_packets(container, stream)
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = num_frames / fps
    if num_frames <= 0:
        raise ItemFailed("the video stream holds no frames")
    if num_frames <= 1:
        raise ItemFailed(f"a single frame ({codec}), not a video")
    return {
        "container": fmt,
        "media_ext": _container_ext(container, codec),
        "codec": codec,
        "width": int(stream.codec_context.width or 0),
        "height": int(stream.codec_context.height or 0),
        "fps": fps,
        "fps_fraction": str(Fraction(rate)),
        "num_frames": num_frames,
        "duration": round(duration, 6),
        "has_audio": bool(audios),
        "audio_codec": audios[0].codec_context.name if audios else None,
        "bytes": size_bytes,
    }


def _count_packets(container, stream) -> int:
    """Frame count by demuxing (no decoding) for containers that do not store it (mkv, webm)."""
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
    container.seek(0)
    return count


def open_media(source) -> av.container.InputContainer:
    """av.open with errors turned into reasons a person understands."""
    try:
        return av.open(source, mode="r")
    except av.error.InvalidDataError as exc:
        raise ItemFailed("not a readable video: ffmpeg cannot parse the container (invalid data; not a video, or truncated)") from exc
    except av.error.FFmpegError as exc:
        raise ItemFailed(f"cannot open media: {exc}") from exc


def probe_bytes(data: bytes) -> dict:
    if not data:
        raise ItemFailed("empty file (0 bytes)")
    with open_media(io.BytesIO(data)) as container:
        try:
            return probe_container(container, len(data))
        except av.error.FFmpegError as exc:
            raise ItemFailed(f"corrupt or truncated video: {exc}") from exc


def probe_file(path: str) -> dict:
    with open(path, "rb") as f:
        return probe_bytes(f.read())


class Probe(Stage):
    name = "probe"
    version = "1"
    resources = Resources(num_cpus=0.5)

    def process(self, item: dict) -> dict:
        item["probe"] = probe_bytes(item["media"])
        return item
