"""The speech layer kind on generated audio: a video with a 44.1 kHz stereo chirp track (PyAV),
decoded and resampled to 16 kHz mono, then transcribed by a tiny random Whisper built on the spot
(junk text: assert structure and timestamps, never words)."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from longvid.annotators.base import ItemFailed
from longvid.annotators.speech import SAMPLE_RATE, SpeechConfig, SpeechTranscriber, decode_audio, speech_rows
from longvid.annotators.tiny_models import build_tiny_whisper
from longvid.synthetic import write_video

SECONDS = 40.0  # more than one 30-s Whisper window


def write_chirp_video(path: str, seconds: float, rate: int = 44100) -> None:
    """Small frames plus a stereo chirp (200 Hz → 2 kHz) encoded as AAC at ``rate``."""
    container = av.open(path, mode="w")
    video = container.add_stream("libx264", rate=5)
    video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
    audio = container.add_stream("aac", rate=rate, layout="stereo")
    for i in range(int(seconds * 5)):
        frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i % 255, np.uint8), format="rgb24")
        for packet in video.encode(frame):
            container.mux(packet)
    for packet in video.encode():
        container.mux(packet)
    t = np.arange(int(seconds * rate)) / rate
    chirp = (0.3 * np.sin(2 * np.pi * (200 * t + (1800 / (2 * seconds)) * t * t))).astype(np.float32)
    for i in range(0, len(chirp), 1024):
        part = chirp[i : i + 1024]
        frame = av.AudioFrame.from_ndarray(np.stack([part, part]), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = rate, i
        for packet in audio.encode(frame):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)
    container.close()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    path = tmp_path_factory.mktemp("speech") / "narrated.mp4"
    write_chirp_video(str(path), SECONDS)
    return path.read_bytes()


@pytest.fixture(scope="module")
def transcriber(tmp_path_factory):
    path = build_tiny_whisper(str(tmp_path_factory.mktemp("whisper") / "whisper"))
    t = SpeechTranscriber(SpeechConfig(model=path, device="cpu", max_new_tokens=24, batch_size=2))
    t.setup()
    return t


def test_audio_is_decoded_to_16khz_mono(media):
    audio = decode_audio(media)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) / SAMPLE_RATE - SECONDS) < 0.2  # 44.1 kHz stereo in, 16 kHz mono out, same length
    assert 0.15 < float(np.abs(audio).max()) < 0.5  # the chirp, not silence, not clipped


def test_media_without_audio_or_broken_fails_with_a_reason(tmp_path, media):
    silent = tmp_path / "silent.mp4"
    write_video(str(silent), [10], fps=10, width=64, height=48)
    with pytest.raises(ItemFailed, match="no audio track"):
        decode_audio(silent.read_bytes())
    with pytest.raises(ItemFailed, match="cannot open media|audio decode failed"):
        decode_audio(media[:300])


def test_transcript_segments_are_timed_inside_the_video(transcriber, media):
    segments = transcriber.transcribe(decode_audio(media), SECONDS)
    assert segments, "the random Whisper stamps some segments"
    for s in segments:
        assert 0.0 <= s["start"] < s["end"] <= SECONDS and isinstance(s["text"], str) and s["text"]
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    producer = transcriber.producer()
    assert producer["kind"] == "speech" and producer["engine"]["name"] == "transformers"
    rows = speech_rows("0123456789abcdef", segments, producer)
    assert len(rows) == len(segments) and all(r["clip_id"] is None and r["value_type"] == "json" for r in rows)
    assert {json.loads(r["value"])["task"] for r in rows} == {"speech"}
    assert [(r["start"], r["end"]) for r in rows] == [(s["start"], s["end"]) for s in segments]
