"""Remux into MP4: the same frames with the same timestamps, for the inputs where timing is
fragile (B-frames in Matroska, variable frame rate, an MP4 edit list), and a re-encode only for
codecs MP4 cannot carry."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.remux import to_mp4

W, H = 64, 48


def write_timed(path: str, encoder: str, frames: int = 60, fps: int = 25, bframes: int = 0,
                vfr: bool = False, start_offset: int = 0) -> None:
    """A generated video whose timing is the hard part: B-frames (pts != dts), VFR (uneven
    gaps in a 1/1000 time base), or a first pts > 0 (an MP4 then carries an edit list)."""
    out = av.open(path, "w")
    stream = out.add_stream(encoder, rate=fps)
    stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
    if encoder == "libx264":
        stream.options = {"bf": str(bframes), "g": "12"}
    time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
    stream.codec_context.time_base = time_base
    t = 0
    for i in range(frames):
        img = np.full((H, W, 3), (i * 4) % 255, np.uint8)
        img[:, (i * 3) % W] = 255
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.time_base = time_base
        if vfr:
            frame.pts = t
            t += 40 if i % 3 else 100  # 25 fps with a 100 ms gap every third frame
        else:
            frame.pts = i + start_offset
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def write_with_audio(path: str, audio_encoder: str, frames: int = 50, fps: int = 25) -> None:
    out = av.open(path, "w")
    video = out.add_stream("libx264", rate=fps)
    video.width, video.height, video.pix_fmt = W, H, "yuv420p"
    sound = out.add_stream(audio_encoder, rate=16000)
    samples = np.sin(np.arange(int(frames / fps * 16000)) * 2 * np.pi * 440 / 16000).astype(np.float32)
    fmt = sound.codec_context.codec.audio_formats[0].name
    resampler = av.AudioResampler(format=fmt, layout="mono", rate=16000)
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), i * 5 % 255, np.uint8), format="rgb24")
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode():
        out.mux(packet)
    for i in range(0, len(samples), 1152):
        piece = av.AudioFrame.from_ndarray(samples[None, i:i + 1152], format="flt", layout="mono")
        piece.sample_rate, piece.pts = 16000, i
        for converted in resampler.resample(piece):
            for packet in sound.encode(converted):
                out.mux(packet)
    for packet in sound.encode():
        out.mux(packet)
    out.close()


def decoded(data: bytes) -> tuple[list[Fraction], list[np.ndarray]]:
    """Presentation times (exact, in seconds) and pictures of every decoded frame."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        return [Fraction(f.pts) * stream.time_base for f in frames], [f.to_ndarray(format="rgb24") for f in frames]


CASES = {
    "bframes.mkv": dict(encoder="libx264", bframes=3),
    "vp9.webm": dict(encoder="libvpx-vp9"),
    "vfr.mkv": dict(encoder="libx264", vfr=True, bframes=2),
    "editlist.mp4": dict(encoder="libx264", start_offset=7, bframes=3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_stream_copy_keeps_every_frame_and_timestamp(tmp_path, name):
    path = str(tmp_path / name)
    write_timed(path, **CASES[name])
    source = open(path, "rb").read()
    media, info = to_mp4(source, name.rsplit(".", 1)[-1])
    assert info["remux"] == {"video": "copy", "audio": None}
    assert media[4:8] == b"ftyp" and media.index(b"moov") < media.index(b"mdat")  # faststart: index first
    src_times, src_pictures = decoded(source)
    out_times, out_pictures = decoded(media)
    assert len(out_times) == len(src_times) == 60
    assert out_times == src_times
    assert all(np.array_equal(a, b) for a, b in zip(src_pictures, out_pictures))  # packets untouched
    with av.open(io.BytesIO(media)) as c:
        assert c.format.name.startswith("mov,mp4") and c.streams.video[0].duration  # av readers need a duration
    if name == "vfr.mkv":
        gaps = {round(float(b - a), 3) for a, b in zip(out_times, out_times[1:])}
        assert gaps == {0.04, 0.1}
    if name == "editlist.mp4":
        assert out_times[0] == Fraction(7, 25)


def test_a_codec_mp4_cannot_carry_is_reencoded_frame_for_frame(tmp_path):
    path = str(tmp_path / "vp8.webm")
    write_timed(path, "libvpx", frames=30)
    source = open(path, "rb").read()
    media, info = to_mp4(source, "webm")
    assert info["remux"]["video"] == "reencode:libx264" and info["source_ext"] == "webm"
    src_times, src_pictures = decoded(source)
    out_times, out_pictures = decoded(media)
    assert out_times == src_times and len(out_times) == 30
    assert max(np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(src_pictures, out_pictures)) < 8


def test_audio_mp4_takes_is_copied_other_audio_reencoded(tmp_path):
    for encoder, expected in (("aac", "copy"), ("mp2", "reencode:aac")):
        path = str(tmp_path / f"with-{encoder}.mkv")
        write_with_audio(path, encoder)
        media, info = to_mp4(open(path, "rb").read(), "mkv")
        assert info["remux"] == {"video": "copy", "audio": expected}
        with av.open(io.BytesIO(media)) as c:
            assert c.streams.audio[0].codec_context.name == "aac"
            assert sum(1 for _ in c.decode(audio=0)) > 0
        assert decoded(media)[0] == decoded(open(path, "rb").read())[0]


def test_bytes_ffmpeg_cannot_read_fail_with_a_reason():
    with pytest.raises(ItemFailed, match="cannot put the mkv source into MP4"):
        to_mp4(b"\x1aE\xdf\xa3 not really matroska", "mkv")
