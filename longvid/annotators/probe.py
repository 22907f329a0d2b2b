"""Probe a video with PyAV: container, duration, fps, frame count, size, codec, audio.

Reads headers, then the chosen stream's packets (demux only): duration and frame count come
from the stream's own timestamps, and a header that disagrees is overruled with a note. Decodes
one frame, for its display rotation. Inputs that are not videos fail with a reason that names what they are.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av

from ..shards.streams import main_video_stream
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
    audios = list(container.streams.audio)
    stream = main_video_stream(container)
    if stream is None:
        if audios:
            raise ItemFailed(f"audio-only file: no video stream (audio codec {audios[0].codec_context.name})")
        raise ItemFailed(f"no video stream in {fmt} container")
    codec = stream.codec_context.name
    if fmt in _IMAGE_FORMATS or (codec in _IMAGE_CODECS and fmt not in ("avi", "matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2")):
        raise ItemFailed(f"a still image ({codec}), not a video")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise ItemFailed("no frame rate in the video stream")
    fps = float(rate)
    span = _packet_span(container, stream, fps)
    num_frames = span.packets
    if num_frames <= 0:
        raise ItemFailed("the video stream holds no frames")
    if num_frames <= 1:
        raise ItemFailed(f"a single frame ({codec}), not a video")
    listed = int(stream.frames or 0)
    if listed > num_frames + 1:  # the sample table lists frames the file no longer holds
        raise ItemFailed(f"truncated: the index lists {listed} frames, the file holds {num_frames} (a partial copy?)")
    duration, notes = _duration(container, stream, span)
    rotation = _rotation(container, stream)
    width, height = int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    if len(container.streams.video) > 1:
        notes.append(f"stream_chosen: video stream {stream.index} ({width}x{height}) of "
                     f"{len(container.streams.video)}; the others are previews or alternatives")
    return {
        "container": fmt,
        "media_ext": _container_ext(container, codec),
        "codec": codec,
        "stream_index": stream.index,
        "width": width,
        "height": height,
        "rotation": rotation,  # degrees counter-clockwise to show it upright; frames are produced turned
        "fps": fps,
        "fps_fraction": str(Fraction(rate)),
        "num_frames": num_frames,
        "duration": round(duration, 6),
        "start_time": round(span.start_s, 6),
        "has_audio": bool(audios),
        "audio_codec": audios[0].codec_context.name if audios else None,
        "bytes": size_bytes,
        "notes": notes,  # where a header was overruled by the stream's own timestamps, and why
    }


@dataclass
class _Span:
    packets: int  # packets carrying data: one per frame
    start_s: float  # first timestamp, seconds
    end_s: float  # last timestamp plus its duration, seconds


def _packet_span(container, stream, fps: float) -> _Span:
    """Count the stream's packets and take its first and last timestamps (demux only, no decode)."""
    count, first, last_end = 0, None, None
    tb = stream.time_base
    for packet in container.demux(stream):
        if not packet.size:
            continue
        count += 1
        if packet.pts is None or tb is None:
            continue
        start = float(packet.pts * tb)
        end = start + (float(packet.duration * tb) if packet.duration else 1.0 / fps)
        first = start if first is None else min(first, start)
        last_end = end if last_end is None else max(last_end, end)
    container.seek(0)
    if first is None:
        return _Span(count, 0.0, count / fps)
    return _Span(count, first, last_end)


def _duration(container, stream, span: _Span) -> tuple[float, list[str]]:
    """Seconds the frames span by their own timestamps; a header that disagrees is overruled."""
    measured = span.end_s - span.start_s
    if measured <= 0:
        measured = span.packets / float(stream.average_rate or stream.guessed_rate or 1)
    if stream.duration is not None and stream.time_base is not None:
        header = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        header = container.duration / av.time_base
    else:
        header = None
    notes = []
    if span.start_s > 1.0:
        notes.append(f"start_offset: timestamps start at {span.start_s:.3f} s; the duration counts from there")
    if header is not None and abs(header - measured) > max(0.5, 0.05 * measured):
        notes.append(f"header_overruled: the header says {header:.3f} s, the frames span {measured:.3f} s")
    return measured, notes


def _rotation(container, stream) -> int:
    """Display rotation in degrees (the display matrix of the first decoded frame), 0 if none."""
    try:
        rotation = 0
        for frame in container.decode(stream):
            rotation = int(round(getattr(frame, "rotation", 0) or 0))
            break
    except av.error.FFmpegError:
        rotation = 0  # undecodable frames are the segment stage's to report
    container.seek(0)
    return rotation % 360


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
    resources = Resources(num_cpus=0.25)  # a demux of the bytes in memory; fetch's figure, so Ray Data fuses them

    def process(self, item: dict) -> dict:
        item["probe"] = probe_bytes(item["media"])
        return item
