"""Generated test videos with known ground truth (cuts and their frame numbers).

Used by the tests, the demo and the benchmarks. Each scene is a distinct textured background
with a moving square, so consecutive frames inside a scene differ a little and frames across a
cut differ a lot. Never used on real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import numpy as np

# codec name → (container extension, PyAV pixel format)
CODECS = {
    "h264": ("mp4", "yuv420p"),
    "hevc": ("mkv", "yuv420p"),
    "vp9": ("webm", "yuv420p"),
    "mpeg4": ("avi", "yuv420p"),
}
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "mpeg4": "mpeg4"}


@dataclass
class SyntheticVideo:
    path: str
    fps: int
    num_frames: int
    cuts: list[int] = field(default_factory=list)  # first frame of each new shot

    @property
    def duration(self) -> float:
        return self.num_frames / self.fps


def scene_frame(scene: int, t: int, width: int, height: int) -> np.ndarray:
    """Frame ``t`` of scene ``scene``: a per-scene gradient and colour, and a moving square."""
    rng = np.random.default_rng(scene * 7919 + 17)
    base = rng.integers(30, 225, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    angle = rng.uniform(0, np.pi)
    grad = (np.cos(angle) * xx / width + np.sin(angle) * yy / height) * 80.0
    img = np.clip(base[None, None, :] + grad[..., None] * (rng.uniform(-1, 1, size=3)), 0, 255)
    size = max(4, height // 5)
    x = int((t * 3 + scene * 11) % max(1, width - size))
    y = int((t * 2 + scene * 5) % max(1, height - size))
    img[y : y + size, x : x + size] = 255 - base
    return img.astype(np.uint8)


def write_video(
    path: str,
    shot_lengths: list[int],
    fps: int = 25,
    width: int = 160,
    height: int = 96,
    codec: str = "h264",
    gop: int | None = None,
    with_audio: bool = False,
) -> SyntheticVideo:
    """Encode a video made of shots of the given lengths (in frames); returns its truth."""
    encoder = ENCODERS[codec]
    container = av.open(path, mode="w")
    stream = container.add_stream(encoder, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = CODECS[codec][1]
    if gop is not None:
        stream.codec_context.gop_size = gop
    if codec == "hevc":
        stream.options = {"x265-params": "log-level=error"}
    audio = None
    if with_audio:
        audio = container.add_stream("aac", rate=16000)
    cuts, t_global = [], 0
    for scene, length in enumerate(shot_lengths):
        if scene > 0:
            cuts.append(t_global)
        for t in range(length):
            frame = av.VideoFrame.from_ndarray(scene_frame(scene, t, width, height), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            t_global += 1
    for packet in stream.encode():
        container.mux(packet)
    if audio is not None:
        _write_tone(container, audio, seconds=t_global / fps)
    container.close()
    return SyntheticVideo(path=path, fps=fps, num_frames=t_global, cuts=cuts)


def _write_tone(container, audio_stream, seconds: float, rate: int = 16000) -> None:
    samples = np.sin(np.arange(int(seconds * rate)) * 2 * np.pi * 440 / rate).astype(np.float32)
    chunk = 1024
    for i in range(0, len(samples), chunk):
        part = samples[i : i + chunk]
        frame = av.AudioFrame.from_ndarray(part[None, :], format="fltp", layout="mono")
        frame.sample_rate = rate
        frame.pts = i
        for packet in audio_stream.encode(frame):
            container.mux(packet)
    for packet in audio_stream.encode():
        container.mux(packet)


def write_audio_only(path: str, seconds: float = 2.0) -> None:
    container = av.open(path, mode="w")
    audio = container.add_stream("aac", rate=16000)
    _write_tone(container, audio, seconds)
    container.close()


def write_image(path: str, width: int = 64, height: int = 48) -> None:
    """A single PNG picture (to be renamed .mp4 by tests of bad input)."""
    container = av.open(path, mode="w", format="image2")
    stream = container.add_stream("png", rate=1)
    stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
    frame = av.VideoFrame.from_ndarray(scene_frame(0, 0, width, height), format="rgb24")
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
